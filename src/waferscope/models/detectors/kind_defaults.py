"""Parameters of the backbone detectors whose default depends on the kind of data they are fitted on.

A wafer map (three die states) and a device image (grey-level texture) need different features and
resolutions; one default cannot serve both. The detectors built on a backbone (PatchCore, ReConPatch,
STFPM, reverse distillation) therefore take

- ``backbone="auto"`` / ``pretrained="auto"``, resolved by
  :func:`waferscope.models.backbones.resolve_backbone` for the detector's backbone family
  (``_backbone_family``): the wafer-domain network on wafer maps, the formula-driven one on images;
- ``None`` for each parameter the class declares in ``_kind_defaults`` (``{param: {kind: value}}``),
  e.g. a larger ``input_size`` for images. The table is the declaration: docs/detection.md gives the
  measurements behind each entry.

``fit`` resolves them once, from the data it is given (:meth:`KindDefaults._resolve`), into the
learned ``resolved_`` dict, which the run saves: a reloaded run uses the values it was fitted with and
never guesses. A value the user sets is used as given. The wafer entries are the former defaults, so
wafer-map results are unchanged.
"""

from __future__ import annotations

from typing import Any

from waferscope.errors import RunDirError
from waferscope.models.backbones import AUTO, resolve_backbone


class KindDefaults:
    """Mixin: resolve ``"auto"`` backbones and ``None`` kind-dependent parameters at fit (see the module)."""

    _backbone_family: str = "resnet"
    _docstrings = {"resolved_": "The data kind fitted and what the data-kind defaults (``auto`` backbone and weights, "
                                "None parameters) resolved to for it; saved with the run."}
    _kind_defaults: dict[str, dict[str, Any]] = {}

    def _resolve(self, kind: str) -> dict[str, Any]:
        """Resolve every data-kind default for ``kind`` ("wafer" or "image") into ``resolved_`` and return it."""
        backbone, pretrained = resolve_backbone(self.backbone, self.pretrained, kind, self._backbone_family)
        out: dict[str, Any] = {"kind": kind, "backbone": backbone, "pretrained": pretrained}
        for name, by_kind in self._kind_defaults.items():
            value = getattr(self, name)
            out[name] = by_kind[kind] if value is None else value
        self.resolved_ = out
        return out

    def _p(self, name: str) -> Any:
        """Return the value in use of parameter ``name``: resolved (once fitted or during fit), else as set."""
        resolved = self.__dict__.get("resolved_")
        if resolved is not None and name in resolved:
            return resolved[name]
        return getattr(self, name)

    def network_input_size(self) -> int:
        """Side of the square network input in use (``input_size`` as resolved)."""
        return int(self._p("input_size"))

    def _restore_resolved(self, extras: dict[str, Any]) -> None:
        """Set ``resolved_`` from a saved run's extras; a run saved before the data-kind defaults had every value explicit."""
        saved = extras.get("resolved")
        if saved is None:
            open_ = [n for n in ("backbone", "pretrained") if getattr(self, n) == AUTO]
            open_ += [n for n in self._kind_defaults if getattr(self, n) is None]
            if open_:
                raise RunDirError(f"this {self.registry_name} run does not say what {', '.join(open_)} resolved to "
                                  "when it was fitted; retrain it")
            saved = {n: getattr(self, n) for n in ("backbone", "pretrained", *self._kind_defaults)}
        self.resolved_ = dict(saved)
