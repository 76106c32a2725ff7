"""Wafer-map denoising: keep the failing dies that form the pattern, turn the rest to "pass".

Three methods, compared in ``docs/explain.md`` against the synthetic ground-truth masks:

- ``gradcam``: keep failing dies where the Grad-CAM heat map (at die resolution) is relevant —
  above the Otsu threshold of the heat values of the wafer's failing dies (default), or above a
  quantile of them. The threshold is taken over failing dies because that is the choice being
  made: which fails belong to the pattern.
  This is seed 002's "Grad-CAM denoising".
- ``median``: a 3×3 median filter of the fail indicator on the wafer (the classic baseline).
- ``components``: drop connected components of failing dies smaller than ``min_size`` dies.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

from waferscope.data.classes import FAIL, PASS
from waferscope.errors import ConfigError


def relevance_threshold(heat: np.ndarray, candidates: np.ndarray, threshold: str | float = "otsu") -> float:
    """Return the heat value above which a die counts as relevant.

    ``"otsu"`` splits the heat values of the candidate dies in two by Otsu's method; a float q in
    (0, 1) keeps the top (1 − q) share of them; ``"q0.8"`` is the same as 0.8.
    """
    vals = heat[candidates]
    if vals.size == 0 or np.ptp(vals) == 0:
        return float(vals.max(initial=0.0))
    if threshold == "otsu":
        return float(threshold_otsu(vals))
    if isinstance(threshold, str) and threshold.startswith("q"):
        threshold = float(threshold[1:])
    q = float(threshold)
    if not 0.0 < q < 1.0:
        raise ConfigError(f"denoise threshold must be 'otsu' or a quantile in (0, 1), got {threshold!r}")
    return float(np.quantile(vals, q))


def denoise_gradcam(wafer: np.ndarray, heat: np.ndarray, threshold: str | float = "otsu") -> np.ndarray:
    """Keep failing dies whose heat ≥ the relevance threshold; others become pass."""
    fails = wafer == FAIL
    keep = heat >= relevance_threshold(heat, fails, threshold)
    out = wafer.copy()
    out[(wafer == FAIL) & ~keep] = PASS
    return out


def denoise_median(wafer: np.ndarray, size: int = 3) -> np.ndarray:
    """Return the map with the fails a ``size``×``size`` median filter removes turned to pass."""
    fail = ndimage.median_filter((wafer == FAIL).astype(np.uint8), size=size, mode="constant") > 0
    out = wafer.copy()
    out[wafer == FAIL] = PASS
    out[fail & (wafer > 0)] = FAIL
    return out


def denoise_components(wafer: np.ndarray, min_size: int = 6) -> np.ndarray:
    """Return the map with fail clusters smaller than ``min_size`` dies turned to pass."""
    fail = wafer == FAIL
    kept = remove_small_objects(fail, max_size=min_size - 1, connectivity=2) if min_size > 1 else fail
    out = wafer.copy()
    out[fail & ~kept] = PASS
    return out


def die_scores(denoised: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Die-level precision/recall/F1/IoU of the failing dies left after denoising vs a pattern mask."""
    pred = denoised == FAIL
    truth = mask.astype(bool)
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}
