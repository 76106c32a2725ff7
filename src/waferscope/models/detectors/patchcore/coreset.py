"""Memory-bank subsampling for PatchCore: approximate greedy coreset (k-center greedy).

Roth et al. 2022 ("Towards Total Recall in Industrial Anomaly Detection", §3.2): pick the point
farthest from everything picked so far, repeatedly, so the kept patches cover the whole feature
distribution (minimax facility location) rather than its dense middle. Distances are computed in a
seeded Gaussian random projection of the features (Johnson–Lindenstrauss) to make each of the
n_select passes over the N candidates cheap; the kept rows are returned as indices into the
original (unprojected) features.

The size of the bank is the smaller of ``ratio × N`` and the number of rows that fit in
``max_memory_mb`` (10^6 bytes per MB).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from waferscope.errors import ConfigError

BYTES_PER_MB = 1_000_000


def coreset_size(n_candidates: int, dim: int, ratio: float, max_memory_mb: float | None = None,
                 bytes_per_value: int = 4) -> int:
    """Return the number of memory-bank rows: ``ratio × n_candidates``, capped by the memory budget, at least 1."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"coreset ratio must be in (0, 1], got {ratio}")
    n = max(1, int(math.ceil(ratio * n_candidates)))
    if max_memory_mb is not None:
        if max_memory_mb <= 0:
            raise ConfigError(f"max_memory_mb must be positive, got {max_memory_mb}")
        cap = int(max_memory_mb * BYTES_PER_MB // (dim * bytes_per_value))
        if cap < 1:
            raise ConfigError(f"max_memory_mb={max_memory_mb} cannot hold a single {dim}-dim patch feature")
        n = min(n, cap)
    return min(n, n_candidates)


def gaussian_projection(in_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """Return a seeded (in_dim, out_dim) Gaussian projection matrix scaled to preserve distances on average."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(in_dim, out_dim, generator=gen) / math.sqrt(out_dim)


def k_center_greedy(features: torch.Tensor | np.ndarray, n_select: int, projection_dim: int | None = 128,
                    seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Return the indices (n_select,) of a greedy k-center coreset of ``features`` (N, D).

    Starts from one seeded random row, then repeatedly adds the row whose distance to the nearest
    selected row is largest. With ``projection_dim`` (< D) distances are measured after a seeded
    Gaussian projection to that many dimensions.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (N, D) feature matrix, got shape {tuple(x.shape)}")
    n = len(x)
    n_select = int(min(max(n_select, 1), n))
    if projection_dim and projection_dim < x.shape[1]:
        x = x @ gaussian_projection(x.shape[1], projection_dim, seed)
    # Augmented rows [x, 1] and centre [-2c, ||c||²] give ||x||² + (-2x·c + ||c||²) = ||x - c||² in
    # one fused matrix-vector pass (addmv); with the running minimum and argmax that is 3 passes per
    # step over the N candidates, which is what bounds the greedy loop (it is memory-bound).
    x_aug = torch.cat([x, torch.ones(n, 1)], 1).contiguous()
    sq_norm = (x * x).sum(1)
    gen = torch.Generator().manual_seed(int(seed))
    selected = torch.empty(n_select, dtype=torch.long)
    current = int(torch.randint(n, (1,), generator=gen))
    min_sq_dist = torch.full((n,), float("inf"))
    step = torch.empty(n)
    centre = torch.empty(x_aug.shape[1])
    iterator = range(n_select)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="coreset", unit="pt", mininterval=1.0, leave=False)
    for i in iterator:
        selected[i] = current
        torch.mul(x_aug[current], -2.0, out=centre)
        centre[-1] = sq_norm[current]
        torch.addmv(sq_norm, x_aug, centre, out=step)
        torch.minimum(min_sq_dist, step, out=min_sq_dist)
        min_sq_dist[current] = -1.0  # never pick a row twice (duplicates have distance 0 anyway)
        current = int(torch.argmax(min_sq_dist))
    return selected
