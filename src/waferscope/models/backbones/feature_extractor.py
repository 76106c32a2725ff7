"""Frozen multi-layer feature extraction from any backbone (PatchCore, STFPM, RD teachers...).

``FeatureExtractor(backbone, layers=("layer2", "layer3"))(x)`` returns ``{name: feature map}`` for
the named submodules, in the order given. It hooks the modules' outputs and stops the forward pass
as soon as the deepest requested layer has run, so layer4 and the head cost nothing.

Names are submodule paths (``layer2``, ``layer3.1``, ``features.3``, ``0``); ConvNeXt's
``stage1``..``stage4`` are aliases for ``features.1/3/5/7``. The backbone is frozen (no gradients)
and stays in eval mode (BatchNorm uses its stored statistics) even if ``train()`` is called.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from waferscope.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Done(Exception):
    """Raised from the last hook to skip the rest of the network."""


def resolve_layer_name(backbone: nn.Module, name: str) -> str:
    """Return the module path of layer ``name`` in ``backbone`` (a stage alias resolved)."""
    aliases = getattr(backbone, "stage_modules", None)
    if aliases and name in aliases:
        return f"features.{aliases[name]}"
    return name


class FeatureExtractor(nn.Module):
    """Intermediate feature maps of a backbone, by layer name, via forward hooks (optionally frozen)."""

    def __init__(self, backbone: nn.Module, layers: Sequence[str] = ("layer2", "layer3"),
                 input_norm: str | None = None, frozen: bool = True):
        super().__init__()
        if isinstance(layers, str):
            layers = (layers,)
        self.backbone = backbone
        self.layers = tuple(layers)
        self.input_norm = input_norm
        self.frozen = frozen
        names = dict(backbone.named_modules())
        self._paths = [resolve_layer_name(backbone, n) for n in self.layers]
        unknown = [n for n, p in zip(self.layers, self._paths) if p not in names]
        if unknown:
            top = [n for n, _ in backbone.named_children()]
            raise ConfigError(f"backbone {type(backbone).__name__} has no layer(s) {unknown}; "
                              f"top-level modules: {', '.join(top)}")
        self._outputs: dict[str, torch.Tensor] = {}
        self._active = False
        for name, path in zip(self.layers, self._paths):
            names[path].register_forward_hook(self._make_hook(name))
        if input_norm not in (None, "imagenet"):
            raise ConfigError(f"unknown input_norm {input_norm!r}; use None or 'imagenet'")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if frozen:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        self.backbone.eval()

    def _make_hook(self, name: str):
        def hook(_module, _inputs, output):
            if not self._active:  # another extractor (or a plain call) is running this backbone
                return
            self._outputs[name] = output
            if len(self._outputs) == len(self.layers):
                raise _Done

        return hook

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Set the training mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen extractor keeps its BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the feature maps of the chosen layers for a batch ``x``."""
        if self.input_norm == "imagenet":
            x = (x - self.mean) / self.std
        self._outputs = {}
        self._active = True
        try:
            self.backbone(x)
        except _Done:
            pass
        finally:
            self._active = False
        out, self._outputs = self._outputs, {}
        missing = [n for n in self.layers if n not in out]
        if missing:
            raise ConfigError(f"layers {missing} did not run in the backbone's forward pass")
        return {n: out[n] for n in self.layers}

    @torch.no_grad()
    def feature_info(self, input_size: int = 64, in_channels: int = 3) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) of each layer's output for a square input of ``input_size``."""
        was_training = self.training
        self.eval()
        feats = self(torch.zeros(1, in_channels, input_size, input_size))
        self.train(was_training)
        return {n: tuple(f.shape[1:]) for n, f in feats.items()}
