"""Reverse-distillation network: frozen encoder (teacher) → MFF + OCE bottleneck → decoder (student).

- Teacher encoder: a pre-trained backbone's first three stages, frozen (``encoder`` returns 3 maps at
  strides 4/8/16 with channels ``c1, c2, c3``).
- OCBE (one-class bottleneck embedding): multi-scale feature fusion (MFF) brings the three maps to
  stride 16 with strided 3×3 convs and concatenates them; the one-class embedding (OCE) is a
  layer4-like residual stage (stride 2, ``2·c3`` channels).
- Student decoder: the encoder mirrored, each stage opened by a 2×2 transposed conv that doubles
  the resolution, producing maps that should equal the teacher's at each scale.

``style="convnext"`` builds the bottleneck and decoder from ConvNeXt blocks (LayerNorm, depthwise
7×7, inverted MLP) instead of BatchNorm basic blocks, for a ConvNeXt teacher. ``feature_norm``
optionally normalises the teacher's maps before they are compared (see docs/detection_kd.md for why
a ConvNeXt teacher needs it).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from waferscope.models.detectors.reverse_distillation.anomaly_map import anomaly_map

STYLES = ("resnet", "convnext")
FEATURE_NORMS = ("none", "layernorm", "channel")


# ---- ResNet-style blocks ----------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """Return a 3×3 convolution without bias."""
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (the OCE is a stack of these, like ResNet's layer4)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block with its residual."""
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


class DeBasicBlock(nn.Module):
    """The decoder's mirror of a basic block: a 2×2 transposed conv upsamples when ``stride == 2``."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False) if stride == 2 else conv3x3(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.upsample = None
        if stride != 1 or cin != cout:
            up = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False) if stride == 2 else nn.Conv2d(cin, cout, 1, bias=False)
            self.upsample = nn.Sequential(up, nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the (upsampling) block with its residual."""
        idt = x if self.upsample is None else self.upsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


