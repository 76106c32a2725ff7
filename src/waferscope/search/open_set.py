"""Open set: let a classifier abstain (``unknown``) on a wafer that fits none of its classes.

And cluster the abstained wafers into candidate new patterns (issue #31).

:class:`OpenSetScorer` combines signs that a wafer is of no known class (its *parts*, :data:`PARTS`):

- ``doubt``: the classifier's doubt, ``1 - max class probability``;
- ``metric_knn``: the distance in the search embedding to the known wafers of the class the
  classifier chose (mean distance to the ``k`` nearest of them): a confident label far from every
  wafer of that class is suspect;
- ``feature_knn``: the distance in the standardised wafer features to the ``k`` nearest known
  training wafers of any class. The metric embedding is trained to pull the known classes together
  and so folds an unseen pattern onto one of them; the plain features keep what that training threw
  away (measured on lot-grouped folds: +0.03 mean leave-one-class-out AUROC, docs/search.md; out of the
  default since the fifth screen, where ``relative_knn`` and ``shape_tail`` see what it saw at a lower
  cost in known-class F1);
- ``shape_knn``: the distance in a few shape descriptors of the wafer's largest fail cluster (its size,
  radial position, elongation, angular concentration, the longest run of hot outer sectors — ring-ness —
  and the longest cluster's thinness: :data:`SHAPE_FEATURES`, standardised) to the ``k`` nearest known
  training wafers of the nearest class. Each hidden class is odd in a shape sense that the classifier
  and the metric head fold away (a scratch thinner, a ring more closed, a blob more central than any
  known wafer of its look-alike class);
- ``relative_knn``: the distance in the standardised features to the ``k`` nearest training wafers of
  the class the classifier chose, divided by those neighbours' own mean distance to their ``k`` nearest
  of the class: a distance relative to the class's local density (a tight class makes a small absolute
  distance suspect, a loose one forgives a large one);
- ``shape_tail``: how *unusual* the wafer's shape descriptors are among the known wafers of the class the
  classifier chose, one descriptor at a time: for each of :data:`TAIL_FEATURES` (14 descriptors of the
  largest fail cluster: size, radial position and extent, elongation, length, compactness, angular
  concentration, box fill, thinness, hot outer / middle sector runs, fail rate, spread of fail radii) the
  two-sided empirical tail probability of its value among those wafers, and the part is the sum of the
  ``tail_top`` (3) largest ``-log`` tails. A hidden ring classified as Edge-Loc, a scratch classified as
  Loc, are ordinary in most columns and extreme in a few (a run of hot outer sectors no Edge-Loc wafer
  has, a thinness no Loc has): a kNN distance over all columns dilutes that, a per-column tail does not
  (fifth screen, docs/search.md);
- ``detector``: an anomaly detector's score (the bundled ``pattern_contrast``). Available, but off by
  default: measured, it lowers the AUROC (a detector tells defects from clean wafers, and most known
  wafers are defects too), and a logistic combination fitted with held-out classes gives it ~0 weight.

Default parts: :data:`DEFAULT_PARTS` (``feature_knn`` and ``detector`` are available, not in the default).

Each part is turned into a rank against a calibration set of known wafers the models did not train on
(its empirical CDF there, so the parts live on one 0..1 scale whatever their units), and the open-set
score is the weighted mean of the ranks. The abstention threshold is the ``1 - abstain_rate`` quantile
of the calibration scores: about ``abstain_rate`` of known wafers are set aside. Its state is plain
arrays and JSON (:meth:`state` / :meth:`from_state`), never pickled.

The signals a part needs come in a dict (:data:`SIGNALS`): ``proba`` (N, classes), ``metric``
(N, D) embedding vectors, ``features`` (N, F) standardised features, ``detector`` (N,) scores.

:func:`discover_clusters` groups the abstained wafers with scikit-learn's HDBSCAN into candidate
patterns (label -1: no cluster).
"""

from __future__ import annotations

import numpy as np

from waferscope.errors import ConfigError, DataError

