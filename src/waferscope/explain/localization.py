"""How well a heat map (Grad-CAM or a detector's anomaly map) points at the true defect.

- **energy inside the mask**: the share of the map's (non-negative) mass that falls on the
  ground-truth pattern dies, counted over the wafer's dies only (off-wafer pixels carry no die);
- **pointing game** (Zhang et al. 2016): a hit when the map's maximum lies on a pattern die, or
  within ``tolerance`` dies of one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def energy_in_mask(heat: np.ndarray, mask: np.ndarray, on_wafer: np.ndarray | None = None) -> float:
    """Return the share of the (non-negative) heat inside ``mask`` (on the wafer only, when given)."""
    h = np.clip(heat, 0, None)
    if on_wafer is not None:
        h = np.where(on_wafer, h, 0.0)
    total = float(h.sum())
    return float(h[mask.astype(bool)].sum() / total) if total > 0 else 0.0


def pointing_hit(heat: np.ndarray, mask: np.ndarray, on_wafer: np.ndarray | None = None, tolerance: int = 1) -> bool:
    """Return whether the heat's peak lies within ``tolerance`` dies of ``mask``."""
    h = np.where(on_wafer, heat, -np.inf) if on_wafer is not None else heat
    peak = np.unravel_index(int(np.argmax(h)), h.shape)
    target = mask.astype(bool)
    if tolerance > 0:
        target = ndimage.binary_dilation(target, structure=np.ones((3, 3), bool), iterations=tolerance)
    return bool(target[peak])