def conv_bn_relu(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    """Return a 3×3 convolution, BatchNorm and ReLU."""
    return nn.Sequential(conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# ---- ConvNeXt-style blocks --------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (B, C, H, W) map, as ConvNeXt uses between stages."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each position's channels."""
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """depthwise 7×7 → LayerNorm → 1×1 (4×) → GELU → 1×1, layer-scaled residual (Liu et al. 2022)."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block with its residual."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


def ln_down(cin: int, cout: int) -> nn.Sequential:
    """ConvNeXt's downsampling layer: LayerNorm then a 2×2 stride-2 conv."""
    return nn.Sequential(LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, cout, 2, 2))


def ln_up(cin: int, cout: int) -> nn.Sequential:
    """Its mirror: a 2×2 stride-2 transposed conv then LayerNorm."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2), LayerNorm2d(cout, eps=1e-6))


# ---- bottleneck and decoder -------------------------------------------------------------------------
class OCBE(nn.Module):
    """Multi-scale feature fusion + one-class embedding: (f1, f2, f3) → stride-32 embedding (2·c3 ch)."""

    def __init__(self, channels: Sequence[int], style: str = "resnet", n_blocks: int = 2):
        super().__init__()
        c1, c2, c3 = channels
        self.style = style
        if style == "resnet":
            self.fuse1 = nn.Sequential(conv_bn_relu(c1, c2), conv_bn_relu(c2, c3))
            self.fuse2 = conv_bn_relu(c2, c3)
            blocks = [BasicBlock(3 * c3, 2 * c3, stride=2)] + [BasicBlock(2 * c3, 2 * c3) for _ in range(n_blocks - 1)]
            self.oce = nn.Sequential(*blocks)
        elif style == "convnext":
            self.fuse1 = nn.Sequential(ln_down(c1, c2), ln_down(c2, c3))
            self.fuse2 = ln_down(c2, c3)
            self.fuse3 = LayerNorm2d(c3, eps=1e-6)
            self.oce = nn.Sequential(ln_down(3 * c3, 2 * c3), *[ConvNeXtBlock(2 * c3) for _ in range(n_blocks)])
        else:
            raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return the one-class bottleneck embedding of the encoder's feature maps."""
        f1, f2, f3 = feats
        if self.style == "convnext":
            f3 = self.fuse3(f3)
        return self.oce(torch.cat([self.fuse1(f1), self.fuse2(f2), f3], 1))


class Decoder(nn.Module):
    """Embedding (2·c3 ch, stride 32) → [d1, d2, d3] matching the encoder's (c1, c2, c3) maps."""

    def __init__(self, channels: Sequence[int], style: str = "resnet", n_blocks: int = 2):
        super().__init__()
        c1, c2, c3 = channels
        stages = []
        for cin, cout in ((2 * c3, c3), (c3, c2), (c2, c1)):
            if style == "resnet":
                stages.append(nn.Sequential(DeBasicBlock(cin, cout, stride=2),
                                            *[DeBasicBlock(cout, cout) for _ in range(n_blocks - 1)]))
            elif style == "convnext":
                stages.append(nn.Sequential(ln_up(cin, cout), *[ConvNeXtBlock(cout) for _ in range(n_blocks)]))
            else:
                raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
        self.stages = nn.ModuleList(stages)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Return the decoder's feature maps, shallowest last."""
        outs = []
        for stage in self.stages:
            z = stage(z)
            outs.append(z)
        return outs[::-1]


class FeatureNorm(nn.Module):
    """Normalise teacher maps before comparison.

    ``layernorm``: per position over channels (what the next ConvNeXt stage sees);
    ``channel``: per channel with mean/std measured on the training normals (set by ``calibrate``).
    """

    def __init__(self, channels: Sequence[int], mode: str = "none"):
        super().__init__()
        if mode not in FEATURE_NORMS:
            raise ValueError(f"unknown feature_norm {mode!r}; choose one of {', '.join(FEATURE_NORMS)}")
        self.mode = mode
        for i, c in enumerate(channels):
            self.register_buffer(f"mean{i}", torch.zeros(c))
            self.register_buffer(f"std{i}", torch.ones(c))

    @torch.no_grad()
    def calibrate(self, feats_batches: Sequence[Sequence[torch.Tensor]]) -> None:
        """Measure each layer's per-channel mean and std on training batches (``mode="channel"``)."""
        for i in range(len(feats_batches[0])):
            flat = torch.cat([b[i].transpose(0, 1).flatten(1) for b in feats_batches], 1)
            getattr(self, f"mean{i}").copy_(flat.mean(1))
            getattr(self, f"std{i}").copy_(flat.std(1).clamp_min(1e-4))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return the teacher maps normalised by ``mode``."""
        if self.mode == "none":
            return list(feats)
        if self.mode == "layernorm":
            return [F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2]).permute(0, 3, 1, 2) for f in feats]
        return [(f - getattr(self, f"mean{i}")[:, None, None]) / getattr(self, f"std{i}")[:, None, None]
                for i, f in enumerate(feats)]


class ReverseDistillationModel(nn.Module):
    """Reverse distillation: a frozen encoder, a trainable bottleneck and a decoder that rebuilds its features."""

    def __init__(self, encoder: nn.Module, channels: Sequence[int], style: str = "resnet", n_blocks: int = 2,
                 feature_norm: str = "none"):
        super().__init__()
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.feature_norm = FeatureNorm(channels, feature_norm)
        self.bottleneck = OCBE(channels, style, n_blocks)
        self.decoder = Decoder(channels, style, n_blocks)

    def train(self, mode: bool = True) -> "ReverseDistillationModel":
        """Set the training mode; the frozen encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the encoder's feature maps."""
        return list(self.encoder(x))

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """→ (teacher maps as compared, decoder maps). The bottleneck sees the raw teacher maps."""
        enc = self.encode(x)
        dec = self.decoder(self.bottleneck(enc))
        return self.feature_norm(enc), dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the anomaly map of a batch at the input's resolution."""
        enc, dec = self.features(x)
        return anomaly_map(enc, dec, tuple(x.shape[-2:]))
