"""The ``pattern_stats`` detector: a Gaussian fitted to pattern statistics of normal wafer maps.

Fit: the :mod:`.features` statistics (radial fail profile, size / position / shape of the largest
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

from waferscope.base import DetectionResult, Detector
from waferscope.errors import ConfigError, DataError
from waferscope.models.detectors.common import batch_slices, progress, training_normals
from waferscope.models.detectors.pattern_stats.features import FEATURE_NAMES, _grid, extract, local_fail_rate
from waferscope.registry import register

_CHUNK = 1024  # maps per progress step


def _require_wafers(dataset) -> None:
    if dataset.kind != "wafer":
        raise DataError("pattern_stats models die-state wafer maps, not images; use autoencoder, stfpm, "
                        "reverse_distillation, efficientad or patchcore for images", dataset.name)


@register("pattern_stats", kind="detector")
class PatternStatsDetector(Detector):
    """Mahalanobis distance of wafer pattern statistics to those of normal maps.

    shrinkage
        None: Ledoit-Wolf's optimal shrinkage of the covariance (default); a number in [0, 1] fixes it.
    verbose
        a progress bar over large sets.
    """

    def __init__(self, shrinkage: float | None = None, verbose: bool = True):
        self.shrinkage = shrinkage
        self.verbose = verbose

    def _features(self, maps, desc: str) -> np.ndarray:
        chunks = list(batch_slices(len(maps), _CHUNK))
        parts = [extract(maps[sl]) for sl in progress(chunks, desc=desc, enabled=bool(self.verbose) and len(chunks) > 4)]
        return np.concatenate(parts) if parts else extract([])

    def fit(self, dataset, **kwargs) -> "PatternStatsDetector":
        from sklearn.covariance import LedoitWolf, ShrunkCovariance

        _require_wafers(dataset)
        normals = training_normals(dataset)
        if len(normals) < 2:
            raise DataError(f"pattern_stats needs at least 2 normal maps to fit a covariance, got {len(normals)}",
                            dataset.name)
        if self.shrinkage is not None and not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ConfigError(f"shrinkage must be None or in [0, 1], got {self.shrinkage}")
        feats = self._features(normals.maps, "pattern_stats fit")
        self.mean_ = feats.mean(0)
        self.scale_ = np.where(feats.std(0) > 1e-12, feats.std(0), 1.0)
        z = (feats - self.mean_) / self.scale_
        cov = LedoitWolf() if self.shrinkage is None else ShrunkCovariance(shrinkage=float(self.shrinkage))
        cov.fit(z)
        self.location_ = cov.location_
        self.precision_ = cov.precision_
        self.ring_baseline_ = self._ring_baseline(normals.maps)
        self.n_train_ = len(normals)
        return self

    @staticmethod
    def _ring_baseline(maps) -> np.ndarray:
        """Mean local fail rate of the normal maps' dies in each radial ring."""
        total, count = np.zeros(5), np.zeros(5)
        for m in maps:
            ring, _, _ = _grid(*m.shape)
            on = (m > 0).ravel()
            total += np.bincount(ring[on], weights=local_fail_rate(m).ravel()[on], minlength=5)
            count += np.bincount(ring[on], minlength=5)
        return total / np.maximum(count, 1)

    def _distances(self, feats: np.ndarray) -> np.ndarray:
        d = (feats - self.mean_) / self.scale_ - self.location_
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision_, d), 0.0))

    def anomaly_map(self, wafer: np.ndarray) -> np.ndarray:
        ring, _, _ = _grid(*wafer.shape)
        excess = local_fail_rate(wafer) - self.ring_baseline_[ring].reshape(wafer.shape)
        return np.where(wafer > 0, np.clip(excess, 0.0, None), 0.0).astype(np.float32)

    def score(self, dataset) -> DetectionResult:
        self._check_fitted()
        _require_wafers(dataset)
        scores = self._distances(self._features(dataset.maps, "score pattern_stats"))
        return DetectionResult(scores=scores, maps=[self.anomaly_map(np.asarray(m)) for m in dataset.maps])

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
