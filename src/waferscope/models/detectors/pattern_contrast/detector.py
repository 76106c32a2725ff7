"""The ``pattern_contrast`` detector: normal maps against simulated defects, on pattern features.

Self-supervised anomaly detection with synthetic anomalies (the idea of CutPaste, Li et al. CVPR
2021, and DRAEM, Zavrtanik et al. ICCV 2021): the user gives normal maps only; the detector adds
maps from waferscope's synthetic generator — its eight defect patterns as the "anomalous" side and
its normal wafers beside the user's on the "normal" side — and trains gradient-boosted trees
(scikit-learn's ``HistGradientBoostingClassifier``, balanced classes) to tell the two apart on the
61 ``pattern`` features (:mod:`waferscope.features.pattern_stats` + :mod:`waferscope.features.shape`:
radial and angular fail profiles, cluster shapes, neighbourhood clustering). The image score is the
trees' log-odds of "anomalous".

What it assumes, stated plainly: no real defective wafer is used, but the generator's patterns are a
prior — a defect unlike all eight patterns (and unlike a normal wafer's statistics) may score lower
than it would under a purely density-based detector such as ``pattern_stats``. Use both when novel
failure modes matter.

Anomaly map: the local fail rate above the normal maps' ring baseline (as ``pattern_stats``).
Wafer maps only; image datasets get a clear error.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from waferscope.base import DetectionResult, Detector, Interval
from waferscope.data import WaferDataset
from waferscope.errors import ConfigError, RunDirError
from waferscope.features.handcrafted import extract_features, feature_names, map_chunks
from waferscope.features.pattern_stats import local_fail_rate
from waferscope.models.detectors.common import require_wafer_maps, training_normals
from waferscope.models.detectors.pattern_stats.anomaly_map import excess_fail_map, ring_baseline
from waferscope.models.trees import fit_trees, load_trees, tree_scores
from waferscope.registry import register

FEATURE_SET = "pattern"


def _score_chunk(maps, trees, baseline) -> tuple[np.ndarray, list[np.ndarray]]:
    """Log-odds and anomaly maps of a chunk of maps (the features in one compiled pass per map)."""
    from waferscope.features.fast import pattern_batch

    features = pattern_batch(maps)
    anomaly_maps = [excess_fail_map(np.asarray(w), baseline, local_fail_rate(np.asarray(w))) for w in maps]
    return tree_scores(trees, features)[:, 1], anomaly_maps


@register("pattern_contrast", kind="detector")
class PatternContrastDetector(Detector):
    """Gradient-boosted trees separating normal maps from generator-simulated defects.

    Parameters
    ----------
    n_synthetic
        Synthetic maps added at fit, the generator's classes in equal shares (by default its 8 defect
        patterns and its normal wafers, so 8/9 defects and 1/9 normal).
    patterns
        The defect patterns to simulate (``"|"``-separated or a list of WM-811K names; None = all 8).
        Leaving one out measures how the detector does on a defect type it never saw simulated.
    max_iter, learning_rate, max_leaf_nodes, l2_regularization
        The boosting settings (scikit-learn's names).
    seed
        Seeds the synthetic maps and the trees.
    n_jobs, progress
        Feature-extraction processes; progress bars.

    Attributes
    ----------
    n_train_
    ring_baseline_
    threshold_, threshold_info_
    trees_
    """

    _parameter_constraints = {"n_synthetic": [Interval(int, 1)]}

    def __init__(self, n_synthetic: int = 7500, patterns: str | list[str] | None = None, max_iter: int = 300,
                 learning_rate: float = 0.05, max_leaf_nodes: int = 15, l2_regularization: float = 1.0,
                 seed: int = 0, n_jobs: int = -1, progress: bool = True):
        self.n_synthetic = n_synthetic
        self.patterns = patterns
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.seed = seed
        self.n_jobs = n_jobs
        self.progress = progress

    def _features(self, maps) -> np.ndarray:
        return extract_features(maps, n_jobs=self.n_jobs, progress=bool(self.progress), feature_set=FEATURE_SET)

    def fit(self, dataset, **kwargs) -> "PatternContrastDetector":
        """Fit the trees on the normal maps against simulated defects; return ``self``."""
        from waferscope.data.synthetic import generate

        require_wafer_maps(dataset, "pattern_contrast")
        normals = training_normals(dataset)
        if int(self.n_synthetic) < 9:
            raise ConfigError(f"n_synthetic must be at least 9 (one map per generator class), got {self.n_synthetic}")
        synthetic = generate(int(self.n_synthetic), seed=self.seed, classes=self._synthetic_classes())
        train = WaferDataset.concat([normals, synthetic], name="pattern_contrast training")
        anomalous = ~train.is_normal
        self.trees_ = fit_trees(self._features(train.maps), anomalous, self.max_iter, self.learning_rate,
                                self.max_leaf_nodes, self.l2_regularization, self.seed, progress=bool(self.progress))
        self.ring_baseline_ = ring_baseline(normals.maps)
        self.n_train_ = len(normals)
        return self

    def _synthetic_classes(self) -> list[str]:
        from waferscope.data.classes import BASE_PATTERNS, NORMAL

        chosen = list(BASE_PATTERNS) if self.patterns is None else (
            self.patterns.split("|") if isinstance(self.patterns, str) else list(self.patterns))
        unknown = sorted(set(chosen) - set(BASE_PATTERNS))
        if unknown or not chosen:
            raise ConfigError(f"patterns must be WM-811K defect names from {list(BASE_PATTERNS)}, "
                              f"got {self.patterns!r}")
        return [*chosen, NORMAL]

    def score(self, dataset) -> DetectionResult:
        """Return the defect probability and excess-fail map of every map."""
        self._check_fitted()
        require_wafer_maps(dataset, "pattern_contrast")
        if len(dataset) == 0:
            return DetectionResult(scores=np.zeros(0), maps=[])
        maps = list(dataset.maps)  # die states checked above (require_wafer_maps)
        # Features, trees and anomaly maps all in the workers: the main process would otherwise add a
        # serial fifth to the time while they idle (docs/detection.md, throughput).
        parts = map_chunks(partial(_score_chunk, trees=self.trees_, baseline=self.ring_baseline_), maps,
                           self.n_jobs, bool(self.progress))
        return DetectionResult(scores=np.concatenate([scores for scores, _ in parts]),
                               maps=[m for _, chunk_maps in parts for m in chunk_maps])

    def _state(self):
        tensors = dict(self.trees_, ring_baseline=np.asarray(self.ring_baseline_, dtype=np.float64))
        return tensors, {"features": list(feature_names(FEATURE_SET)), "n_train": self.n_train_}

    def _load_state(self, tensors, extras) -> None:
        if list(extras.get("features", [])) != list(feature_names(FEATURE_SET)):
            raise RunDirError("pattern_contrast run computed with another feature list; refit it")
        if "ring_baseline" not in tensors:
            raise RunDirError("the saved pattern_contrast state is damaged: no ring_baseline")
        self.trees_ = load_trees(tensors, len(feature_names(FEATURE_SET)), "pattern_contrast")
        self.ring_baseline_ = tensors["ring_baseline"].numpy()
        self.n_train_ = int(extras.get("n_train", 0))