UNKNOWN = "unknown"
SIGNALS = ("proba", "metric", "features", "detector")
# doubt + metric_knn + feature_knn until 2026-12-06 ~13:40; shape_knn and relative_knn joined after the fourth
# screen (fold 0, confirmed once on lot-grouped folds 1-4: mean leave-one-class-out AUROC 0.860 -> 0.879,
# known-class macro-F1 with abstention -0.017 of the closed-set model); shape_tail replaced feature_knn
# after the fifth (fold 0, confirmed once on folds 1-4: 0.879 -> 0.891, F1 gap -0.013; docs/search.md)
DEFAULT_PARTS = ("doubt", "metric_knn", "relative_knn", "shape_knn", "shape_tail")
# the shape descriptors of ``shape_knn``, by their names in the ``extended`` wafer features (the
# ``features`` signal): six of the 14 screened (docs/search.md "Fourth screen")
SHAPE_FEATURES = ("stats_largest_size", "stats_largest_radius", "stats_largest_elongation",
                  "largest_angle_concentration", "outer_hot_run", "longest_thinness")
# the descriptors of ``shape_tail``, by their names in the ``extended`` features: the 14 shape descriptors
# of the fourth screen (docs/search.md "Fifth screen")
TAIL_FEATURES = ("stats_largest_size", "stats_largest_radius", "stats_largest_elongation", "stats_largest_length",
                 "stats_largest_compactness", "largest_r_min", "largest_r_max", "largest_angle_concentration",
                 "largest_box_fill", "longest_thinness", "outer_hot_run", "middle_hot_run", "stats_fail_rate",
                 "fail_radius_spread")
# how many of the most surprising descriptors ``shape_tail`` adds up (a few: one odd column is often noise,
# all 14 dilute the odd ones again)
TAIL_TOP = 3
# the most training wafers kept as feature-space references (a seeded sample beyond): bounds the
# scorer's size and the per-wafer distance cost
MAX_FEATURE_REFS = 6000


def _ecdf(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of ``reference`` values at or below each of ``values`` (0..1)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="right") / max(len(ref), 1)


