"""Classification protocols on real wafers.

So far: :func:`heldout` — classifiers on the real maps of ``LSWMD_sample.pkl`` that no bundled
model trained on (the sample's maps minus every map of the labelled sets they were trained on).
The lot-grouped k-fold protocol on dev + dev2 still runs from ``scripts/eval_lot_grouped.py``
(docs/classification_real.md) until it moves here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def map_key(wafer: np.ndarray) -> bytes:
    """Identity of a die grid (shape + die states), to find the same map in two files."""
    return bytes(np.asarray(wafer.shape, np.int32)) + np.ascontiguousarray(wafer).tobytes()


def unseen_subset(sample, seen_sets: Iterable):
    """The maps of ``sample`` that occur in none of ``seen_sets`` (WaferDatasets)."""
    seen = {map_key(m) for ds in seen_sets for m in ds.maps}
    keep = np.flatnonzero([map_key(m) not in seen for m in sample.maps])
    return sample.subset(keep)


def score_predictions(y_true, y_pred) -> dict:
    """Accuracy, macro-F1 over the classes present in ``y_true``, and per-class F1."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    classes = sorted(set(y_true))
    per = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(per.mean()), "per_class_f1": {c: float(v) for c, v in zip(classes, per)}}


def heldout(models: dict[str, Callable], sample, seen_sets: Iterable, prior: str = "balanced",
            sample_name: str = "the held-out sample") -> list[dict]:
    """Score each model (name → zero-argument loader) on the maps of ``sample`` not in ``seen_sets``.

    ``prior`` is the class mix the probabilities are moved to before the arg-max, as
    ``classify predict --prior`` (``balanced`` leaves them as they are).
    """
    from waferscope.errors import DataError
    from waferscope.models.classifiers.prior import apply_prior

    held = unseen_subset(sample, seen_sets)
    if len(held) == 0:
        raise DataError("every map of the held-out sample is in the training sets; nothing to evaluate",
                        sample_name)
    if held.labels is None:
        raise DataError("the held-out sample has no labels", sample_name)
    y = held.labels.astype(str)
    rows = []
    for name, loader in models.items():
        model = loader()
        proba, _ = apply_prior(model, model.predict_proba(held), prior)
        pred = np.asarray(model.classes_)[proba.argmax(1)]
        rows.append({"model": name, "prior": prior, **score_predictions(y, pred)})
    return rows


def load_heldout_sample(sample_path: str | Path, seen_paths: Iterable[str | Path]):
    """(sample, [seen sets]) read from files; the pickled sample is read with the allow-listed unpickler."""
    from waferscope.data import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-pandas shim's notes
        sample = load(str(sample_path))
    return sample, [load(str(p)) for p in seen_paths]
