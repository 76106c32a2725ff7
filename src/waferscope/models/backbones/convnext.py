"""ConvNeXt (Liu et al. 2022) written with torchvision's state-dict key names.

Layout, as in torchvision: ``features.0`` is the stem (``features.0.0`` conv, ``features.0.1``
LayerNorm2d), ``features.1/3/5/7`` are the four stages of ``CNBlock`` s (``block.0`` depthwise 7×7,
``block.2`` LayerNorm, ``block.3``/``block.5`` the inverted-bottleneck Linear layers,
``layer_scale``), ``features.2/4/6`` the downsampling layers (LayerNorm2d, 2×2 stride-2 conv), then
``classifier.0`` (LayerNorm2d) and ``classifier.2`` (Linear). convnext_tiny has 28,589,128 parameters.

``stem_stride`` (default 4, as published) can be 2 for small inputs (4× the cost); ``wafer_convnext``
is a narrow, shallow variant (dims 32/64/128/256, depths 2/2/4/2, stem stride 4) for 64×64 maps:
stage1..stage3 run at 16/8/4 px, ~850 maps/s on one thread (stem stride 2: ~170/s).
The stage outputs are named ``stage1``..``stage4`` for feature extraction (features.1/3/5/7).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from waferscope.registry import register

__all__ = ["ConvNeXt", "CNBlock", "LayerNorm2d", "convnext_tiny", "convnext_small", "convnext_base",
           "wafer_convnext"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an (N, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each position's channels."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole residual branches per sample (torchvision's mode="row")."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * noise.div_(keep)


class CNBlock(nn.Module):
    """ConvNeXt block: depthwise 7×7 convolution, LayerNorm, inverted MLP, layer scale and a residual."""

    def __init__(self, dim: int, layer_scale: float = 1e-6, stochastic_depth_prob: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth_prob = stochastic_depth_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block with its residual (and stochastic depth while training)."""
        out = self.layer_scale * self.block(x)
        return x + stochastic_depth(out, self.stochastic_depth_prob, self.training)


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al. 2022), torchvision's layout, with an optional small-input stem."""

    def __init__(self, dims: Sequence[int], depths: Sequence[int], stochastic_depth_prob: float = 0.0,
                 layer_scale: float = 1e-6, num_classes: int = 1000, stem_stride: int = 4, in_channels: int = 3):
        super().__init__()
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError("ConvNeXt needs 4 stage widths and 4 depths")
        layers: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=stem_stride, stride=stem_stride, bias=True),
            LayerNorm2d(dims[0], eps=1e-6))]
        total = sum(depths)
        block_id = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stage = []
            for _ in range(depth):
                sd_prob = stochastic_depth_prob * block_id / (total - 1.0) if total > 1 else 0.0
                stage.append(CNBlock(dim, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i < 3:
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6),
                                            nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))
        self.stage_channels = {f"stage{i + 1}": d for i, d in enumerate(dims)}
        self.stage_modules = {f"stage{i + 1}": 2 * i + 1 for i in range(4)}  # index into features

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stage's feature map."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits."""
        return self.classifier(self.avgpool(self.features(x)))


@register("convnext_tiny", kind="backbone")
def convnext_tiny(**kwargs) -> ConvNeXt:
    """Return ConvNeXt-T."""
    kwargs.setdefault("stochastic_depth_prob", 0.1)
    return ConvNeXt([96, 192, 384, 768], [3, 3, 9, 3], **kwargs)


@register("convnext_small", kind="backbone")
def convnext_small(**kwargs) -> ConvNeXt:
    """Return ConvNeXt-S."""
    kwargs.setdefault("stochastic_depth_prob", 0.4)
    return ConvNeXt([96, 192, 384, 768], [3, 3, 27, 3], **kwargs)


@register("convnext_base", kind="backbone")
def convnext_base(**kwargs) -> ConvNeXt:
    """Return ConvNeXt-B."""
    kwargs.setdefault("stochastic_depth_prob", 0.5)
    return ConvNeXt([128, 256, 512, 1024], [3, 3, 27, 3], **kwargs)


WAFER_CONVNEXT_CONFIG = {"dims": [32, 64, 128, 256], "depths": [2, 2, 4, 2], "stem_stride": 4,
                         "stochastic_depth_prob": 0.05}


@register("wafer_convnext", kind="backbone")
def wafer_convnext(**kwargs) -> ConvNeXt:
    """Return the small ConvNeXt the shipped wafer-domain weights are for."""
    cfg = dict(WAFER_CONVNEXT_CONFIG)
    cfg.update(kwargs)
    return ConvNeXt(**cfg)
