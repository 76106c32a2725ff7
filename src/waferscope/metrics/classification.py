"""Classification metrics (scikit-learn underneath) and the confusion-matrix figure.

:func:`classification_report_dict` is the content of ``classify evaluate``'s ``metrics.json``:
accuracy, macro and weighted F1, and per-class precision / recall / F1 / support, with the
confusion matrix as nested lists (rows = true class, columns = predicted class).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str] | None = None) -> float:
    """Return the macro-averaged F1 over ``classes`` (default: the classes present in ``y_true``)."""
    return float(f1_score(y_true, y_pred, labels=_labels(y_true, classes), average="macro", zero_division=0))


def weighted_f1(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str] | None = None) -> float:
    """Return the support-weighted F1 over ``classes`` (default: the classes present in ``y_true``)."""
    return float(f1_score(y_true, y_pred, labels=_labels(y_true, classes), average="weighted", zero_division=0))


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Return the share of correct predictions."""
    return float(accuracy_score(np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)))


def class_mix_macro_f1(y_true: Sequence[str], y_pred: Sequence[str], mix: dict[str, float]) -> float | None:
    """Macro-F1 as if the test maps came in class mix ``mix`` ({class: count or share}).

    Each map is weighted by its class's share of ``mix`` over its share of the test set. None unless
    the test set has every class of ``mix`` (and nothing else) to re-weight.
    """
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    classes = [str(c) for c in mix]
    if set(y_true.tolist()) != set(classes):
        return None
    total = float(sum(mix.values()))
    share = {c: float(np.mean(y_true == c)) for c in classes}
    weight = np.array([mix[c] / total / share[c] for c in y_true])
    return float(f1_score(y_true, y_pred, labels=classes, average="macro", sample_weight=weight, zero_division=0))


def _labels(y_true: Sequence[str], classes: Sequence[str] | None) -> list[str]:
    """Return the classes that count in the averages: those given, restricted to ones present in y_true.

    A class the model knows but the test set lacks has no recall to measure; counting it as F1 = 0
    would punish the model for the data set's make-up.
    """
    present = set(np.asarray(y_true, dtype=str).tolist())
    if classes is None:
        return sorted(present)
    return [c for c in classes if c in present]


def classification_report_dict(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict:
    """Everything ``metrics.json`` holds, as plain JSON-able Python values."""
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    classes = [str(c) for c in classes]
    # The confusion matrix also lists predicted classes that are not among ``classes`` (none normally).
    all_classes = classes + sorted((set(y_true.tolist()) | set(y_pred.tolist())) - set(classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=all_classes, zero_division=0)
    used = _labels(y_true, all_classes)
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, used),
        "weighted_f1": weighted_f1(y_true, y_pred, used),
        "classes": all_classes,
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(all_classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=all_classes).tolist(),
    }


def save_confusion_matrix_png(matrix: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str],
                              path: str | Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised colours with raw counts written in each cell; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=np.int64)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n), dpi=110)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
