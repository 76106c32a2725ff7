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

from waferscope.models.detectors.common import gaussian_blur
from waferscope.models.detectors.texture_knn.torch_model import FilterBank

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