def _knn_mean(queries: np.ndarray, ref: np.ndarray, k: int, chunk: int = 2048, skip_self: bool = False,
              with_index: bool = False):
    """Mean Euclidean distance of each query to its ``k`` nearest rows of ``ref`` (chunked: bounded memory).

    ``skip_self``: the queries are ``ref`` itself, each row's own zero distance left out.
    ``with_index``: also return the (N, k) positions of the neighbours in ``ref``.
    """
    queries = np.asarray(queries, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    out = np.full(len(queries), np.inf)
    kk = min(k, len(ref) - int(skip_self))
    index = np.zeros((len(queries), max(kk, 0)), dtype=np.int64)
    if kk < 1:
        return (out, index) if with_index else out
    rr = (ref ** 2).sum(1)[None, :]
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk]
        d2 = np.maximum((q ** 2).sum(1)[:, None] - 2 * q @ ref.T + rr, 0)
        if skip_self:
            d2[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        if with_index:
            near = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
            out[s:s + chunk] = np.sqrt(np.take_along_axis(d2, near, axis=1)).mean(axis=1)
            index[s:s + chunk] = near
        else:
            out[s:s + chunk] = np.sqrt(np.partition(d2, kk - 1, axis=1)[:, :kk]).mean(axis=1)
    return (out, index) if with_index else out


def _doubt(scorer, s):
    return 1.0 - np.asarray(s["proba"], dtype=np.float64).max(axis=1)


def _metric_knn(scorer, s):
    chosen = np.asarray(s["proba"]).argmax(axis=1)
    vectors = np.asarray(s["metric"], dtype=np.float32)
    dist = np.full(len(vectors), np.inf)
    for c in np.unique(chosen):
        sel = chosen == c
        dist[sel] = _knn_mean(vectors[sel], scorer.class_vectors_[c], scorer.k)
    return dist


def _feature_knn(scorer, s):
    return _knn_mean(s["features"], scorer.feature_refs_, scorer.k)


def _shape_knn(scorer, s):
    cols = scorer.shape_columns_
    shapes, refs = _columns(s["features"], cols, "shape_knn"), scorer.feature_refs_[:, cols]
    dist = np.full(len(shapes), np.inf)
    for c in range(len(scorer.classes_)):  # the nearest class: a shape none of the known classes has
        dist = np.minimum(dist, _knn_mean(shapes, refs[scorer.feature_ref_labels_ == c], scorer.k))
    return dist


def _relative_knn(scorer, s):
    chosen = np.asarray(s["proba"]).argmax(axis=1)
    feats = np.asarray(s["features"], dtype=np.float32)
    ratio = np.full(len(feats), np.inf)
    for c in np.unique(chosen):
        sel, mine = chosen == c, np.flatnonzero(scorer.feature_ref_labels_ == c)
        dist, near = _knn_mean(feats[sel], scorer.feature_refs_[mine], scorer.k, with_index=True)
        if near.shape[1]:
            own = scorer.feature_ref_spread_[mine][near].mean(axis=1)
            ratio[sel] = dist / np.maximum(own, 1e-6)
    return ratio


def _neg_log_tails(values: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(N, F) ``-log`` of each value's two-sided empirical tail probability among the reference column.

    Smoothed (+1 / +2) so that a value beyond every reference gets a finite, size-aware surprise.
    """
    refs = np.sort(refs, axis=0)
    n = len(refs)
    out = np.empty(values.shape, dtype=np.float64)
    for j in range(values.shape[1]):
        below = (np.searchsorted(refs[:, j], values[:, j], side="right") + 1) / (n + 2)
        above = (n - np.searchsorted(refs[:, j], values[:, j], side="left") + 1) / (n + 2)
        out[:, j] = -np.log(np.minimum(1.0, 2 * np.minimum(below, above)))
    return out


def _shape_tail(scorer, s):
    cols = scorer.tail_columns_
    chosen = np.asarray(s["proba"]).argmax(axis=1)
    feats = _columns(s["features"], cols, "shape_tail")
    surprise = np.full(len(feats), np.inf)  # a class with no reference wafer: nothing is ordinary for it
    for c in np.unique(chosen):
        sel, mine = chosen == c, scorer.feature_ref_labels_ == c
        if mine.any():
            tails = _neg_log_tails(feats[sel], scorer.feature_refs_[mine][:, cols])
            surprise[sel] = np.sort(tails, axis=1)[:, -scorer.tail_top:].sum(axis=1)
    return surprise


def _columns(features, cols, part: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float32)
    if feats.shape[1] <= max(cols):
        raise ConfigError(f"the open-set part {part} reads the extended wafer features ({max(cols) + 1} or more "
                          f"columns); the features given have {feats.shape[1]}")
    return feats[:, cols]


def _detector(scorer, s):
    return np.asarray(s["detector"], dtype=np.float64)


# part name → (signals it needs, function(scorer, signals) → raw value per wafer, higher = stranger)
PARTS = {"doubt": (("proba",), _doubt), "metric_knn": (("proba", "metric"), _metric_knn),
         "feature_knn": (("features",), _feature_knn), "shape_knn": (("features",), _shape_knn),
         "relative_knn": (("proba", "features"), _relative_knn), "shape_tail": (("proba", "features"), _shape_tail),
         "detector": (("detector",), _detector)}
# the parts that compare with the training wafers' standardised features (feature_refs_)
FEATURE_PARTS = ("feature_knn", "shape_knn", "relative_knn", "shape_tail")
# ... and those that need the references' classes (feature_ref_labels_)
LABELLED_PARTS = ("shape_knn", "relative_knn", "shape_tail")


class OpenSetScorer:
    """``fit(train, train_labels, cal, classes)`` → self (``train``/``cal``: signal dicts).

    ``score(signals)`` → open-set scores (higher: less like any known class);
    ``predict(signals)`` → class names with ``unknown`` where the score passes the threshold.
    """

    def __init__(self, k: int = 10, parts: tuple[str, ...] = DEFAULT_PARTS, weights: tuple[float, ...] | None = None,
                 abstain_rate: float = 0.05, seed: int = 0, shape_features: tuple[str, ...] = SHAPE_FEATURES,
                 tail_features: tuple[str, ...] = TAIL_FEATURES, tail_top: int = TAIL_TOP):
        if not 0 <= abstain_rate < 1:
            raise ConfigError(f"abstain_rate must be in [0, 1), got {abstain_rate!r}")
        bad = sorted(set(parts) - set(PARTS))
        if bad or not parts:
            raise ConfigError(f"unknown open-set part(s) {bad}; choose from {sorted(PARTS)}")
        if weights is not None and (len(weights) != len(parts) or min(weights) < 0 or sum(weights) <= 0):
            raise ConfigError(f"weights must be {len(parts)} non-negative numbers, not all 0, got {weights!r}")
        self.k = int(k)
        self.parts = tuple(parts)
        self.weights = weights
        self.abstain_rate = abstain_rate
        self.seed = seed
        self.shape_features = tuple(shape_features)
        self.tail_features = tuple(tail_features)
        from waferscope.features.handcrafted import feature_names

        names = {n: i for i, n in enumerate(feature_names("extended"))}
        for what, chosen in (("shape_features", self.shape_features), ("tail_features", self.tail_features)):
            bad = sorted(set(chosen) - set(names))
            if bad or not chosen:
                raise ConfigError(f"{what} must name extended wafer features; unknown: {bad}")
        if not 1 <= int(tail_top) <= len(self.tail_features):
            raise ConfigError(f"tail_top must be 1..{len(self.tail_features)} (the tail features), got {tail_top!r}")
        self.tail_top = int(tail_top)
        self.shape_columns_ = [names[n] for n in self.shape_features]
        self.tail_columns_ = [names[n] for n in self.tail_features]

    def needs(self) -> set[str]:
        """Return the signals :meth:`score` reads."""
        return {n for p in self.parts for n in PARTS[p][0]}

    def _check(self, signals: dict, where: str) -> None:
        missing = sorted(self.needs() - {k for k, v in signals.items() if v is not None})
        if missing:
            raise ConfigError(f"the open-set scorer ({', '.join(self.parts)}) needs {', '.join(missing)} for the "
                              f"{where} wafers")

    def raw_parts(self, signals: dict) -> np.ndarray:
        """(N, parts) raw part values (before ranking)."""
        self._check(signals, "scored")
        return np.stack([PARTS[p][1](self, signals) for p in self.parts], axis=1)

    def fit(self, train: dict, train_labels, cal: dict, classes) -> "OpenSetScorer":
        """Learn the references from ``train`` and the calibration and threshold from ``cal``; return ``self``.

        ``train``: signals of known wafers the models trained on; ``cal``: of known wafers they did not.
        """
        self.fit_references(train, train_labels, classes)
        return self.calibrate(self.raw_parts(cal))

    def fit_references(self, train: dict, train_labels, classes) -> "OpenSetScorer":
        """Learn the known wafers the kNN parts measure distances to (no calibration yet: :meth:`calibrate`)."""
        needed = {"metric_knn": "metric", **{p: "features" for p in FEATURE_PARTS}}
        missing = sorted({v for k, v in needed.items() if k in self.parts and train.get(v) is None})
        if missing:
            raise ConfigError(f"the open-set scorer needs {', '.join(missing)} for the training wafers")
        self.classes_ = np.asarray([str(c) for c in classes])
        labels = np.asarray(train_labels).astype(str)
        if "metric_knn" in self.parts:
            vectors = np.asarray(train["metric"], dtype=np.float32)
            self.class_vectors_ = [vectors[labels == c] for c in self.classes_]
        else:
            self.class_vectors_ = [np.zeros((0, 1), np.float32) for _ in self.classes_]
        self.feature_refs_ = np.zeros((0, 1), np.float32)
        self.feature_ref_labels_ = np.zeros(0, np.int64)
        self.feature_ref_spread_ = np.zeros(0, np.float32)
        if set(FEATURE_PARTS) & set(self.parts):
            feats = np.asarray(train["features"], dtype=np.float32)
            index = {c: i for i, c in enumerate(self.classes_)}
            codes = np.asarray([index.get(c, -1) for c in labels], dtype=np.int64)
            if len(feats) > MAX_FEATURE_REFS:
                keep = np.sort(np.random.default_rng(self.seed).choice(len(feats), MAX_FEATURE_REFS, replace=False))
                feats, codes = feats[keep], codes[keep]
            self.feature_refs_, self.feature_ref_labels_ = feats, codes
            if "relative_knn" in self.parts:  # each reference's own kNN distance within its class
                spread = np.zeros(len(feats), np.float32)
                for c in range(len(self.classes_)):
                    mine = np.flatnonzero(codes == c)
                    spread[mine] = _knn_mean(feats[mine], feats[mine], self.k, skip_self=True)
                self.feature_ref_spread_ = np.where(np.isfinite(spread), spread, 0).astype(np.float32)
        return self

    def calibrate(self, cal_parts: np.ndarray) -> "OpenSetScorer":
        """Set the calibration and the threshold from raw part values (N, parts) of unseen known wafers.

        The wafers are known ones the models did not train on: :meth:`fit` passes the calibration
        wafers' parts; a cross-fitted scorer (:func:`waferscope.search.discover.crossfit_open_set`)
        passes out-of-fold ones.
        """
        cal_parts = np.asarray(cal_parts, dtype=np.float64)
        if cal_parts.ndim != 2 or cal_parts.shape[1] != len(self.parts) or not len(cal_parts):
            raise ConfigError(f"calibration parts must be (wafers, {len(self.parts)}), got {cal_parts.shape}")
        self.cal_parts_ = cal_parts
        self.threshold_ = (float(np.quantile(self._combine(self._rank(cal_parts)), 1 - self.abstain_rate))
                           if self.abstain_rate > 0 else float("inf"))
        return self

    def _rank(self, raw: np.ndarray) -> np.ndarray:
        cal = np.where(np.isfinite(self.cal_parts_), self.cal_parts_, np.finfo(np.float64).max)
        raw = np.where(np.isfinite(raw), raw, np.finfo(np.float64).max)
        return np.stack([_ecdf(cal[:, j], raw[:, j]) for j in range(len(self.parts))], axis=1)

    def _combine(self, ranks: np.ndarray) -> np.ndarray:
        w = np.ones(len(self.parts)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        return (ranks * w).sum(axis=1) / w.sum()

    def ranks(self, signals: dict) -> np.ndarray:
        """(N, parts) each part's rank among the calibration wafers (0..1)."""
        return self._rank(self.raw_parts(signals))

    def score(self, signals: dict) -> np.ndarray:
        """Return the open-set score of every wafer (weighted sum of the parts' ranks)."""
        return self._combine(self.ranks(signals))

    def predict(self, signals: dict, score: np.ndarray | None = None) -> np.ndarray:
        """Return the predicted class of every wafer, ``unknown`` where the score is over the threshold."""
        names = self.classes_[np.asarray(signals["proba"]).argmax(axis=1)].astype(object)
        score = self.score(signals) if score is None else score
        names[score > self.threshold_] = UNKNOWN
        return names

    # -- persistence: plain arrays + JSON ---------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """Return the (arrays, extras) to save."""
        arrays = {"cal_parts": self.cal_parts_.astype(np.float64), "feature_refs": self.feature_refs_,
                  "feature_ref_labels": self.feature_ref_labels_, "feature_ref_spread": self.feature_ref_spread_,
                  **{f"class_{i}": v for i, v in enumerate(self.class_vectors_)}}
        extras = {"k": self.k, "parts": list(self.parts), "weights": None if self.weights is None else list(self.weights),
                  "abstain_rate": self.abstain_rate, "seed": self.seed, "classes": self.classes_.tolist(),
                  "threshold": self.threshold_, "shape_features": list(self.shape_features),
                  "tail_features": list(self.tail_features), "tail_top": self.tail_top}
        return arrays, extras

    @classmethod
    def from_state(cls, arrays: dict, extras: dict, where="open-set scorer") -> "OpenSetScorer":
        """Rebuild a fitted scorer from :meth:`state`; a clear error naming ``where`` when damaged."""
        try:
            self = cls(k=int(extras["k"]), parts=tuple(extras["parts"]), weights=extras.get("weights"),
                       abstain_rate=float(extras["abstain_rate"]), seed=int(extras.get("seed", 0)),
                       shape_features=tuple(extras.get("shape_features", SHAPE_FEATURES)),
                       tail_features=tuple(extras.get("tail_features", TAIL_FEATURES)),
                       tail_top=int(extras.get("tail_top", TAIL_TOP)))
            self.classes_ = np.asarray([str(c) for c in extras["classes"]])
            self.threshold_ = float(extras["threshold"])
            self.cal_parts_ = np.asarray(arrays["cal_parts"], dtype=np.float64)
            self.feature_refs_ = np.asarray(arrays["feature_refs"], dtype=np.float32)
            # scorers saved before shape_knn / relative_knn have no reference labels (and need none)
            self.feature_ref_labels_ = np.asarray(arrays.get("feature_ref_labels", np.zeros(0)), dtype=np.int64)
            self.feature_ref_spread_ = np.asarray(arrays.get("feature_ref_spread", np.zeros(0)), dtype=np.float32)
            self.class_vectors_ = [np.asarray(arrays[f"class_{i}"], dtype=np.float32) for i in range(len(self.classes_))]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"damaged open-set scorer state: {exc}", where) from None
        if self.cal_parts_.ndim != 2 or self.cal_parts_.shape[1] != len(self.parts):
            raise DataError(f"damaged open-set scorer state: calibration parts of shape {self.cal_parts_.shape} "
                            f"for {len(self.parts)} parts", where)
        labelled = set(LABELLED_PARTS) & set(self.parts)
        if labelled and len(self.feature_ref_labels_) != len(self.feature_refs_):
            raise DataError(f"damaged open-set scorer state: {len(self.feature_ref_labels_)} reference labels for "
                            f"{len(self.feature_refs_)} feature references", where)
        if "relative_knn" in self.parts and len(self.feature_ref_spread_) != len(self.feature_refs_):
            raise DataError(f"damaged open-set scorer state: {len(self.feature_ref_spread_)} reference spreads for "
                            f"{len(self.feature_refs_)} feature references", where)
        return self


# HDBSCAN settings for the abstained wafers, chosen on lot-grouped fold 0 of WM-811K dev + dev2 among
# 216 (abstention 5/10/20 %, standardised features or their PCA to 10/20 dims, min_cluster_size
# 5/8/10/15, min_samples default/1/3, eom/leaf; docs/search.md): "leaf" selection with min_samples 1
# gave a cluster of purity >= 0.8 for every hidden class (8 of 8, against 2 of 8 for the library
# default "eom"), at the price of smaller clusters (lower recall: a class is split into several).
MIN_CLUSTER_SIZE = 8
MIN_SAMPLES = 1
CLUSTER_SELECTION = "leaf"


def discover_clusters(vectors: np.ndarray, min_cluster_size: int = MIN_CLUSTER_SIZE,
                      min_samples: int | None = MIN_SAMPLES, selection: str = CLUSTER_SELECTION) -> np.ndarray:
    """HDBSCAN cluster labels (-1: noise) of ``vectors``; fewer than ``min_cluster_size`` wafers: all -1."""
    from sklearn.cluster import HDBSCAN

    if selection not in ("eom", "leaf"):
        raise ConfigError(f"cluster selection must be 'eom' or 'leaf', got {selection!r}")

    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) < max(min_cluster_size, 2):
        return np.full(len(vectors), -1)
    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, cluster_selection_method=selection,
                   copy=True).fit_predict(vectors)


def best_cluster(clusters: np.ndarray, is_target: np.ndarray) -> dict:
    """Return the discovered cluster that best matches a hidden class (highest F1 of cluster vs class).

    Its purity (share of its wafers of the class), recall (share of the class's wafers in it), size.
    """
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
