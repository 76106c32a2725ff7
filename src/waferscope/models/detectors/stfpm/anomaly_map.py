"""STFPM anomaly map: per-layer distance maps upsampled to the input size, then fused.

The paper multiplies the per-layer maps; ``mean`` and ``max`` fusion are offered as in seed 001.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from waferscope.models.detectors.stfpm.loss import layer_distance

FUSIONS = ("product", "mean", "max")


def fuse_maps(maps: Sequence[torch.Tensor], fusion: str = "product") -> torch.Tensor:
    """Combine per-layer maps: their product, mean or maximum."""
    stacked = torch.stack(list(maps))
    if fusion == "product":
        return stacked.prod(0)
    if fusion == "mean":
        return stacked.mean(0)
    if fusion == "max":
        return stacked.amax(0)
    raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")


def anomaly_map(teacher_features: Sequence[torch.Tensor], student_features: Sequence[torch.Tensor],
                size: tuple[int, int], fusion: str = "product") -> torch.Tensor:
    """→ (B, H, W) map at ``size`` (bilinear upsampling of each layer's distance map)."""
    per_layer = [F.interpolate(layer_distance(t, s)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
                 for t, s in zip(teacher_features, student_features)]
    return fuse_maps(per_layer, fusion)
