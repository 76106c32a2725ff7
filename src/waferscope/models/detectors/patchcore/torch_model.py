"""PatchCore's tensor parts (Roth et al. 2022, CVPR): locally aware patch features and kNN scoring.

- :class:`PatchEmbedding` turns mid-level backbone features (layer2 + layer3 by default) into one
  vector per feature-map cell: each layer is average-pooled over the 3×3 neighbourhood of every cell
  (the "locally aware" aggregation of §3.1), deeper layers are upsampled bilinearly to the first
  layer's grid, and the concatenation is adaptive-average-pooled along channels to ``embedding_dim``
  (the original code pools each layer to a common width first so every layer weighs the same;
  so do we). Channel pooling is linear, so it is precomputed as one (C, D) matrix.
- :func:`nearest_memory` finds, per patch, the nearest memory-bank rows with chunked matrix products
  (||a-b||² = ||a||² - 2a·b + ||b||²) so memory use stays bounded whatever the bank size.
- :func:`reweighted_image_score` is eq. 7: the largest patch distance s*, damped when the memory
  item m* it matched sits in a dense region of the bank (relative to m*'s own neighbourhood).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Keep each chunk's (rows × bank) distance block near this many float32 values (~32 MB).
_CHUNK_VALUES = 8_000_000


def channel_pooling_matrix(layer_channels: Sequence[int], embedding_dim: int) -> torch.Tensor:
    """Return the (sum(C_l), D) linear map equal to PatchCore's two adaptive average poolings over channels.

    Each layer's C_l channels are pooled (or repeated) to the widest layer's width, the layers are
    concatenated and the result is pooled to ``embedding_dim``.
    """
    width = max(layer_channels)
    blocks = []
    for c in layer_channels:
        eye = torch.eye(c)[:, None, :]  # (C_l, 1, C_l): each row is one input channel
        blocks.append(F.adaptive_avg_pool1d(eye, width)[:, 0, :])  # (C_l, width)
    per_layer = torch.block_diag(*blocks)  # (sum C_l, L*width)
    total = per_layer.shape[1]
    pooled = F.adaptive_avg_pool1d(torch.eye(total)[:, None, :], embedding_dim)[:, 0, :]  # (L*width, D)
    return (per_layer @ pooled).contiguous()


class PatchEmbedding(nn.Module):
    """Backbone feature maps (dict layer → (B, C_l, h_l, w_l)) → patch embeddings (B, D, h, w)."""

    def __init__(self, layer_channels: Sequence[int], embedding_dim: int = 128, patch_size: int = 3):
        super().__init__()
        self.patch_size = int(patch_size)
        self.embedding_dim = int(embedding_dim)
        self.register_buffer("pool_matrix", channel_pooling_matrix(list(layer_channels), self.embedding_dim),
                             persistent=False)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return the locally averaged, channel-pooled patch features of the layers' maps."""
        grid = features[0].shape[-2:]
        pad = self.patch_size // 2
        parts = []
        for f in features:
            if self.patch_size > 1:
                f = F.avg_pool2d(f, self.patch_size, stride=1, padding=pad, count_include_pad=False)
            if f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            parts.append(f)
        x = torch.cat(parts, 1)  # (B, C, h, w)
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(-1, c) @ self.pool_matrix  # (B*h*w, D)
        return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def nearest_memory(queries: torch.Tensor, memory: torch.Tensor, k: int = 1,
                   memory_sq_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (Q, k) and indices (Q, k) of each query's k nearest memory rows, ascending."""
    k = int(min(k, len(memory)))
    if memory_sq_norm is None:
        memory_sq_norm = (memory * memory).sum(1)
    memory_t = memory.t()
    rows = max(1, _CHUNK_VALUES // max(1, len(memory)))
    dists, idx = [], []
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        d2 = torch.addmm(memory_sq_norm, q, memory_t, beta=1.0, alpha=-2.0)
        d2.add_((q * q).sum(1, keepdim=True))
        if k == 1:
            val, ind = d2.min(1, keepdim=True)
        else:
            val, ind = d2.topk(k, dim=1, largest=False)
        dists.append(val.clamp_min_(0).sqrt_())
        idx.append(ind)
    if not dists:
        return queries.new_zeros((0, k)), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(dists), torch.cat(idx)


def reweighted_image_score(patch_scores: torch.Tensor, nearest_index: torch.Tensor, embedding: torch.Tensor,
                           memory: torch.Tensor, num_neighbors: int,
                           memory_sq_norm: torch.Tensor | None = None) -> torch.Tensor:
    """PatchCore eq. 7 image scores (B,).

    patch_scores, nearest_index: (B, P) distance to and index of each patch's nearest memory row;
    embedding: (B, P, D) the test patches. With b = num_neighbors nearest memory rows N_b(m*) of
    m* (m* included):  s = (1 - exp(s*) / Σ_{m ∈ N_b(m*)} exp(||m_test* - m||)) · s*.
    """
    b = len(patch_scores)
    s_star, where = patch_scores.max(1)  # (B,)
    if num_neighbors <= 1 or len(memory) < 2:
        return s_star
    rows = torch.arange(b)
    m_test = embedding[rows, where]  # (B, D)
    m_star = memory[nearest_index[rows, where]]  # (B, D)
    _, support = nearest_memory(m_star, memory, k=num_neighbors, memory_sq_norm=memory_sq_norm)  # (B, k)
    support_dist = torch.linalg.vector_norm(m_test[:, None, :] - memory[support], dim=-1)  # (B, k)
    weight = 1.0 - torch.exp(s_star - torch.logsumexp(support_dist, dim=1))
    return weight * s_star
