"""What every classifier does with its training labels, whatever its model family (trees, SVM, torch).

:func:`labelled_for_training` keeps the labelled maps (with a note about the skipped ones) and
:func:`label_order` fixes the class order a model learns, so every classifier's ``classes_`` and
probability columns agree for the same training labels.
"""

from __future__ import annotations

import sys

import numpy as np

from waferscope.data.classes import CLASSES, UNLABELLED
from waferscope.errors import DataError


def label_order(labels: np.ndarray) -> list[str]:
    """Return the classes a model learns: the labels seen, in WM-811K order when they are WM-811K names."""
    seen = sorted(set(np.asarray(labels, dtype=str).tolist()) - {UNLABELLED})
    if set(seen) <= set(CLASSES):
        return [c for c in CLASSES if c in seen]
    return seen


def require_wafer_maps(dataset, who: str, states: bool = True) -> None:
    """Raise a clear DataError unless ``dataset`` holds valid die-state wafer maps.

    For models that read die states only: images, or a die value other than 0/1/2, are refused
    before any numpy/torch work. ``states=False`` checks the kind only, for callers whose next step
    (:func:`waferscope.features.handcrafted.extract_features` with ``where=``) checks the die states
    itself with the same message, so the maps are not walked twice.
    """
    from waferscope.data.dataset import validate_wafer_maps

    if dataset.kind != "wafer":
        raise DataError(f"{who} reads die-state wafer maps, not images", dataset.name)
    if states:
        validate_wafer_maps(dataset.maps, dataset.name)


def labelled_for_training(dataset, who: str = "classifier"):
    """Return the labelled part of a data set; unlabelled maps are skipped with a note on stderr.

    Wafer maps must hold die states 0/1/2 only (a clear DataError otherwise).
    """
    from waferscope.data.dataset import validate_wafer_maps

    if dataset.kind == "wafer":
        validate_wafer_maps(dataset.maps, dataset.name)
    n_unlabelled = int((~dataset.is_labelled).sum())
    if n_unlabelled:
        print(f"note: {who}: skipping {n_unlabelled} unlabelled map(s) of {len(dataset)}", file=sys.stderr)
        dataset = dataset.labelled()
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no labelled maps to train on")
    return dataset
