"""EfficientAD's patch description networks (Batzner, Heckler & König, WACV 2024, Tables 6–7).

PDN-S (EfficientAD-S):  Conv 4×4/128 p3 ReLU → AvgPool 2×2 s2 p1 → Conv 4×4/256 p3 ReLU →
AvgPool 2×2 s2 p1 → Conv 3×3/256 p1 ReLU → Conv 4×4/out p0.
PDN-M (EfficientAD-M):  Conv 4×4/256 p3 ReLU → AvgPool → Conv 4×4/512 p3 ReLU → AvgPool →
Conv 1×1/512 ReLU → Conv 3×3/512 p1 ReLU → Conv 4×4/out p0 ReLU → Conv 1×1/out.

Each output pixel describes a 33×33 input patch. The paper uses the paddings above; ``padding=False``
drops them (as the authors' released code does), which shrinks the output by 64 px for a 256 input
and 4× downsamples overall either way. ``width`` scales the hidden channels (1.0 = published) so a
wafer-sized PDN stays fast on a CPU; ``out_channels`` is 384 for the teacher and for each half of
the student (the student of EfficientAD outputs 2×384 channels).
"""

from __future__ import annotations

from torch import nn

from waferscope.registry import register

__all__ = ["pdn_small", "pdn_medium"]


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


@register("pdn_small", kind="backbone")
def pdn_small(out_channels: int = 384, padding: bool = True, width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """Return EfficientAD's small patch description network (PDN-S)."""
    p = 1 if padding else 0
    c1, c2 = _ch(128, width), _ch(256, width)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size=4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p),
        nn.Conv2d(c1, c2, kernel_size=4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p),
        nn.Conv2d(c2, c2, kernel_size=3, padding=1 * p), nn.ReLU(inplace=True),
        nn.Conv2d(c2, out_channels, kernel_size=4),
    )


@register("pdn_medium", kind="backbone")
def pdn_medium(out_channels: int = 384, padding: bool = True, width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """Return EfficientAD's medium patch description network (PDN-M)."""
    p = 1 if padding else 0
    c1, c2 = _ch(256, width), _ch(512, width)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size=4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p),
        nn.Conv2d(c1, c2, kernel_size=4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p),
        nn.Conv2d(c2, c2, kernel_size=1), nn.ReLU(inplace=True),
        nn.Conv2d(c2, c2, kernel_size=3, padding=1 * p), nn.ReLU(inplace=True),
        nn.Conv2d(c2, out_channels, kernel_size=4), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
    )
