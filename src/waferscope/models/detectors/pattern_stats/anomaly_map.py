"""The anomaly map of the feature detectors (``pattern_stats``, ``pattern_contrast``).

Per die: the local fail rate (window of 1/8 of the wafer) above the mean local rate that normal
maps have in the same radial ring, zero off the wafer. It shows where the excess failures are.
"""

from __future__ import annotations

import numpy as np

from waferscope.features.pattern_stats import RING_EDGES, _grid, local_fail_rate


def ring_baseline(maps) -> np.ndarray:
    """Mean local fail rate of the dies in each radial ring, over normal ``maps``."""
    total, count = np.zeros(len(RING_EDGES)), np.zeros(len(RING_EDGES))
    for wafer in maps:
        add_to_ring_baseline(total, count, np.asarray(wafer), local_fail_rate(np.asarray(wafer)))
    return total / np.maximum(count, 1)


def add_to_ring_baseline(total: np.ndarray, count: np.ndarray, wafer: np.ndarray, local: np.ndarray) -> None:
    """Accumulate one map's local fail rates into per-ring sums (in place)."""
    ring, _, _ = _grid(*wafer.shape)
    on = (wafer > 0).ravel()
    total += np.bincount(ring[on], weights=local.ravel()[on], minlength=len(total))
    count += np.bincount(ring[on], minlength=len(count))


def excess_fail_map(wafer: np.ndarray, baseline: np.ndarray, local_rate: np.ndarray | None = None) -> np.ndarray:
    """Per die, the local fail rate above ``baseline`` for its ring; 0 off the wafer (float32)."""
    wafer = np.asarray(wafer)
    local = local_fail_rate(wafer) if local_rate is None else local_rate
    ring, _, _ = _grid(*wafer.shape)
    excess = local - baseline[ring].reshape(wafer.shape)
    return np.where(wafer > 0, np.clip(excess, 0.0, None), 0.0).astype(np.float32)
