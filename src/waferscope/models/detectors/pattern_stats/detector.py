"""The ``pattern_stats`` detector: a Gaussian fitted to pattern statistics of normal wafer maps.

Fit: the :mod:`waferscope.features.pattern_stats` statistics (radial fail profile, size / position / shape of the largest
failing cluster, cluster count, local fail-rate peak) of every normal training map, standardised,
and a Gaussian with a Ledoit-Wolf shrunk covariance (scikit-learn) — the feature-space density model
of Rippel et al. (ICPR 2020), here on wafer statistics instead of CNN features. Score: the Mahalanobis
distance of a map's statistics to that Gaussian. No training loop, no network: it fits in a second
and scores thousands of maps per second on one core.

Anomaly map: per die, the local fail rate (window of 1/8 of the wafer) above the mean local rate the
normal training maps have in the same radial ring, zero where there is no die. It shows where the
excess failures are; the image score comes from the statistics, not from this map.

Wafer maps only (the statistics are about dies); image datasets get a clear error.
"""

from __future__ import annotations

import numpy as np

from waferscope.base import DetectionResult, Detector, Interval
from waferscope.errors import ConfigError, DataError
from waferscope.models.detectors.common import batch_slices, progress, require_wafer_maps, training_normals
from waferscope.features.pattern_stats import FEATURE_NAMES, local_fail_rate, pattern_features
from waferscope.models.detectors.pattern_stats.anomaly_map import add_to_ring_baseline, excess_fail_map
from waferscope.registry import register

_CHUNK = 1024  # maps per progress step


@register("pattern_stats", kind="detector")
class PatternStatsDetector(Detector):
    """Mahalanobis distance of wafer pattern statistics to those of normal maps.

    Parameters
    ----------
    shrinkage
        None: Ledoit-Wolf's optimal shrinkage of the covariance (default); a number in [0, 1] fixes it.
    progress
        A progress bar over large sets.

    Attributes
    ----------
    location_
        Location of the shrunk covariance of the standardised statistics.
    mean_
        Mean of each pattern statistic over the normal maps.
    n_train_
    precision_
        Precision matrix of that covariance (the Mahalanobis metric).
    ring_baseline_
    scale_
        Standard deviation of each statistic (1 where constant).
    threshold_, threshold_info_
    """

    _parameter_constraints = {"shrinkage": [Interval(float, 0, 1), None]}

    def __init__(self, shrinkage: float | None = None, progress: bool = True):
        self.shrinkage = shrinkage
        self.progress = progress

    def _statistics(self, maps, desc: str, per_map) -> np.ndarray:
        """(N, len(FEATURE_NAMES)) statistics of ``maps``.

        Each map's local fail rate is computed once and also handed to ``per_map(wafer, local_rate)``
        (ring baseline at fit, anomaly map at scoring).
        """
        feats = np.zeros((len(maps), len(FEATURE_NAMES)))
        chunks = list(batch_slices(len(maps), _CHUNK))
        for sl in progress(chunks, desc=desc, enabled=bool(self.progress) and len(chunks) > 4):
            for i in range(sl.start, sl.stop):
                wafer = np.asarray(maps[i])
                local = local_fail_rate(wafer)
                feats[i] = pattern_features(wafer, local)
                per_map(wafer, local)
        return feats

    def fit(self, dataset, **kwargs) -> "PatternStatsDetector":
        """Fit the statistics' Gaussian on the normal maps of ``dataset``; return ``self``."""
        from sklearn.covariance import LedoitWolf, ShrunkCovariance

        require_wafer_maps(dataset, "pattern_stats")
        normals = training_normals(dataset)
        if len(normals) < 2:
            raise DataError(f"pattern_stats needs at least 2 normal maps to fit a covariance, got {len(normals)}",
                            dataset.name)
        if self.shrinkage is not None and not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ConfigError(f"shrinkage must be None or in [0, 1], got {self.shrinkage}")
        ring_total, ring_count = np.zeros(5), np.zeros(5)
        feats = self._statistics(normals.maps, "pattern_stats fit",
                                 lambda wafer, local: add_to_ring_baseline(ring_total, ring_count, wafer, local))
        std = feats.std(0)
        self.mean_ = feats.mean(0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        z = (feats - self.mean_) / self.scale_
        cov = LedoitWolf() if self.shrinkage is None else ShrunkCovariance(shrinkage=float(self.shrinkage))
        cov.fit(z)
        self.location_ = cov.location_
        self.precision_ = cov.precision_
        # the mean local fail rate of the normal maps' dies in each radial ring
        self.ring_baseline_ = ring_total / np.maximum(ring_count, 1)
        self.n_train_ = len(normals)
        return self

    def _distances(self, feats: np.ndarray) -> np.ndarray:
        d = (feats - self.mean_) / self.scale_ - self.location_
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision_, d), 0.0))

    def anomaly_map(self, wafer: np.ndarray, local_rate: np.ndarray | None = None) -> np.ndarray:
        """Per die, the local fail rate above the normals' baseline for its ring; 0 off the wafer."""
        return excess_fail_map(wafer, self.ring_baseline_, local_rate)

    def score(self, dataset) -> DetectionResult:
        """Return the Mahalanobis distance and excess-fail map of every map."""
        self._check_fitted()
        require_wafer_maps(dataset, "pattern_stats")
        maps: list[np.ndarray] = []
        feats = self._statistics(dataset.maps, "score pattern_stats",
                                 lambda wafer, local: maps.append(self.anomaly_map(wafer, local)))
        return DetectionResult(scores=self._distances(feats), maps=maps)

    def _state(self):
        tensors = {name: np.asarray(getattr(self, name + "_"), dtype=np.float64)
                   for name in ("mean", "scale", "location", "precision", "ring_baseline")}
        return tensors, {"features": list(FEATURE_NAMES), "n_train": self.n_train_}

    def _load_state(self, tensors, extras) -> None:
        from waferscope.errors import RunDirError

        if list(extras.get("features", [])) != list(FEATURE_NAMES):
            raise RunDirError("pattern_stats run computed with another feature list; refit it")
        for name in ("mean", "scale", "location", "precision", "ring_baseline"):
            setattr(self, name + "_", np.asarray(tensors[name], dtype=np.float64))
        self.n_train_ = int(extras.get("n_train", 0))
