"""Open set: let a classifier abstain (``unknown``) on a wafer that fits none of its classes, and
cluster the abstained wafers into candidate new patterns (issue #31).

:class:`OpenSetScorer` combines two signs that a wafer is of no known class:

- the classifier's doubt, ``1 - max class probability``;
- its distance in the search embedding to the known wafers of the class the classifier chose (the
  mean distance to the ``k`` nearest of them): a confident label far from every wafer of that class
  is suspect.

Each is turned into a rank against a calibration set of known wafers the models did not train on
(its empirical CDF there, so the two live on one 0..1 scale whatever their units), and the open-set
score is the mean of the two ranks (``weights`` change the mix). The abstention threshold is the
``1 - abstain_rate`` quantile of the calibration scores: about ``abstain_rate`` of known wafers are
set aside. Its state is plain arrays (:meth:`arrays`), never pickled.

:func:`discover_clusters` groups the abstained wafers with scikit-learn's HDBSCAN into candidate
patterns (label -1: no cluster).
"""

from __future__ import annotations

import numpy as np

from waferscope.errors import ConfigError

UNKNOWN = "unknown"


def _ecdf(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of ``reference`` values at or below each of ``values`` (0..1)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="right") / max(len(ref), 1)


class OpenSetScorer:
    """``fit(train_vectors, train_labels, cal_proba, cal_vectors, classes)`` → self;
    ``score(proba, vectors)`` → open-set scores (higher: less like any known class);
    ``predict(proba, vectors)`` → class names with ``unknown`` where the score passes the threshold."""

    def __init__(self, k: int = 10, weights: tuple[float, float] = (0.5, 0.5), abstain_rate: float = 0.05):
        if not 0 <= abstain_rate < 1:
            raise ConfigError(f"abstain_rate must be in [0, 1), got {abstain_rate!r}")
        self.k = k
        self.weights = weights
        self.abstain_rate = abstain_rate

    def _parts(self, proba: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(doubt, distance to the chosen class's known wafers) per wafer."""
        proba = np.asarray(proba, dtype=np.float64)
        vectors = np.asarray(vectors, dtype=np.float32)
        chosen = proba.argmax(axis=1)
        dist = np.full(len(vectors), np.inf)
        for c in np.unique(chosen):
            ref = self.class_vectors_[c]
            if not len(ref):
                continue
            sel = chosen == c
            d2 = (vectors[sel] ** 2).sum(1)[:, None] - 2 * vectors[sel] @ ref.T + (ref ** 2).sum(1)[None, :]
            kk = min(self.k, len(ref))
            near = np.sort(np.maximum(d2, 0), axis=1)[:, :kk]
            dist[sel] = np.sqrt(near).mean(axis=1)
        return 1.0 - proba.max(axis=1), dist

    def fit(self, train_vectors, train_labels, cal_proba, cal_vectors, classes) -> "OpenSetScorer":
        self.classes_ = np.asarray([str(c) for c in classes])
        labels = np.asarray(train_labels).astype(str)
        vectors = np.asarray(train_vectors, dtype=np.float32)
        self.class_vectors_ = [vectors[labels == c] for c in self.classes_]
        self.cal_doubt_, self.cal_dist_ = self._parts(cal_proba, cal_vectors)
        cal = self.score(cal_proba, cal_vectors)
        self.threshold_ = float(np.quantile(cal, 1 - self.abstain_rate)) if self.abstain_rate > 0 else np.inf
        return self

    def score(self, proba, vectors) -> np.ndarray:
        doubt, dist = self._parts(proba, vectors)
        w = np.asarray(self.weights, dtype=np.float64)
        parts = np.stack([_ecdf(self.cal_doubt_, doubt), _ecdf(self.cal_dist_, dist)], axis=1)
        return (parts * w).sum(axis=1) / w.sum()

    def predict(self, proba, vectors) -> np.ndarray:
        names = self.classes_[np.asarray(proba).argmax(axis=1)].astype(object)
        names[self.score(proba, vectors) > self.threshold_] = UNKNOWN
        return names

    def arrays(self) -> dict:
        return {"classes": self.classes_, "cal_doubt": self.cal_doubt_, "cal_dist": self.cal_dist_,
                "threshold": np.asarray(self.threshold_), **{f"class_{i}": v for i, v in enumerate(self.class_vectors_)}}


def discover_clusters(vectors: np.ndarray, min_cluster_size: int = 10, min_samples: int | None = None) -> np.ndarray:
    """HDBSCAN cluster labels (-1: noise) of ``vectors``; fewer than ``min_cluster_size`` wafers: all -1."""
    from sklearn.cluster import HDBSCAN

    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) < max(min_cluster_size, 2):
        return np.full(len(vectors), -1)
    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True).fit_predict(vectors)


def best_cluster(clusters: np.ndarray, is_target: np.ndarray) -> dict:
    """The discovered cluster that best matches a hidden class (highest F1 of cluster vs class):
    its purity (share of its wafers of the class), recall (share of the class's wafers in it), size."""
    clusters = np.asarray(clusters)
    is_target = np.asarray(is_target, dtype=bool)
    best = {"cluster": None, "purity": 0.0, "recall": 0.0, "size": 0, "f1": 0.0}
    total = int(is_target.sum())
    for c in np.unique(clusters[clusters >= 0]):
        members = clusters == c
        hit = int((members & is_target).sum())
        purity, recall = hit / members.sum(), (hit / total if total else 0.0)
        f1 = 2 * purity * recall / (purity + recall) if hit else 0.0
        if f1 > best["f1"]:
            best = {"cluster": int(c), "purity": float(purity), "recall": float(recall), "size": int(members.sum()),
                    "f1": float(f1)}
    return best
