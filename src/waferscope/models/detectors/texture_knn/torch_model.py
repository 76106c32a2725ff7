"""A fixed filter bank: Gaussian derivatives (orders 0–2) at several scales, plus their local energy.

Gaussian-derivative ("N-jet") responses are the classic description of grey-level texture that needs
no learning (Koenderink & van Doorn 1987; Leung & Malik 2001 use the same family as a texton filter
bank). Each response is scale-normalised (× σ^order) so the scales are comparable; the local energy
(mean |response| over a window) adds the texture statistics that a single position does not show.
Every output channel is then averaged over a 3×3 neighbourhood (PatchCore's "locally aware" patch
features) and pooled to the feature stride.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def gaussian_kernels(sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D Gaussian and its first and second derivatives, radius ⌈3σ⌉, float32."""
    r = max(1, int(math.ceil(3 * sigma)))
    xs = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-xs ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    d1 = -xs / sigma ** 2 * g
    d2 = (xs ** 2 / sigma ** 4 - 1 / sigma ** 2) * g
    return g, d1, d2


def local_energy(r: torch.Tensor, window: int) -> torch.Tensor:
    """Mean |r| over a ``window`` × ``window`` neighbourhood of each pixel (reflect padding), same size.

    As two 1-D means (the same average as one 2-D mean up to float rounding, window/2 × fewer
    operations).
    """
    k = int(window)
    e = F.avg_pool2d(F.pad(r.abs(), (k // 2,) * 4, mode="reflect"), (k, 1), 1)
    return F.avg_pool2d(e, (1, k), 1)


class FilterBank(nn.Module):
    """(B, 1, S, S) → (B, C, S/stride, S/stride) with C = 6·len(sigmas)·(2 if energy else 1).

    Per σ: G, σ·Gx, σ·Gy, σ²·Gxx, σ²·Gyy, σ²·Gxy (reflect padding, separable convolutions).
    """

    def __init__(self, sigmas: Sequence[float] = (1.0, 2.0, 4.0), energy_window: int = 7, stride: int = 4):
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        self.energy_window = int(energy_window)
        self.stride = int(stride)
        for i, s in enumerate(self.sigmas):
            g, d1, d2 = gaussian_kernels(s)
            self.register_buffer(f"g{i}", g, persistent=False)
            self.register_buffer(f"d1_{i}", d1 * s, persistent=False)
            self.register_buffer(f"d2_{i}", d2 * s * s, persistent=False)

    @property
    def out_channels(self) -> int:
        """Return the number of feature channels."""
        return 6 * len(self.sigmas) * (2 if self.energy_window > 0 else 1)

    @staticmethod
    def _sep(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
        ry, rx = (len(ky) - 1) // 2, (len(kx) - 1) // 2
        x = F.conv2d(F.pad(x, (0, 0, ry, ry), mode="reflect"), ky.view(1, 1, -1, 1))
        return F.conv2d(F.pad(x, (rx, rx, 0, 0), mode="reflect"), kx.view(1, 1, 1, -1))

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """Return the Gaussian derivative filter responses of a batch."""
        out = []
        for i in range(len(self.sigmas)):
            g, d1, d2 = getattr(self, f"g{i}"), getattr(self, f"d1_{i}"), getattr(self, f"d2_{i}")
            # blurring first (G) and deriving from the blurred image would be cheaper but would not
            # reflect-pad the same; six separable passes per σ are cheap at these sizes
            out += [self._sep(x, g, g), self._sep(x, g, d1), self._sep(x, d1, g),
                    self._sep(x, g, d2), self._sep(x, d2, g), self._sep(x, d1, d1)]
        return torch.cat(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the filter-bank features of a batch (responses and local energies, at ``stride``)."""
        f = self.responses(x)
        if self.energy_window > 0:
            f = torch.cat([f, local_energy(f, self.energy_window)], 1)
        f = F.avg_pool2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3, 1)
        return F.avg_pool2d(f, self.stride) if self.stride > 1 else f
