"""Texture PaDiM anomaly map: per grid cell, the Mahalanobis distance to that cell's normal Gaussian."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def to_grid(features: torch.Tensor, boxes, stride: int, grid: int) -> torch.Tensor:
    """(N, C, h, w) canvas features → (N, C, grid, grid).

    Each image's own box, resampled bilinearly, so a cell means the same *relative* place of
    every image whatever its size or aspect ratio.
    """
    out = torch.empty((len(features), features.shape[1], grid, grid), dtype=features.dtype)
    for i, (top, left, nh, nw) in enumerate(boxes):
        r0, c0 = top // stride, left // stride
        h, w = max(1, -(-nh // stride)), max(1, -(-nw // stride))
        out[i] = F.interpolate(features[i:i + 1, :, r0:r0 + h, c0:c0 + w], size=(grid, grid), mode="bilinear",
                               align_corners=False)[0]
    return out


def from_grid(maps: torch.Tensor, boxes, size: int, sigma: float = 0.0) -> torch.Tensor:
    """(N, grid, grid) → (N, size, size) canvas maps.

    Each map stretched back onto its image box and smoothed there (Gaussian σ px, reflect padding at
    the box edge, so the edge is not pulled towards the empty canvas); 0 outside the box (the canvas
    padding is never scored).
    """
    from waferscope.models.detectors.common import gaussian_blur

    out = torch.zeros((len(maps), size, size), dtype=maps.dtype)
    for i, (top, left, nh, nw) in enumerate(boxes):
        m = F.interpolate(maps[i][None, None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        out[i, top:top + nh, left:left + nw] = gaussian_blur(m, sigma)[0] if min(nh, nw) > 1 else m[0]
    return out


def mahalanobis_maps(grid_features: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(N, C, G, G) features, (G·G, C) means, (G·G, C, C) precisions → (N, G, G) squared distances."""
    n, c, g, _ = grid_features.shape
    q = grid_features.permute(2, 3, 0, 1).reshape(g * g, n, c) - mean[:, None, :]
    d = torch.einsum("pnc,pcd,pnd->pn", q, precision, q)
    return d.clamp_min(0).T.reshape(n, g, g)
