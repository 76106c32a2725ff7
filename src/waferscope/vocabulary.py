"""The parameter vocabulary every registered model shares (issue 30, item 3).

A concept that several models have is spelled one way everywhere, so ``--set input_size=32`` means
the same thing to a classifier and to a detector. docs/contributing.md has the table for humans;
tests/test_conformance.py checks every registry entry against it.

Old spellings are still accepted for one release: a class lists its own in ``renamed_params``
(old → new name; see :mod:`waferscope.base`), which translates constructor and ``set_params``
arguments with a FutureWarning and rewrites runs saved before the rename, silently, when they load.
"""

from __future__ import annotations

# name → what it means, in every model that takes it
VOCABULARY: dict[str, str] = {
    "input_size": "side in pixels of the square network / feature input each map is resized to",
    "epochs": "passes over the training data",
    "batch_size": "samples per training step (models that train in steps: those with `epochs`)",
    "predict_batch_size": "samples per forward pass when scoring or predicting (and when a frozen "
                          "network extracts features in fit); changes speed and memory, not results",
    "seed": "the one seed every random draw of fit derives from",
    "progress": "show progress bars on stderr",
    "val_fraction": "share of the training data held out for early stopping / validation",
    "teacher": "a classifier to distil from (a run directory or a classifier spec), never a network name",
    "backbone": "the name of a registered backbone network (frozen feature extractor or teacher network)",
    "distil_alpha": "weight of the distillation term against the label term",
    "distil_temperature": "softmax temperature of the distillation term",
}

# Retired spellings (old → vocabulary name) no registered model may take as a constructor parameter
# any more. alpha/temperature are retired only as distillation terms (a model with a `teacher`):
# elsewhere they may name something else (reconpatch's similarity mix `alpha`).
RETIRED: dict[str, str] = {
    "size": "input_size",
    "verbose": "progress",
    "train_batch_size": "batch_size",
    "validation_fraction": "val_fraction",
}
RETIRED_IN_DISTILLATION: dict[str, str] = {"alpha": "distil_alpha", "temperature": "distil_temperature"}

# model.json's "params_vocabulary": runs saved without it (before the rename) are translated on load
PARAMS_VOCABULARY = 2

