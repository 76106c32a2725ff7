"""Texture kNN anomaly maps: each feature position's distance to its nearest normal patch feature.

Two searches: over one memory of patches from anywhere (:func:`distance_maps`, PatchCore's), or over the
normal patches at the same *relative* position ± ``radius`` cells of every memory image
(:func:`cell_distance_maps`, the position-aware search of PNI, Bae et al. ICCV 2023).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from waferscope.models.detectors.patchcore.torch_model import nearest_memory


def distance_maps(features: torch.Tensor, memory: torch.Tensor, memory_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Map (B, C, h, w) standardised features → (B, h, w) nearest-neighbour distance maps.

    PatchCore's blocked distance computation, never a full queries × memory matrix.
    """
    b, c, h, w = features.shape
    q = features.permute(0, 2, 3, 1).reshape(-1, c)
    d, _ = nearest_memory(q, memory, k=1, memory_sq_norm=memory_sq)
    return d[:, 0].view(b, h, w)


def cell_distance_maps(queries: torch.Tensor, memory: torch.Tensor, radius: int = 1,
                       exclude: torch.Tensor | None = None, block: int = 16) -> torch.Tensor:
    """(m, C, G, G) queries, (n, C, G, G) memory → (m, G, G) distance to the nearest memory patch.

    The search at each cell runs over the memory images' patches at the same cell and the cells up to
    ``radius`` away (cells outside the grid are not candidates). ``exclude[i]`` is a memory image that
    query ``i`` may not match (its own image: leave-one-image-out distances of the memory itself); at
    least two memory images are needed for that. Queries go ``block`` at a time, so the largest
    temporary is block × n × G × G.
    """
    m, _, g, g2 = queries.shape
    r = int(radius)
    out = torch.full((m, g, g2), float("inf"), dtype=queries.dtype)
    mem = F.pad(memory, (r, r, r, r))
    mem_sq = (mem * mem).sum(1)
    inside = F.pad(torch.ones(g, g2, dtype=torch.bool), (r, r, r, r))  # padded cells are no candidates
    for start in range(0, m, block):
        q = queries[start:start + block]
        q_sq = (q * q).sum(1)
        for di in range(2 * r + 1):
            for dj in range(2 * r + 1):
                ok = inside[di:di + g, dj:dj + g2]
                if not ok.any():
                    continue
                shifted = mem[:, :, di:di + g, dj:dj + g2]
                d2 = q_sq[:, None] + mem_sq[None, :, di:di + g, dj:dj + g2] - 2 * torch.einsum("bcij,ncij->bnij", q, shifted)
                if exclude is not None:
                    d2[torch.arange(len(q)), exclude[start:start + block]] = float("inf")
                best = d2.min(1).values.masked_fill(~ok, float("inf"))
                out[start:start + block] = torch.minimum(out[start:start + block], best)
    return out.clamp_min(0).sqrt()
