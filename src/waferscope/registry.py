"""Create models by name (after timm's registry), so configs and the CLI need no if-chains.

@register("cnn", kind="classifier")
class CompactCNNClassifier(Classifier): ...

create("cnn", kind="classifier", epochs=5)
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from waferscope.errors import ConfigError

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}

# Modules that register models when imported. Importing lazily keeps `waferscope data ...` fast.
_PROVIDERS = {
    "classifier": ["waferscope.models.classifiers"],
    "detector": ["waferscope.models.detectors"],
    "backbone": ["waferscope.models.backbones"],
}


def register(name: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator that registers a class under ``name`` for ``kind``."""
    def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not obj:
            raise RuntimeError(f"{kind} {name!r} registered twice")
        table[name] = obj
        try:
            obj.registry_name = name  # lets save() record the name load() needs
            obj.registry_kind = kind
        except (AttributeError, TypeError):
            pass
        return obj

    return deco


def _load(kind: str) -> dict[str, Callable[..., Any]]:
    for mod in _PROVIDERS.get(kind, []):
        importlib.import_module(mod)
    return _REGISTRY.get(kind, {})


def available(kind: str) -> list[str]:
    """Return the registered names of ``kind``, sorted."""
    return sorted(_load(kind))


def get(name: str, kind: str) -> Callable[..., Any]:
    """Return the class registered under ``name``; a ConfigError listing the names when unknown."""
    table = _load(kind)
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table)) or 'none'}")
    return table[name]


def create(name: str, kind: str, **params: Any) -> Any:
    """Return a new instance of the model ``name`` built with ``params``."""
    return get(name, kind)(**params)


def parse_spec(spec: str, kind: str) -> tuple[str, dict[str, Any]]:
    """Split ``name`` or ``name:param=value,...`` into (registered name, constructor overrides).

    Values are parsed as JSON when they are (``3``, ``false``, ``[1, 2]``). An unknown name is a
    ConfigError.
    """
    from waferscope.utils import parse_params

    name, _, params = spec.partition(":")
    if name not in available(kind):
        raise ConfigError(f"unknown {kind} {name!r}; `waferscope models` lists them")
    return name, parse_params([kv for kv in params.split(",") if kv])
