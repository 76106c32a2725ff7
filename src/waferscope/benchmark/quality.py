"""Quality figures of one cell, rounded to a fixed precision so reruns are byte-identical.

Plus the small artefacts the report draws (confusion matrix, ROC/PR points, example maps).
"""

from __future__ import annotations

import math

import numpy as np

from waferscope.base import DetectionResult
from waferscope.data.dataset import WaferDataset

DECIMALS = 4
CURVE_POINTS = 101

CLASSIFICATION_COLUMNS = ["accuracy", "macro_f1", "weighted_f1"]
DETECTION_COLUMNS = ["image_auroc", "image_aupr", "image_f1", "pixel_auroc", "pixel_aupro"]


def rnd(x) -> float | None:
    """Round a figure to the fixed precision of the results (None stays None)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, DECIMALS)


# ---- classification --------------------------------------------------------------------------
def classification_quality(y_true, y_pred, classes) -> tuple[dict, dict]:
    """Return the classification figures of one cell (macro-F1, accuracy, ...) and its extras (confusion matrix)."""
    from sklearn.metrics import confusion_matrix, f1_score

    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    classes = list(dict.fromkeys([str(c) for c in classes] + sorted(set(y_pred.tolist()) - set(map(str, classes)))))
    rep = _report(y_true, y_pred, classes)
    quality = {k: rnd(rep[k]) for k in CLASSIFICATION_COLUMNS}
    present = [c for c in classes if c in set(y_true.tolist())]
    f1s = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    quality["per_class_f1"] = {c: rnd(f) for c, f in zip(present, f1s)}
    artefacts = {"confusion": {"classes": classes,
                               "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist()}}
    return quality, artefacts


def class_mix_quality(y_true, proba: np.ndarray, classes, estimator) -> dict:
    """Return macro-F1 as if the test maps came in the class mix of the labelled WM-811K maps.

    85 % ``none``; :func:`~waferscope.metrics.classification.class_mix_macro_f1`, without
    (``macro_f1_wm811k_mix``) and with (``…_prior``) the ``--prior wm811k`` correction. Only when
    the test set has every WM-811K class; the prior column stays empty for a model that refuses a
    prior.
    """
    from waferscope.errors import ConfigError
    from waferscope.metrics.classification import class_mix_macro_f1
    from waferscope.models.classifiers.prior import WM811K_LABELLED_COUNTS, apply_prior

    names = np.asarray([str(c) for c in classes])
    if set(names.tolist()) != set(WM811K_LABELLED_COUNTS):
        return {}

    def mix_f1(p):
        return rnd(class_mix_macro_f1(y_true, names[np.asarray(p).argmax(1)], WM811K_LABELLED_COUNTS))

    out = {"macro_f1_wm811k_mix": mix_f1(proba)}
    if out["macro_f1_wm811k_mix"] is None:
        return {}
    try:
        out["macro_f1_wm811k_mix_prior"] = mix_f1(apply_prior(estimator, np.asarray(proba), "wm811k")[0])
    except ConfigError:  # e.g. the SVMs: their probabilities are not class-balanced
        out["macro_f1_wm811k_mix_prior"] = None
    return out


def _report(y_true, y_pred, classes) -> dict:
    try:
        from waferscope.metrics.classification import classification_report_dict
    except ImportError:  # the metrics module is optional for the runner: scikit-learn directly
        from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

        labels = [c for c in classes if c in set(y_true)]
        f1s = f1_score(y_true, y_pred, labels=list(classes), average=None, zero_division=0)
        return {"accuracy": accuracy_score(y_true, y_pred),
                "macro_f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
                "weighted_f1": f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
                "classes": list(classes), "per_class": {c: {"f1": f} for c, f in zip(classes, f1s)},
                "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(classes)).tolist()}
    return classification_report_dict(y_true, y_pred, classes)


# ---- detection --------------------------------------------------------------------------------
def _curve(x: np.ndarray, y: np.ndarray) -> dict:
    """Thin a curve to at most CURVE_POINTS points (enough to draw it)."""
    idx = np.unique(np.linspace(0, len(x) - 1, min(len(x), CURVE_POINTS)).round().astype(int))
    return {"x": [rnd(v) for v in x[idx]], "y": [rnd(v) for v in y[idx]]}


def _pixel_arrays(result: DetectionResult, test: WaferDataset):
    """Return flattened (truth, score) over the dies of maps that have a ground-truth mask.

    Normal maps without a mask count as all-normal.
    """
    truths, scores = [], []
    if test.masks is None:
        return None, None
    for i, amap in enumerate(result.maps):
        mask = test.masks[i]
        if mask is None:
            if not test.is_normal[i]:
                continue
            mask = np.zeros(np.shape(amap)[:2], dtype=bool)
        on = test.maps[i] > 0 if test.kind == "wafer" else np.ones(mask.shape, dtype=bool)
        truths.append(mask[on])
        scores.append(np.asarray(amap, dtype=np.float64)[on])
    if not truths:
        return None, None
    y, s = np.concatenate(truths), np.concatenate(scores)
    return (y, s) if 0 < y.sum() < len(y) else (None, None)


def detection_quality(result: DetectionResult, test: WaferDataset) -> tuple[dict, dict]:
    """Return the detection figures of one cell (AUROC, AUPR, F1, ...) and its extras (curves)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = ~test.is_normal
    s = np.asarray(result.scores, dtype=np.float64)
    quality: dict = {}
    try:  # the metrics module's definitions (AUPRO in particular) when it is there
        from waferscope.metrics.detection import evaluate_detection

        found = evaluate_detection(result, test)
        names = {"image_auroc": "image_auroc", "image_aupr": "image_aupr", "image_f1": "f1",
                 "pixel_auroc": "pixel_auroc", "pixel_aupro": "aupro"}
        for col, key in names.items():
            if key in found:
                quality[col] = rnd(found[key])
    except ImportError:
        pass
    quality.setdefault("image_auroc", rnd(roc_auc_score(y, s)))
    quality.setdefault("image_aupr", rnd(average_precision_score(y, s)))
    prec, rec, thr = precision_recall_curve(y, s)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=(prec + rec) > 0)
    quality.setdefault("image_f1", rnd(f1.max()))
    py, ps = _pixel_arrays(result, test)
    if "pixel_auroc" not in quality:
        quality["pixel_auroc"] = rnd(roc_auc_score(py, ps)) if py is not None else None
    quality.setdefault("pixel_aupro", None)
    fpr, tpr, _ = roc_curve(y, s)
    artefacts = {"roc": _curve(fpr, tpr), "pr": _curve(rec[::-1], prec[::-1])}
    return quality, artefacts


def f1_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Return the F1 of the decisions ``scores > threshold``."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, scores > threshold, zero_division=0))


def detection_examples(result: DetectionResult, test: WaferDataset, k: int) -> list[dict]:
    """Return a fixed choice of test maps (defects first, then normal ones) with their anomaly maps."""
    if k <= 0:
        return []
    defect = np.flatnonzero(~test.is_normal)
    normal = np.flatnonzero(test.is_normal)
    # Spread the picks over the defect classes: the first map of each class in label order.
    picks: list[int] = []
    for cls in sorted(set(test.labels[defect].astype(str))):
        picks.append(int(defect[test.labels[defect] == cls][0]))
    picks = picks[: max(k - 1, 1)] + [int(i) for i in normal[:1]]
    out = []
    for i in picks[:k]:
        amap = np.asarray(result.maps[i], dtype=np.float32)
        out.append({"index": i, "label": str(test.labels[i]), "score": rnd(result.scores[i]),
                    "map": np.asarray(test.maps[i]).tolist(),
                    "anomaly": np.round(amap, 4).tolist(),
                    "mask": None if test.masks is None or test.masks[i] is None else test.masks[i].astype(int).tolist()})
    return out
