"""The estimator contract every classifier and detector follows (after scikit-learn's).

- configuration lives in the constructor, stored unchanged under the same names;
- ``fit(dataset)`` learns and returns ``self``; learned state ends in ``_``;
- ``get_params`` / ``clone`` rebuild an unfitted twin from the configuration;
- ``save(run_dir)`` / ``load(run_dir)`` write and read a run directory: ``model.json`` (name, kind,
  params, waferscope version, format version, JSON-able learned state) and ``weights.safetensors``
  (tensors; no pickle, so loading a run runs no code).

Subclasses implement ``_state()`` → ``(tensors, extras)`` and ``_load_state(tensors, extras)``.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from waferscope import __version__
from waferscope.errors import RunDirError
from waferscope.utils import replace_folder

RUN_FORMAT = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


class Estimator:
    registry_name: str = ""
    registry_kind: str = ""

    # ---- configuration --------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def clone(self) -> "Estimator":
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @property
    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RunDirError(f"{type(self).__name__} is not fitted: call fit() or load a run directory")

    # ---- persistence ----------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def _load_state(self, tensors: dict[str, Any], extras: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory atomically: a temp folder renamed into place when complete.

        An existing non-empty ``run_dir`` is replaced only with ``overwrite=True``: a trained model is
        often the result of hours, and a typo in a path must not erase it."""
        self._check_fitted()
        if not overwrite and Path(run_dir).exists() and (not Path(run_dir).is_dir() or any(Path(run_dir).iterdir())):
            raise RunDirError("already exists and is not empty; save(..., overwrite=True) replaces it", run_dir)
        from safetensors.torch import save_file
        import torch

        run_dir = Path(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        tensors, extras = self._state()
        tensors = {k: (torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
                   .detach().cpu().contiguous() for k, v in tensors.items()}
        doc = {
            "waferscope_run_format": RUN_FORMAT,
            "waferscope_version": __version__,
            "kind": self.registry_kind,
            "name": self.registry_name,
            "class": type(self).__name__,
            "params": _jsonable(self.get_params()),
            "extras": _jsonable(extras),
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
        try:
            save_file(tensors, str(tmp / WEIGHTS))
            (tmp / MODEL_JSON).write_text(json.dumps(doc, indent=2))
            replace_folder(tmp, run_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return run_dir


def read_run_header(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / MODEL_JSON
    if not run_dir.is_dir():
        raise RunDirError("not a run directory (no such folder)", run_dir)
    if not path.is_file():
        raise RunDirError(f"not a run directory: {MODEL_JSON} is missing", run_dir)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{MODEL_JSON} is unreadable ({exc})", run_dir) from None
    if not isinstance(doc, dict) or doc.get("waferscope_run_format") != RUN_FORMAT:
        raise RunDirError(
            f"run format {doc.get('waferscope_run_format') if isinstance(doc, dict) else '?'} "
            f"written by waferscope {doc.get('waferscope_version', '?') if isinstance(doc, dict) else '?'}; "
            f"this version {__version__} reads format {RUN_FORMAT}: retrain or convert it", run_dir)
    return doc


def load_run(run_dir: str | Path, kind: str | None = None) -> Estimator:
    """Load any saved estimator; with ``kind`` set, refuse a run of another kind."""
    from safetensors.torch import load_file

    from waferscope import registry

    doc = read_run_header(run_dir)
    if kind is not None and doc.get("kind") != kind:
        raise RunDirError(f"this run holds a {doc.get('kind')} ({doc.get('name')}), not a {kind}", run_dir)
    cls = registry.get(doc["name"], doc["kind"])
    # Options removed since the run was saved (measured as no help) are dropped if they were off;
    # a run that used one cannot be rebuilt faithfully and says so.
    params = dict(doc["params"])
    for name, off in getattr(cls, "removed_params", {}).items():
        if name in params:
            if params.pop(name) != off:
                raise RunDirError(f"this {doc['name']} run uses the option {name!r}, which waferscope no "
                                  f"longer has; retrain it", run_dir)
    est = cls(**params)
    wpath = Path(run_dir) / WEIGHTS
    try:
        tensors = load_file(str(wpath)) if wpath.exists() else {}
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise RunDirError(f"{WEIGHTS} is corrupt ({exc})", run_dir) from None
    est._load_state(tensors, doc.get("extras", {}))
    return est


def resolve_bundled_name(bundled: dict[str, Path], which: str, kind: str,
                         aliases: dict[str, str] | None = None) -> str:
    """The current name of a bundled model: ``which`` itself, or the model an old name (an alias)
    stands for, with a deprecation note on stderr. An unknown name is a clear error."""
    import sys

    from waferscope.errors import ConfigError

    aliases = aliases or {}
    if which in aliases:
        new = aliases[which]
        print(f"note: bundled {kind} {which!r} is now called {new!r}; the old name will be removed",
              file=sys.stderr)
        return new
    if which not in bundled:
        raise ConfigError(f"unknown bundled {kind} {which!r}; choose one of {', '.join(bundled)}")
    return which


def load_bundled(bundled: dict[str, Path], which: str, kind: str,
                 aliases: dict[str, str] | None = None) -> Estimator:
    """One of the models shipped with waferscope: ``bundled`` maps a name (``gbm``,
    ``pattern_contrast``, …) to its run directory inside the package, ``aliases`` old names to new
    ones; an unknown name or a missing model is a clear error."""
    which = resolve_bundled_name(bundled, which, kind, aliases)
    if not (Path(bundled[which]) / MODEL_JSON).is_file():
        command = "classify" if kind == "classifier" else "detect"
        raise RunDirError(f"no bundled {kind} is installed: pass --run with a run directory from "
                          f"`waferscope {command} train`", bundled[which])
    return load_run(bundled[which], kind=kind)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---- the two model families ---------------------------------------------------------------------
class Classifier(Estimator):
    """fit(dataset) on labelled maps; predict_proba → (N, n_classes) over ``classes_``."""

    registry_kind = "classifier"
    # Why a class prior (models/classifiers/prior.py) cannot move this model's probabilities, or None
    # when they are class-balanced posteriors (every classifier trained with class weights).
    prior_refusal: str | None = None

    def fit(self, dataset, **kwargs) -> "Classifier":
        raise NotImplementedError

    def predict_proba(self, dataset) -> np.ndarray:
        raise NotImplementedError

    def predict(self, dataset) -> np.ndarray:
        proba = self.predict_proba(dataset)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]


@dataclass
class DetectionResult:
    scores: np.ndarray  # (N,) image-level anomaly score, higher = more anomalous
    maps: list[np.ndarray]  # per sample, an anomaly map at the input's own H×W (float32)


class Detector(Estimator):
    """fit(dataset) on normal samples only; score(dataset) → DetectionResult."""

    registry_kind = "detector"

    def fit(self, dataset, **kwargs) -> "Detector":
        raise NotImplementedError

    def score(self, dataset) -> DetectionResult:
        raise NotImplementedError
