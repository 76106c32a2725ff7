"""Backbones written here with torchvision state-dict key names (torchvision does not import beside the CPU torch wheel).

    create_backbone("resnet18")                          # random init, torchvision layout
    create_backbone("resnet18", pretrained="~/r18.pth")  # a torchvision checkpoint from a local file
    create_backbone("wafer_resnet18", pretrained="wafer")  # the wafer-domain weights shipped in the package
    create_backbone("formula_resnet18", pretrained="formula")  # grey-texture weights learned on procedural images
    resolve_backbone("auto", "auto", kind="image")       # ("formula_resnet18", "formula"): the default by data kind

Every backbone is also in the registry under kind ``"backbone"`` (``registry.available("backbone")``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from torch import nn

from waferscope import registry
from waferscope.errors import ConfigError
from waferscope.models.backbones import convnext, pdn, resnet  # noqa: F401  (registers the backbones)
from waferscope.models.backbones.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from waferscope.models.backbones.feature_extractor import FeatureExtractor

__all__ = ["create_backbone", "FeatureExtractor", "load_checkpoint", "read_state_dict", "save_checkpoint",
           "wafer_weights_path", "wafer_weights_info", "shipped_backbones", "SHIPPED_DOMAINS", "AUTO",
           "AUTO_BACKBONES", "shipped_domain", "resolve_backbone"]


# Weights shipped inside the package, by domain (the ``pretrained=`` value that asks for them). Each
# file's JSON says its domain; files written before the field existed are wafer weights.
SHIPPED_DOMAINS = ("wafer", "formula")


def wafer_weights_path(name: str) -> Path:
    """Path of the shipped wafer-domain weights of backbone ``name`` (may not exist)."""
    return Path(str(resources.files("waferscope") / "weights" / f"{name}.safetensors"))


def wafer_weights_info(name: str) -> dict:
    """Return the JSON that describes the shipped weights: construction kwargs and training provenance."""
    path = wafer_weights_path(name).with_suffix(".json")
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def shipped_backbones(domain: str = "wafer") -> list[str]:
    """Names of the backbones whose ``domain`` weights ship in the package (``pretrained=domain``)."""
    folder = wafer_weights_path("x").parent
    if not folder.is_dir():
        return []
    known = set(registry.available("backbone"))
    return sorted(p.stem for p in folder.glob("*.safetensors")
                  if p.stem in known and wafer_weights_info(p.stem).get("domain", "wafer") == domain)


# ---- the default backbone by data kind ------------------------------------------------------------
AUTO = "auto"

# What ``backbone="auto"`` means, by the family of network a detector is built around and the kind of
# data it is fitted on. Wafer maps: the shipped wafer-domain networks, with which every wafer-map result
# was measured (so "auto" on wafer maps is exactly the former default). Images: the formula-driven
# ResNet-18, which beat the wafer weights and a random initialisation on every detector measured on
# device images (docs/detection.md, "A formula-driven image backbone"). No ConvNeXt was pre-trained on
# formula images, so that family has no image entry (its detector takes wafer maps only).
AUTO_BACKBONES: dict[str, dict[str, str]] = {
    "resnet": {"wafer": "wafer_resnet18", "image": "formula_resnet18"},
    "convnext": {"wafer": "wafer_convnext"},
}


def shipped_domain(name: str) -> str | None:
    """Return the domain of the weights shipped for backbone ``name`` ("wafer", "formula"), or None if none ship."""
    if not wafer_weights_path(name).is_file():
        return None
    return wafer_weights_info(name).get("domain", "wafer")


def resolve_backbone(backbone: str, pretrained: str | Path | bool | None, kind: str,
                     family: str = "resnet") -> tuple[str, str | Path | bool | None]:
    """Return ``(backbone, pretrained)`` with ``"auto"`` resolved for data of ``kind`` ("wafer" or "image").

    ``backbone="auto"`` is :data:`AUTO_BACKBONES` ``[family][kind]``; ``pretrained="auto"`` is the
    weights shipped for the (resolved) backbone, or None (seeded random init) when none ship. Any
    other value is the caller's choice and is returned unchanged. A detector stores the result as
    learned state, so a reloaded run never resolves again.
    """
    if backbone == AUTO:
        options = AUTO_BACKBONES.get(family, {})
        if kind not in options:
            raise ConfigError(f"backbone='auto' has no {family} backbone for {kind} data (it has one for "
                              f"{', '.join(options) or 'none'}); name a registered backbone")
        backbone = options[kind]
    if isinstance(pretrained, str) and pretrained == AUTO:
        pretrained = shipped_domain(backbone)
    return backbone, pretrained


def create_backbone(name: str, pretrained: str | Path | bool | None = None, **kwargs) -> nn.Module:
    """Build backbone ``name``; ``pretrained`` is None (random init).

    ``"wafer"`` (shipped wafer-domain weights), ``"formula"`` (shipped weights learned on procedural
    grey images, for ``formula_resnet18``) or a local checkpoint path. ImageNet weights are never
    downloaded.
    """
    factory = registry.get(name, "backbone")
    if pretrained in (None, False, "", "none"):
        return factory(**kwargs)
    if pretrained is True or pretrained in SHIPPED_DOMAINS:
        domain = "wafer" if pretrained is True else str(pretrained)
        path = wafer_weights_path(name)
        info = wafer_weights_info(name)  # {} when there is none
        if not path.is_file() or info.get("domain", "wafer") != domain:
            shipped = shipped_backbones(domain)
            raise ConfigError(f"no {domain}-pretrained weights are shipped for backbone {name!r}; "
                              f"shipped: {', '.join(shipped) or 'none'}")
        cfg = {**info.get("kwargs", {}), **kwargs}
        return load_checkpoint(factory(**cfg), path, drop_head=True)
    if pretrained == "imagenet":
        raise ConfigError("ImageNet weights cannot be downloaded here: save a torchvision checkpoint to a "
                          "local file and pass its path as pretrained=")
    return load_checkpoint(factory(**kwargs), pretrained, drop_head=True)
