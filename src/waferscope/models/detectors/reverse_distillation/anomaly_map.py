"""Reverse-distillation anomaly map: Σ_k upsample(1 − cos) over the scales.

The paper then blurs the sum with a Gaussian (σ = 4 px at 256×256 input); the detector does that
with the shared post-processing (``smoothing_sigma=4``, σ per 256 px of input, so σ = 1 px at 64 px).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from waferscope.models.detectors.reverse_distillation.loss import cosine_distance_map


def anomaly_map(encoder_features: Sequence[torch.Tensor], decoder_features: Sequence[torch.Tensor],
                size: tuple[int, int]) -> torch.Tensor:
    """→ (B, H, W) sum over scales of the bilinearly upsampled 1 − cos maps."""
    total = None
    for e, d in zip(encoder_features, decoder_features):
        m = F.interpolate(cosine_distance_map(e, d)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        total = m if total is None else total + m
    return total
