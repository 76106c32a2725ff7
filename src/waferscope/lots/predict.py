"""Per-wafer predictions for the lot views.

The class a classifier gives each wafer (the highest probability, as ``waferscope classify
predict`` with its default prior writes it) and the anomaly score a detector gives it, flagged
anomalous at the detector run's threshold.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def predict_wafers(dataset, classifier=None, detector=None, threshold: float | None = None, *,
                   batch_size: int = 2048, progress: bool = False) -> pd.DataFrame:
    """DataFrame with one row per wafer (the data set's order).

    ``id``, and with a classifier ``predicted`` and ``confidence`` (its probability), with a
    detector ``score`` and, when a ``threshold`` is given, ``anomalous`` (score ≥ threshold).
    Runs in batches of ``batch_size`` wafers so that a progress bar can follow a large file.
    """
    from tqdm.auto import tqdm

    from waferscope.errors import DataError

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for model in (classifier, detector):
        # a model trained on images (MVTec layout) would score wafer maps without complaint
        mode = None if model is None else model.trained_input_kind()
        if mode is not None and mode != dataset.kind:
            raise DataError(f"{type(model).__name__} was trained on {mode} data; these are {dataset.kind} data",
                            dataset.name)
    n = len(dataset)
    out = pd.DataFrame({"id": dataset.ids.astype(str)})
    starts = range(0, n, batch_size)
    if classifier is not None:
        classes = np.asarray(classifier.classes_, dtype=object)
        pred, conf = np.empty(n, dtype=object), np.empty(n, np.float64)
        for s in tqdm(starts, desc="classify", unit="batch", disable=not progress, file=sys.stderr, leave=False):
            proba = np.asarray(classifier.predict_proba(dataset.subset(np.arange(s, min(s + batch_size, n)))))
            pred[s:s + len(proba)] = classes[proba.argmax(1)]
            conf[s:s + len(proba)] = proba.max(1)
        out["predicted"], out["confidence"] = pred, conf
    if detector is not None:
        scores = np.empty(n, np.float64)
        for s in tqdm(starts, desc="anomaly scores", unit="batch", disable=not progress, file=sys.stderr, leave=False):
            part = detector.score(dataset.subset(np.arange(s, min(s + batch_size, n))))
            scores[s:s + len(part.scores)] = part.scores
        out["score"] = scores
        if threshold is not None:
            out["anomalous"] = scores >= float(threshold)
    return out
