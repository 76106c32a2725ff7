"""Texture kNN anomaly map: each feature position's distance to its nearest normal patch feature."""

from __future__ import annotations

import torch

from waferscope.models.detectors.patchcore.torch_model import nearest_memory


def distance_maps(features: torch.Tensor, memory: torch.Tensor, memory_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Map (B, C, h, w) standardised features → (B, h, w) nearest-neighbour distance maps.

    PatchCore's blocked distance computation, never a full queries × memory matrix.
    """
    b, c, h, w = features.shape
    q = features.permute(0, 2, 3, 1).reshape(-1, c)
    d, _ = nearest_memory(q, memory, k=1, memory_sq_norm=memory_sq)
    return d[:, 0].view(b, h, w)
