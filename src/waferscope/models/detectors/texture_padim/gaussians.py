"""Per-cell Gaussians of texture_padim accumulated image by image (memory independent of N).

PaDiM's fit keeps every training feature (N × C × G × G) to take per-cell means and covariances; at
one cell per canvas pixel (grid 128, C = 36) that is 1.6 GB for 666 images, growing with N. The
sufficient statistics are per-cell sums Σx and Σxxᵀ, so :class:`CellMoments` adds each batch's
contribution and forgets the batch. Sums are taken about a fixed per-cell shift (the first batch's
mean) in float64: Σxxᵀ − ΣxΣxᵀ/n loses precision when the mean is large against the spread, the
shifted form does not. Only the upper triangle of Σxxᵀ is stored (it is symmetric), which halves the
memory of the per-fold statistics of the calibration.

Moments are additive, so the calibration's "all folds but one" Gaussians are the total minus that
fold's moments — no second fit over the other folds' features.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

# float64 elements per temporary block (~32 MB), whatever the grid and batch
_BLOCK = 4_000_000


class CellMoments:
    """Shifted first and second moments of (N, C, G, G) features per cell, added batch by batch.

    Parameters
    ----------
    shift
        (G·G, C) float64 per-cell shift K; the sums are of x − K.
    """

    def __init__(self, shift: torch.Tensor):
        self.shift = shift
        p, c = shift.shape
        self.iu = torch.triu_indices(c, c)
        self.n = 0
        self.s1 = torch.zeros(p, c, dtype=torch.float64)
        self.s2 = torch.zeros(p, self.iu.shape[1], dtype=torch.float64)  # upper triangle of Σ(x−K)(x−K)ᵀ

    @classmethod
    def shift_from(cls, feats: torch.Tensor) -> torch.Tensor:
        """(G·G, C) float64 per-cell mean of a (B, C, G, G) batch: a shift near every cell's mean."""
        return feats.double().mean(0).flatten(1).T.contiguous()

    def _cells(self, n: int, c: int):
        # blocks of cells so that the (cells, n, C) and (cells, C, C) float64 temporaries stay ~32 MB
        step = max(1, _BLOCK // (max(n, c) * c))
        for p0 in range(0, self.s1.shape[0], step):
            yield slice(p0, min(self.s1.shape[0], p0 + step))

    def add(self, feats: torch.Tensor) -> None:
        """Add a (B, C, G, G) batch."""
        if len(feats) == 0:
            return
        flat = feats.flatten(2)  # (B, C, P), a view
        b, c, _ = flat.shape
        for sl in self._cells(b, c):
            x = flat[:, :, sl].permute(2, 0, 1).double() - self.shift[sl, None, :]  # (p, B, C)
            self.s1[sl] += x.sum(1)
            self.s2[sl] += (x.transpose(1, 2) @ x)[:, self.iu[0], self.iu[1]]
        self.n += b

    def __add__(self, other: "CellMoments") -> "CellMoments":
        """Return the moments of both sample sets (same shift)."""
        return self._combine(other, 1.0)

    def __sub__(self, other: "CellMoments") -> "CellMoments":
        """Return the moments of this set without ``other``'s samples (a subset of it, same shift)."""
        return self._combine(other, -1.0)

    def _combine(self, other: "CellMoments", sign: float) -> "CellMoments":
        out = CellMoments(self.shift)
        out.n = self.n + int(sign) * other.n
        out.s1 = self.s1 + sign * other.s1
        out.s2 = self.s2 + sign * other.s2
        return out

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (unbiased) std over all samples and cells, float32 (C,) each."""
        n, p = self.n, self.s1.shape[0]
        mean = (self.shift.sum(0) * n + self.s1.sum(0)) / (n * p)
        diag = self._diag_positions()
        d = self.shift - mean  # (P, C): Σ(x−m)² = Σ(x−K)² + 2(K−m)Σ(x−K) + n(K−m)²
        ss = (self.s2[:, diag] + 2 * d * self.s1 + n * d * d).sum(0)
        return mean.float(), (ss / max(1, n * p - 1)).sqrt().float()

    def _diag_positions(self) -> torch.Tensor:
        return torch.nonzero(self.iu[0] == self.iu[1]).flatten()

    def gaussians(self, channel_mean: torch.Tensor, channel_scale: torch.Tensor,
                  shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return per-cell mean (G·G, C) and regularised precision (G·G, C, C), float32.

        Of the features standardised by ``channel_mean`` / ``channel_scale``. Covariance unbiased (n − 1); ridge ``shrinkage · mean(diag cov) · I`` per cell, as PaDiM's.
        """
        if self.n < 2:
            raise ValueError("a covariance needs at least 2 samples")
        p, c = self.s1.shape
        cm, cs = channel_mean.double(), channel_scale.double()
        means = torch.empty(p, c, dtype=torch.float32)
        precisions = torch.empty(p, c, c, dtype=torch.float32)
        eye = torch.eye(c, dtype=torch.float64)
        for sl in self._cells(3, c):
            s1 = self.s1[sl]
            s2 = torch.zeros(s1.shape[0], c, c, dtype=torch.float64)
            s2[:, self.iu[0], self.iu[1]] = self.s2[sl]
            s2 = s2 + s2.transpose(1, 2) - torch.diag_embed(s2.diagonal(dim1=1, dim2=2))
            cov = (s2 - s1[:, :, None] * s1[:, None, :] / self.n) / (self.n - 1)
            cov = cov / (cs[:, None] * cs[None, :])
            ridge = float(shrinkage) * cov.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-8)
            means[sl] = ((self.shift[sl] + s1 / self.n - cm) / cs).float()
            precisions[sl] = torch.linalg.inv(cov + ridge[:, None, None] * eye).float()
        return means, precisions


def fold_moments(batches: Iterable[tuple[np.ndarray, torch.Tensor]], fold_of: np.ndarray,
                 n_folds: int) -> list[CellMoments]:
    """Return each fold's :class:`CellMoments` of a stream of (sample positions, (B, C, G, G) features).

    ``fold_of[i]``: the fold of sample ``i``. The first batch's per-cell mean is every fold's shift,
    so the folds' moments add up (``sum(moments[1:], moments[0])`` is the whole set's).
    """
    moments: list[CellMoments] = []
    for idx, f in batches:
        if not moments:
            moments = [CellMoments(CellMoments.shift_from(f)) for _ in range(n_folds)]
        for j in np.unique(fold_of[idx]):
            moments[j].add(f[torch.from_numpy(fold_of[idx] == j)])
    return moments
