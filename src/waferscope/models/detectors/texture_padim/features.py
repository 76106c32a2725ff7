"""Large-scale channels for texture_padim: broad brightness and texture-energy bands.

The filter bank (σ ≤ 4 px, energy over 7 px) describes texture locally; a defect that is a broad band
of another grinding texture or brightness (magnetic tile's `uneven`, a quarter of the tile on
average) looks locally like normal texture and is only visible as a *region* whose level differs.
These channels measure that level over large windows:

- brightness: the grey canvas smoothed at each coarse σ;
- energy: per fine σ the squared responses Gx², Gy² (texture strength per direction — grinding
  streaks are directional) and the squared Hessian norm Gxx² + Gyy² + 2·Gxy² (fine structure),
  smoothed at each coarse σ, as logarithms (a ratio of energies becomes a difference, which a
  Gaussian models well);

each made relative to the image's own level (minus its mean over the image box), so a tile that is
globally brighter or rougher is not abnormal — a *part* of it that differs from the rest is.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from waferscope.models.detectors.common import gaussian_blur
from waferscope.models.detectors.texture_knn.torch_model import FilterBank, local_energy
from waferscope.models.detectors.texture_padim.anomaly_map import to_grid

# the fine scales whose energy is measured: the grinding / polishing texture lives at 1–2 px of the
# canvas; coarser responses are already smooth and are in the filter bank itself
LARGE_FINE_SIGMAS = (1.0, 2.0)


def large_scale_channels(x: torch.Tensor, boxes, fine_sigmas: Sequence[float],
                         coarse_sigmas: Sequence[float]) -> torch.Tensor:
    """Turn (B, 1, S, S) canvases into (B, len(coarse)·(1 + 3·len(fine)), S, S) large-scale channels.

    Each channel is minus its mean over the image's own box. Per coarse σ: [brightness, (Gx², Gy²,
    |H|²) per fine σ].
    """
    b, _, s, _ = x.shape
    r = FilterBank(fine_sigmas, 0, 1).to(x.dtype).responses(x)
    energy = []
    for i in range(len(fine_sigmas)):
        gx, gy, gxx, gyy, gxy = (r[:, 6 * i + k] for k in range(1, 6))
        energy += [gx ** 2, gy ** 2, gxx ** 2 + gyy ** 2 + 2 * gxy ** 2]
    energy = torch.stack(energy, 1).flatten(0, 1)  # (B·E, S, S)
    out = []
    for sigma in coarse_sigmas:
        sigma = float(sigma)
        bright = gaussian_blur(x[:, 0], sigma)[:, None]
        # floor 1e-4: the canvas is standardised (unit variance), so this is far below any texture
        en = torch.log(gaussian_blur(energy, sigma) + 1e-4).view(b, -1, s, s)
        out += [bright, en]
    f = torch.cat(out, 1)
    for i, (top, left, nh, nw) in enumerate(boxes):
        f[i] -= f[i, :, top:top + nh, left:left + nw].mean((1, 2))[:, None, None]
    return f


def pool_cells(x: torch.Tensor, k: int, how: str) -> torch.Tensor:
    """(B, C, k·G, k·G) → (B, C, G, G) over k × k blocks.

    ``"avg"`` the mean; ``"max"`` the signed value of largest magnitude (a thin line's response
    survives whole instead of being averaged with the texture beside it); ``"energy"`` the root mean
    square (signless).
    """
    if how == "avg":
        return F.avg_pool2d(x, k)
    if how == "energy":
        return F.avg_pool2d(x * x, k).sqrt()
    mx, mn = F.max_pool2d(x, k), -F.max_pool2d(-x, k)
    return torch.where(mx.abs() >= mn.abs(), mx, mn)


def fine_channels(x: torch.Tensor, boxes, sigmas: Sequence[float], energy_window: int, factor: int, grid: int,
                  pool: str) -> torch.Tensor:
    """Filter-bank channels of a finer canvas, pooled onto the ``grid`` of relative positions.

    (B, 1, S', S') canvases at ``factor`` × the main canvas's size → (B, 12·len(sigmas), grid, grid):
    per σ the six Gaussian derivatives (pooled by ``pool``; under ``"energy"`` the order-0 one, a grey
    level, by its mean) and
    their local energies (window ``energy_window`` px of this canvas, pooled by the mean), then the
    bank's 3 × 3 mean. Hairline cracks a few native px wide are sub-pixel on the main canvas; here
    they are still resolved when the responses are taken.
    """
    r = FilterBank(sigmas, 0, 1).to(x.dtype).responses(x)
    k = int(factor)
    e = local_energy(r, energy_window)
    rg = to_grid(r, boxes, 1, k * grid)
    order0 = torch.zeros(rg.shape[1], dtype=torch.bool)
    order0[::6] = True
    pooled = pool_cells(rg, k, pool)
    if pool == "energy":
        pooled = torch.where(order0[None, :, None, None], F.avg_pool2d(rg, k), pooled)
    f = torch.cat([pooled, F.avg_pool2d(to_grid(e, boxes, 1, k * grid), k)], 1)
    return F.avg_pool2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3, 1)
