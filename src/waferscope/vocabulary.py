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
