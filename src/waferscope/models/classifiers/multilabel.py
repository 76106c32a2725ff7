"""Mixed-type wafer maps (MixedWM38-style): one sigmoid per base pattern instead of one softmax.

A map can carry several defect patterns at once (Center + Edge-Loc + Scratch...). ``multilabel_cnn``
puts 8 independent sigmoid outputs over :data:`~waferscope.data.classes.BASE_PATTERNS` on the compact
``cnn`` network and trains them with binary cross-entropy on ``dataset.multilabels`` (N×8); a pattern
is present when its probability is ≥ ``threshold``. Metrics: per-pattern F1 and the exact-match ratio
(all 8 decisions right; scikit-learn's subset accuracy).
"""

from __future__ import annotations

import numpy as np

from waferscope.base import Interval
from waferscope.data.classes import BASE_PATTERNS, NORMAL
from waferscope.data.dataset import validate_wafer_maps
from waferscope.data.preprocess import stratified_split
from waferscope.errors import DataError
from waferscope.models.classifiers.cnn import compact_wafer_cnn
from waferscope.models.classifiers.torch_base import TorchClassifier
from waferscope.registry import register


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, patterns=BASE_PATTERNS) -> dict:
    """Per-pattern precision/recall/F1/support, their macro mean, exact-match ratio and Hamming loss."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    present = s > 0
    return {
        "n": int(len(y_true)),
        "exact_match": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "macro_f1": float(np.mean(f[present])) if present.any() else 0.0,
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "per_pattern": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                               "support": int(s[i])} for i, name in enumerate(patterns)},
    }


def multilabel_names(y: np.ndarray, patterns=BASE_PATTERNS) -> np.ndarray:
    """(N, 8) bool → labels in the synthetic generator's style: "Center+Scratch", "Loc", "none"."""
    return np.array(["+".join(p for p, on in zip(patterns, row) if on) or NORMAL for row in np.asarray(y, bool)],
                    dtype=object)


def _val_split(strata: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified by label combination when every combination can be.

    Otherwise a seeded random split (38 combinations do not all fit into a small validation
    set).
    """
    try:
        return stratified_split(strata, fraction, seed)
    except ValueError:
        order = np.random.default_rng(seed).permutation(len(strata))
        n_val = max(1, int(round(fraction * len(strata))))
        return np.sort(order[n_val:]), np.sort(order[:n_val])


@register("multilabel_cnn", kind="classifier")
class MultiLabelCNNClassifier(TorchClassifier):
    """The compact ``cnn`` with 8 sigmoid heads over BASE_PATTERNS, trained with BCE on ``multilabels``.

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, width, dropout
    threshold
        Probability at or above which ``predict`` reports a pattern.

    Attributes
    ----------
    best_epoch_, classes_, history_, in_chans_, network_, train_seconds_
    """

    prior_refusal = "multilabel_cnn scores each pattern on its own (sigmoid heads), not one class of several"

    _tags = {"multilabel": True}
    _parameter_constraints = {"threshold": [Interval(float, 0, 1)]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 30, batch_size: int = 128,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 width: int = 24, dropout: float = 0.2, threshold: float = 0.5):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress)
        self.width = width
        self.dropout = dropout
        self.threshold = threshold

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network (:func:`compact_wafer_cnn` with one output per pattern)."""
        return compact_wafer_cnn(in_chans, n_classes, self.width, self.dropout)

    # Training is the single-label base's (training.fit_loop: AdamW, one-cycle LR, rotations/flips,
    # early stopping on a validation split, best epoch restored); what differs is below: the
    # targets (N×8 multi-labels), their split, BCE with per-pattern weights and the validation score.
    def _training_targets(self, dataset) -> tuple:
        if len(dataset) == 0:
            raise DataError(f"{dataset.name}: no maps to train on")
        if dataset.kind == "wafer":
            validate_wafer_maps(dataset.maps, dataset.name)
        if dataset.multilabels is None:
            raise DataError(f"{dataset.name}: multilabel_cnn needs multi-labels (N×8 over BASE_PATTERNS), "
                            "e.g. waferscope.data.synthetic.generate(n, seed, mixed=True)")
        return dataset, list(BASE_PATTERNS), dataset.multilabels.astype(np.float32)

    def _validation_split(self, dataset, y_all: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        if self.val_fraction > 0 and len(y_all) >= 20:
            return _val_split(multilabel_names(y_all), self.val_fraction, self.seed)
        return np.arange(len(y_all)), np.arange(0)

    def _epoch_order(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(y))  # no class-balanced sampling: a map has several "classes"

    def _targets(self, y: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))

    def _imbalance_weights(self, y: np.ndarray):
        import torch

        pos = y.sum(0)
        # sqrt of the negative/positive ratio: rare patterns (Near-full, Random) count more, not 30× more
        return torch.from_numpy(np.sqrt((len(y) - pos) / np.maximum(pos, 1)).astype(np.float32))

    def _loss(self, logits, targets, batch_x):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self._loss_weight)

    def _validation_score(self, x_u8: np.ndarray, y: np.ndarray, kind: str) -> float:
        """Return the mean per-pattern F1 of the thresholded sigmoids."""
        import torch

        pred = torch.sigmoid(self._logits(x_u8, kind)).numpy() >= self.threshold
        return multilabel_report(y, pred)["macro_f1"]

    def predict_proba(self, dataset) -> np.ndarray:
        """(N, 8) independent pattern probabilities (rows do not sum to 1)."""
        import torch

        self._check_fitted()
        return torch.sigmoid(self._logits(self.resize(dataset), dataset.kind).float()).numpy()

    def export_module(self):
        """Return the ONNX graph's network: one-hot input → the 8 sigmoid pattern probabilities.

        The generic classifier graph would apply a softmax.
        """
        import torch

        return torch.nn.Sequential(self.network_, torch.nn.Sigmoid()).eval()

    def predict_multilabel(self, dataset) -> np.ndarray:
        """(N, 8) bool: which of BASE_PATTERNS each map shows."""
        return self.predict_proba(dataset) >= float(self.threshold)

    def predict(self, dataset) -> np.ndarray:
        """Label strings like the mixed synthetic set's: "Center+Edge-Loc", "Scratch", "none"."""
        return multilabel_names(self.predict_multilabel(dataset), self.classes_)
