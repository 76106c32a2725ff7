"""ResNet / Wide-ResNet written with torchvision's state-dict key names (He et al. 2016).

Default construction matches torchvision exactly (same modules, same key names, same parameter
counts: resnet18 11,689,512; resnet50 25,557,032; wide_resnet50_2 68,883,240), so a torchvision
checkpoint saved to a local file loads with :func:`~waferscope.models.backbones.checkpoint.load_checkpoint`.

Two options for wafer maps (inputs of 32–64 px rather than 224):

- ``width``: multiplies every stage's channel count (0.5 → 32/64/128/256 for ResNet-18), for speed;
- ``small_input``: replaces the 7×7 stride-2 stem convolution with a 3×3 stride-1 one (the max-pool
  stays), so layer1 runs at 1/2 rather than 1/4 of the input size. A 64×64 wafer then gives
  32/16/8/4 maps at layer1..layer4 instead of 16/8/4/2, enough to localise a 3-die scratch.

Key names do not change with either option; only tensor shapes do.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from waferscope.registry import register

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "wide_resnet50_2",
           "wafer_resnet18", "FormulaResNet", "formula_resnet18"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions and a residual."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block with its residual."""
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1×1, 3×3 and 1×1 convolutions and a residual."""

    # torchvision's v1.5 bottleneck: the stride sits on the 3×3 convolution.
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block with its residual."""
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet (He et al. 2016), torchvision's layout, with width scaling and an optional small-input stem."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
                 width: float = 1.0, small_input: bool = False, in_channels: int = 3):
        super().__init__()
        self.groups = groups
        self.base_width = width_per_group
        self.dilation = 1
        self.width = width
        self.small_input = small_input
        planes = [max(1, int(round(p * width))) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)
        # Channels each stage outputs; feature extractors read this instead of probing.
        self.stage_channels = {f"layer{i + 1}": p * block.expansion for i, p in enumerate(planes)}

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, self.dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation))
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Return the stem's output (convolution, BatchNorm, ReLU, max-pool)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stage's feature map."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits."""
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


@register("resnet18", kind="backbone")
def resnet18(**kwargs) -> ResNet:
    """Return ResNet-18."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register("resnet34", kind="backbone")
def resnet34(**kwargs) -> ResNet:
    """Return ResNet-34."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register("resnet50", kind="backbone")
def resnet50(**kwargs) -> ResNet:
    """Return ResNet-50."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register("wide_resnet50_2", kind="backbone")
def wide_resnet50_2(**kwargs) -> ResNet:
    """Return Wide ResNet-50-2."""
    kwargs.setdefault("width_per_group", 64 * 2)
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


# The wafer-domain backbone shipped with waferscope (scripts/pretrain_wafer_backbone.py trains it):
# ResNet-18 at half width. It keeps the stride-4 stem: on a 64-px input (a 25–60-die wafer upsampled
# ~1.7×) that is a stride of ~2.3 dies, and measured on one thread it extracts layer2+layer3 ~6× faster
# than the small-input stem (1,030 vs 160 maps/s; docs/detection.md). Its config is also recorded in
# the JSON next to its weights, which create_backbone(pretrained="wafer") reads.
WAFER_RESNET18_CONFIG = {"width": 0.5, "small_input": False}


@register("wafer_resnet18", kind="backbone")
def wafer_resnet18(**kwargs) -> ResNet:
    """Return the small ResNet-18 the shipped wafer-domain weights are for."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **{**WAFER_RESNET18_CONFIG, **kwargs})


class FormulaResNet(ResNet):
    """ResNet whose stem first standardises each input image by its own mean and standard deviation.

    The formula-pretrained weights (``scripts/pretrain_formula_backbone.py``) were learned on
    procedural images of arbitrary brightness and contrast; standardising inside the network makes the
    features independent of how a detector scales its input (``[0, 1]`` grey replicated to 3
    channels, or an already z-scored canvas) and of the lighting of each shot. It has no parameters,
    so the state-dict keys stay torchvision's.
    """

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise each image (over channels and pixels), then the usual stem."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return super().stem((x - mean) / (std + 1e-5))


# The formula-driven backbone shipped with waferscope: the same ResNet-18 at half width as the wafer
# backbone (so the two compare weights for weights, not architectures), with per-image input
# standardisation. Trained on procedurally generated grey textures only (docs/detection.md,
# "A formula-driven image backbone").
FORMULA_RESNET18_CONFIG = WAFER_RESNET18_CONFIG


@register("formula_resnet18", kind="backbone")
def formula_resnet18(**kwargs) -> FormulaResNet:
    """Return the small, input-standardising ResNet-18 the shipped formula-driven weights are for."""
    return FormulaResNet(BasicBlock, [2, 2, 2, 2], **{**FORMULA_RESNET18_CONFIG, **kwargs})