# name → its numpy-docstring description, for parameters and learned attributes (``_``-suffixed) that
# many models share with the same meaning. A model's docstring names them without a description, several
# to an entry line ("epochs, batch_size, lr"); Estimator.__init_subclass__ fills the descriptions in
# (:func:`fill_docstring`), so help(Model) is complete and the text lives once. A model whose use of
# a name differs writes its own description under it, which is then kept. A family of models whose use
# of a name differs from this table's but is the same across the family (the detectors' ``lr``, the
# autoencoder classifiers' ``ae_*``) says it once in its base class's ``_docstrings``, which its members
# inherit (merged over the bases like ``_tags``) and which wins over this table.
DOCSTRINGS: dict[str, str] = {
    # torch training
    "input_size": "Side in pixels of the square network input each map is resampled to.",
    "encoding": "How die states become input channels (``onehot3``: no-die / pass / fail channels).",
    "epochs": "Passes over the training data.",
    "batch_size": "Samples per training step.",
    "lr": "Peak learning rate of AdamW's one-cycle schedule.",
    "weight_decay": "AdamW weight decay.",
    "imbalance": '``"loss"`` (class-weighted cross-entropy), ``"sampler"`` (class-balanced sampling) or '
                 '``"none"``.',
    "augment": "Random rotations/flips of the training inputs (the 8 symmetries of the square).",
    "val_fraction": "Share of the training maps held out (stratified, seeded) for early stopping on macro-F1.",
    "patience": "Epochs without a better validation macro-F1 before training stops (the best weights are kept).",
    "tta": "Average the prediction over the 8 rotations/flips of each map.",
    "width": "Channels of the first stage (later stages are multiples of it).",
    "dropout": "Dropout before the final linear layer.",
    "resample": '``"nearest"`` (one die per pixel) or ``"area"`` (each pixel the no-die / pass / fail '
                "fractions of the dies it covers).",
    "orient": '``"none"`` (maps as given) or ``"canonical"`` (each map first turned into its canonical '
              "rotation/flip).",
    "predict_batch_size": "Samples per forward pass when scoring (speed and memory only, not results).",
    "seed": "Seeds every random draw of ``fit``.",
    "progress": "Progress bars on stderr.",
    "distil_alpha": "Weight of the distillation term against the label term.",
    "distil_temperature": "Softmax temperature of the distillation term.",
    # detectors on networks
    "pretrained": '``"wafer"`` (the shipped wafer-domain weights), None (seeded random init) or a local '
                  "checkpoint path.",
    "layers": "Backbone layers whose features are used.",
    "smoothing_sigma": "Gaussian smoothing of the anomaly maps, σ in px per 256 px of input (0: none).",
    "jit": "Score through a traced, frozen TorchScript copy of the network (faster on CPU, same outputs).",
    # learned state
    "classes_": "Class names, in the order of the ``predict_proba`` columns.",
    "best_epoch_": "The epoch whose weights were kept.",
    "history_": "Per-epoch training record (loss, validation score).",
    "in_chans_": "Input channels the network was built for (3 for images).",
    "network_": "The fitted network (``torch.nn.Module``).",
    "train_seconds_": "Wall-clock seconds the training took.",
    "threshold_": "Decision threshold: a score >= ``threshold_`` is anomalous "
                  "(:meth:`~waferscope.base.Detector.calibrate` learns it, "
                  ":meth:`~waferscope.base.Detector.predict` applies it).",
    "threshold_info_": "How ``threshold_`` was learned (the rule and its figures).",
    "model_": "The fitted network that scores (``torch.nn.Module``).",
    "n_train_": "Number of normal training samples.",
    "loss_history_": "Per-epoch mean training loss.",
    "backbone_kwargs_": "Construction kwargs of the backbone, recorded so a saved run rebuilds it.",
    "input_kind_": '``"wafer"`` or ``"image"``: the kind of data fitted on (the other kind is refused).',
    "trees_": "The fitted trees as flat arrays (:mod:`waferscope.models.trees`).",
    "ring_baseline_": "Mean local fail rate of the normal maps' dies in each radial ring.",
}

_FILLED_SECTIONS = ("Parameters", "Attributes")


def fill_docstring(doc: str | None, owner: str = "", family: dict[str, str] | None = None) -> str | None:
    """Return ``doc`` with the shared descriptions of :data:`DOCSTRINGS` filled into its numpy sections.

    In a ``Parameters`` or ``Attributes`` section, an entry line with nothing indented under it (one
    name, or several separated by commas) becomes one entry per name with its shared description;
    entries that have their own description are kept as written. ``family``: the descriptions of the
    model's family (its bases' ``_docstrings``), used before :data:`DOCSTRINGS`.

    Raises
    ------
    ValueError
        An entry without a description names something :data:`DOCSTRINGS` does not describe
        (``owner`` names the class in the message).
    """
    import inspect

    if not doc:
        return doc
    described = {**DOCSTRINGS, **(family or {})}
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    section = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not line.startswith(" ") and set(nxt.strip()) == {"-"}:
            section = line.strip()
        is_entry = section in _FILLED_SECTIONS and line.strip() and not line.startswith(" ") \
            and set(line.strip()) != {"-"} and line.strip() != section
        if is_entry and not nxt.startswith(" "):  # an entry with no description of its own
            for name in (n.strip() for n in line.split(",") if n.strip()):
                if name not in described:
                    raise ValueError(f"{owner or 'a docstring'}: {section} entry {name!r} has no description "
                                     "and neither its family's _docstrings nor waferscope.vocabulary.DOCSTRINGS "
                                     "has one to fill in")
                out += [name, f"    {described[name]}"]
            continue
        out.append(line)
    return "\n".join(out)
