"""Semi-supervision from unlabelled maps: confident, rotation-consistent pseudo-labels (self-training).

78 % of WM-811K carries no label. ``pseudo_label_cnn`` uses those maps in rounds (Lee 2013's
pseudo-labelling, with FixMatch's confidence threshold and a consistency check in place of its
weak/strong augmentation pair):

1. train the compact ``cnn`` on the labelled maps;
2. score every unlabelled map under all 8 rotations/flips; keep a map when the mean probability of
   its top class is ≥ ``threshold`` AND all 8 views agree on that class (consistency: wafer patterns
   do not change class under the symmetries of the square, so disagreement flags an unreliable guess);
   at most ``max_ratio`` × (that class's labelled count) maps per class, the most confident first,
   so a frequent easy class cannot flood the training set;
3. retrain from the same initial seed on labelled + pseudo-labelled maps; repeat for ``rounds``.

Unlabelled maps come from ``fit(dataset, unlabelled=...)`` and/or the unlabelled maps of ``dataset``.
"""

from __future__ import annotations

import sys

import numpy as np

from waferscope.base import Interval
from waferscope.data.classes import UNLABELLED
from waferscope.data.dataset import WaferDataset
from waferscope.data.preprocess import dihedral
from waferscope.errors import DataError
from waferscope.models.classifiers.cnn import CompactCNNClassifier
from waferscope.models.classifiers.common import require_wafer_maps
from waferscope.registry import register


def select_pseudo_labels(view_proba: np.ndarray, threshold: float, labelled_counts: np.ndarray,
                         max_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """From (N, V, C) per-view probabilities choose the maps to pseudo-label.

    Returns (indices, class indices): confident (mean top-class probability ≥ threshold), consistent
    (every view's argmax is that class), at most ``max_ratio × labelled_counts[c]`` per class c, most
    confident first.
    """
    mean = view_proba.mean(1)
    cls = mean.argmax(1)
    conf = mean[np.arange(len(mean)), cls]
    consistent = (view_proba.argmax(2) == cls[:, None]).all(1)
    ok = np.flatnonzero((conf >= threshold) & consistent)
    keep = []
    for c in np.unique(cls[ok]):
        members = ok[cls[ok] == c]
        cap = int(np.floor(max_ratio * labelled_counts[c]))
        keep.append(members[np.argsort(-conf[members], kind="stable")][:cap])
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return idx, cls[idx]


@register("pseudo_label_cnn", kind="classifier")
class PseudoLabelCNNClassifier(CompactCNNClassifier):
    """The compact ``cnn`` self-trained on confident, rotation-consistent pseudo-labels.

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, tta, width, dropout
    threshold
        Mean top-class probability over the 8 views a pseudo-label needs.
    rounds
        Self-training rounds.
    max_ratio
        At most this many pseudo-labels per class and round, as a multiple of the class's labelled count.

    Attributes
    ----------
    best_epoch_, classes_, history_, in_chans_, network_
    pseudo_rounds_
        Per round: the pseudo-labels taken (counts per class).
    train_seconds_
    """

    _tags = {"input_kinds": ("wafer",)}  # refuses images (a die-state autoencoder / stem / teacher)
    _parameter_constraints = {
        "threshold": [Interval(float, 0, 1)], "rounds": [Interval(int, 1)],
        "max_ratio": [Interval(float, 0, None, closed="neither")]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 25, batch_size: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: int = 24, dropout: float = 0.2, threshold: float = 0.95, rounds: int = 1,
                 max_ratio: float = 3.0):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress,
                         tta=tta, width=width, dropout=dropout)
        self.threshold = threshold
        self.rounds = rounds
        self.max_ratio = max_ratio

    def _view_proba(self, x_u8: np.ndarray) -> np.ndarray:
        import torch

        views = [torch.softmax(self._logits(np.ascontiguousarray(dihedral(x_u8, k, axes=(1, 2)))), 1).numpy()
                 for k in range(8)]
        return np.stack(views, axis=1)

    def fit(self, dataset, unlabelled: WaferDataset | None = None, **kwargs) -> "PseudoLabelCNNClassifier":
        """Fit on the labelled maps, then self-train on pseudo-labelled ``unlabelled`` maps for ``rounds``."""
        if dataset.kind != "wafer":
            raise DataError(f"{dataset.name}: pseudo_label_cnn takes wafer maps, not images")
        labelled = dataset.labelled()
        pool_parts = [dataset.subset(~dataset.is_labelled)] if (~dataset.is_labelled).any() else []
        if unlabelled is not None and len(unlabelled):
            pool_parts.append(unlabelled)
        super().fit(labelled, **kwargs)
        rounds_log = []
        if not pool_parts:
            print("note: pseudo_label_cnn: no unlabelled maps; trained on the labelled ones only", file=sys.stderr)
        else:
            pool = WaferDataset.concat(pool_parts, name="unlabelled")
            pool.labels = np.full(len(pool), UNLABELLED, dtype=object)
            x_pool = self.resize(pool)
            counts = np.bincount([self.classes_.index(c) for c in labelled.labels], minlength=len(self.classes_))
            for r in range(int(self.rounds)):
                idx, cls = select_pseudo_labels(self._view_proba(x_pool), float(self.threshold), counts,
                                                float(self.max_ratio))
                pseudo = pool.subset(idx)
                pseudo.labels = np.asarray(self.classes_, dtype=object)[cls]
                rounds_log.append({"round": r + 1, "pseudo_labelled": int(len(idx)), "pool": int(len(pool)),
                                   "per_class": {c: int((cls == i).sum()) for i, c in enumerate(self.classes_)}})
                print(f"pseudo-label round {r + 1}: {len(idx)} of {len(pool)} unlabelled maps kept", file=sys.stderr)
                if not len(idx):
                    break
                super().fit(WaferDataset.concat([labelled, pseudo], name="labelled+pseudo"), **kwargs)
        self.pseudo_rounds_ = rounds_log
        return self

    def predict_proba(self, dataset) -> np.ndarray:
        """Return the class probabilities of every map (wafer maps only)."""
        require_wafer_maps(dataset, "pseudo_label_cnn")
        return super().predict_proba(dataset)

    def _state(self):
        tensors, extras = super()._state()
        extras["pseudo_rounds"] = list(getattr(self, "pseudo_rounds_", []))
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        super()._load_state(tensors, extras)
        self.pseudo_rounds_ = list(extras.get("pseudo_rounds", []))
