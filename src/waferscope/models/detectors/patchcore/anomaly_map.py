"""PatchCore anomaly maps: the per-patch nearest-memory distance on the feature grid.

The grid (B, h, w) is what a detector's ``_predict_batch`` returns; the shared post-processing in
:mod:`waferscope.models.detectors.common` then upsamples it bilinearly to the S×S network input,
smooths it with a Gaussian (σ = 4 px per 256 px, the paper's σ = 4 at 224–256 px), zeroes pixels
with no die and resizes each map to its wafer's own H×W.
"""

from __future__ import annotations

import numpy as np
import torch

from waferscope.models.detectors.common import postprocess_maps


def patch_grid(patch_scores: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w) per-patch distances → (B, h, w)."""
    return patch_scores.reshape(len(patch_scores), *grid)


def anomaly_maps(patch_scores: torch.Tensor, grid: tuple[int, int], input_size: int, sigma: float = 4.0,
                 valid: np.ndarray | None = None) -> torch.Tensor:
    """(B, h*w) per-patch distances → (B, S, S) smoothed maps at the network-input resolution."""
    return postprocess_maps(patch_grid(patch_scores, grid), input_size, sigma, valid)
