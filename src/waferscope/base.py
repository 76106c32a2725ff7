"""The estimator contract every classifier and detector follows (after scikit-learn's).

- configuration lives in the constructor, stored unchanged under the same names;
- ``fit(dataset)`` learns and returns ``self``; learned state ends in ``_``;
- ``get_params`` / ``clone`` rebuild an unfitted twin from the configuration;
- ``save(run_dir)`` / ``load(run_dir)`` write and read a run directory: ``model.json`` (name, kind,
  params, waferscope version, format version, JSON-able learned state) and ``weights.safetensors``
  (tensors; no pickle, so loading a run runs no code).

Subclasses implement ``_state()`` → ``(tensors, extras)`` and ``_load_state(tensors, extras)``.

Parameters are validated (after scikit-learn's ``_parameter_constraints`` / ``_validate_params``):
every constructor parameter has a constraint, from its type annotation (``int``, ``float``, ``bool``,
``str``, ``dict``, ``Sequence[...]``, ``... | None``) unless the class declares a narrower one in
``_parameter_constraints`` (an :class:`Interval`, :class:`Options`, ...). ``set_params`` checks the
values it is given and ``fit`` checks them all before any work, so a bad value is one
:class:`~waferscope.errors.ConfigError` naming the model, the parameter and what is allowed.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from waferscope import __version__
from waferscope.errors import AdviceWarning, ConfigError, RunDirError
from waferscope.utils import replace_folder
from waferscope.vocabulary import PARAMS_VOCABULARY, fill_docstring

RUN_FORMAT = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


# ---- parameter constraints ----------------------------------------------------------------------
class Interval:
    """A number of type ``kind`` (int or float; bools are refused) within ``[low, high]``.

    None = unbounded; ``closed`` says which ends are included, optionally a multiple of
    ``multiple_of``.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, closed: str = "both",
                 multiple_of: int | None = None):
        assert kind in (int, float) and closed in ("both", "left", "right", "neither")
        self.kind, self.low, self.high, self.closed, self.multiple_of = kind, low, high, closed, multiple_of

    def accepts(self, value: Any) -> bool:
        """Return whether ``value`` is a number of this kind within the bounds."""
        if isinstance(value, (bool, np.bool_)):
            return False
        if not isinstance(value, numbers.Integral if self.kind is int else numbers.Real):
            return False
        if self.kind is float and not math.isfinite(float(value)):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return lo_ok and hi_ok and (self.multiple_of is None or value % self.multiple_of == 0)

    def __str__(self) -> str:
        """Describe the allowed values in words, for error messages."""
        what = "an int" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            bounds = ""
        elif self.high is None:
            bounds = f" {'>=' if self.closed in ('both', 'left') else '>'} {self.low}"
        elif self.low is None:
            bounds = f" {'<=' if self.closed in ('both', 'right') else '<'} {self.high}"
        else:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            bounds = f" in {left}{self.low}, {self.high}{right}"
        return what + bounds + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


class Options:
    """One of a fixed set of values (strings, usually)."""

    def __init__(self, *values: Any):
        self.values = values

    def accepts(self, value: Any) -> bool:
        """Return whether ``value`` is one of the allowed values (same type and equal)."""
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        """Describe the allowed values in words, for error messages."""
        return "one of " + ", ".join(repr(v) for v in self.values)


class _Type:
    """An instance of ``types`` (bool params also take the ints 0 and 1, as ``--set augment=0`` gives)."""

    def __init__(self, name: str, *types: type):
        self.name, self.types = name, types

    def accepts(self, value: Any) -> bool:
        if bool in self.types and isinstance(value, (numbers.Integral, np.bool_)) and value in (0, 1):
            return True
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.name


# What a type annotation in a constructor signature allows, token by token ("int | None" → both).
_ANNOTATION_CONSTRAINTS: dict[str, Any] = {
    "int": Interval(int), "float": Interval(float), "bool": _Type("a bool", bool, np.bool_),
    "str": _Type("a string", str), "None": None, "dict": _Type("a dict", dict),
}
_SEQUENCE = _Type("a list or tuple", list, tuple)


def _annotation_constraints(annotation: Any) -> list | None:
    """Return the constraints an annotation string (``from __future__ import annotations``) implies.

    Or None when it says nothing this module understands.
    """
    if not isinstance(annotation, str):
        return None
    out: list = []
    for token in (t.strip() for t in annotation.split("|")):
        if token in _ANNOTATION_CONSTRAINTS:
            out.append(_ANNOTATION_CONSTRAINTS[token])
        elif token.startswith(("Sequence[", "list[", "tuple[")):
            out.append(_SEQUENCE)
        else:
            return None
    return out


def _describe(constraints: list) -> str:
    return " or ".join("None" if c is None else str(c) for c in constraints)


def _allowed(value: Any, constraints: list) -> bool:
    return any(value is None if c is None else c.accepts(value) for c in constraints)


# ---- declared capabilities ----------------------------------------------------------------------
@dataclass(frozen=True)
class Tags:
    """What a model class accepts and offers (after scikit-learn's estimator tags).

    Callers ask ``est.get_tags()`` instead of probing attributes; tests/test_conformance.py checks
    every claim against behaviour. A class declares only what differs from its bases, in
    ``_tags``.
    """

    input_kinds: tuple[str, ...] = ("wafer",)  # "wafer": die-state maps (0/1/2); "image": RGB/grey images
    needs_labels: bool = False  # fit needs class labels (classifiers); detectors fit on normal samples
    multilabel: bool = False  # predict_proba gives independent per-pattern probabilities (rows need not sum to 1)
    onnx: bool = False  # waferscope.export.export_onnx writes a graph that reproduces the model
    gradcam: bool = False  # waferscope.explain.explain gives Grad-CAM heat maps (a network_ and to_tensor)
    temperature: bool = False  # set_temperature(t) stores a calibration temperature in the run
    # predict_proba(ds) == proba_from_features(features(ds)), with feature_view() naming the rows'
    # (feature set, orientation): a caller that needs the same wafer features reuses them
    wafer_features: bool = False


class Estimator:
    """Base of every model: the configuration in the constructor, learned state in ``_``-suffixed attributes.

    See the module docstring for the contract (``get_params`` / ``clone`` / ``save`` / :func:`load_run`).
    """

    registry_name: str = ""
    registry_kind: str = ""
    _tags: dict[str, Any] = {}
    # param name -> list of allowed alternatives (Interval, Options, None, ...); merged over the class's
    # bases, and over the constraints its constructor's annotations imply (see the module docstring).
    # The shared vocabulary: these names mean the same in every model that takes them.
    _parameter_constraints: dict[str, list] = {
        "epochs": [Interval(int, 1)], "batch_size": [Interval(int, 1)], "predict_batch_size": [Interval(int, 1)],
        "input_size": [Interval(int, 1)], "patience": [Interval(int, 0)], "seed": [Interval(int, 0)],
        "lr": [Interval(float, 0, None, closed="neither")], "learning_rate": [Interval(float, 0, None, closed="neither")],
        "weight_decay": [Interval(float, 0)], "l2_regularization": [Interval(float, 0)],
        "smoothing_sigma": [Interval(float, 0)], "max_iter": [Interval(int, 1)], "max_leaf_nodes": [Interval(int, 2)],
        "val_fraction": [Interval(float, 0, 1, closed="left")],
    }
    # Old parameter names still accepted for one release (old → new, merged over the class's bases;
    # an entry applies when the new name is one of the class's parameters): see waferscope.vocabulary.
    renamed_params: dict[str, str] = {}

    # fit() keyword options the contract handles (popped before the model's own fit sees them)
    _after_fit_options: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's ``__init__`` and ``fit`` in the contract (parameter checks, the after-fit step)."""
        # Every fit() validates the parameters first, as scikit-learn's _fit_context does, so that
        # no model needs to remember to (a bad value deep in training would be a traceback), and
        # runs the family's _after_fit (a detector learns its threshold_) when it returns. Only the
        # outermost call does either: a subclass's fit calling super().fit() passes straight through.
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__doc__"):  # shared parameter/attribute descriptions live once, in the vocabulary
            family: dict[str, str] = {}  # or in the family's base class (merged over the bases, like _tags)
            for klass in reversed(cls.__mro__):
                family.update(vars(klass).get("_docstrings", {}))
            cls.__doc__ = fill_docstring(cls.__doc__, cls.__qualname__, family)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_contract_init", False):
            # Old parameter names → today's, with a FutureWarning (inspect.signature follows
            # __wrapped__, so get_params and the constraints still read the real signature).
            @functools.wraps(init)
            def contract_init(self, *args: Any, **kw: Any) -> None:
                init(self, *args, **type(self).translate_params(kw))

            contract_init._contract_init = True  # type: ignore[attr-defined]
            cls.__init__ = contract_init  # type: ignore[method-assign]
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "_contract_fit", False):
            @functools.wraps(fit)
            def contract_fit(self, *args: Any, **kw: Any):
                if self.__dict__.get("_in_fit"):
                    return fit(self, *args, **kw)
                options = {k: kw.pop(k) for k in self._after_fit_options if k in kw}
                self.validate_params()
                self._in_fit = True
                try:
                    out = fit(self, *args, **kw)
                finally:
                    del self._in_fit
                self._after_fit(args[0] if args else kw.get("dataset"), **options)
                return out

            contract_fit._contract_fit = True  # type: ignore[attr-defined]
            cls.fit = contract_fit  # type: ignore[method-assign]

    def _after_fit(self, dataset: Any, **options: Any) -> None:
        """Run once when the outermost fit() returns (see __init_subclass__)."""

    # ---- capabilities ---------------------------------------------------------------------------
    @classmethod
    def get_tags(cls) -> Tags:
        """Return the class's declared capabilities: its ``_tags`` merged over its bases'."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("_tags", {}))
        return Tags(**merged)

    def trained_input_kind(self) -> str | None:
        """Return the kind of data ("wafer" or "image") a fitted model was trained on.

        For models that can take both and record it (as ``mode_`` or ``input_kind_``);
        None when not recorded.
        """
        kind = getattr(self, "mode_", None) or getattr(self, "input_kind_", None)
        return kind if kind in ("wafer", "image") else None

    def export_module(self) -> Any:
        """Return a torch module export_onnx should trace instead of the model's own network, or None."""
        return None

    # ---- configuration --------------------------------------------------------------------------
    @classmethod
    def parameter_constraints(cls) -> dict[str, list | None]:
        """Return each constructor parameter → its allowed alternatives.

        None: not declared; the conformance test requires every parameter of a registered model to
        be declared.
        """
        declared: dict[str, list] = {}
        for klass in reversed(cls.__mro__):
            declared.update(vars(klass).get("_parameter_constraints", {}))
        sig = inspect.signature(cls.__init__)
        return {name: declared.get(name, _annotation_constraints(sig.parameters[name].annotation))
                for name in cls._param_names()}

    def _check_param(self, name: str, value: Any, constraints: list | None) -> None:
        if constraints is not None and not _allowed(value, constraints):
            model = self.registry_name or type(self).__name__
            raise ConfigError(f"{model}: parameter {name}={value!r} is not allowed; "
                              f"{name} must be {_describe(constraints)}")

    def validate_params(self) -> None:
        """Raise a ConfigError for the first parameter whose value its constraints do not allow."""
        for name, constraints in self.parameter_constraints().items():
            self._check_param(name, getattr(self, name), constraints)

    @classmethod
    def param_renames(cls) -> dict[str, str]:
        """Old parameter name → today's.

        For the names this class still accepts (``renamed_params`` merged over its
        bases, where the new name is one of its parameters).
        """
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("renamed_params", {}))
        names = set(cls._param_names())
        return {old: new for old, new in merged.items() if new in names}

    @classmethod
    def translate_params(cls, params: dict[str, Any], saved_run: bool = False) -> dict[str, Any]:
        """``params`` in today's names.

        An old name is renamed with a FutureWarning (silently for a run saved before the rename:
        ``saved_run``). A name that is both old and current (a detector's ``batch_size`` was its
        scoring batch and is now its training batch) keeps its old meaning when the call is in the
        old vocabulary — a saved run, or arguments using another old name — and its new meaning
        otherwise, with a note unless the new partner is given too.
        """
        renames = cls.param_renames()
        if not renames or not any(k in renames for k in params):
            return params
        names = set(cls._param_names())
        model = cls.registry_name or cls.__name__
        old_call = saved_run or any(k in renames and k not in names for k in params)
        out: dict[str, Any] = {}
        for k, v in params.items():
            new = renames.get(k)
            if new is None or (k in names and not old_call):
                if new is not None and new not in params:
                    warnings.warn(f"{model}: the meaning of {k} changed: what it set before is now {new} "
                                  "(the parameter vocabulary is in docs/contributing.md)", FutureWarning, stacklevel=4)
                out[k] = v
                continue
            if not saved_run:
                if new in params and new not in renames:
                    raise ConfigError(f"{model}: give {new} or its old name {k}, not both")
                warnings.warn(f"{model}: parameter {k} is now called {new}; the old name will be removed",
                              FutureWarning, stacklevel=4)
            out[new] = v
        return out

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters by name, as stored."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        """Set parameters by name (old names translated), each checked against its constraints; return ``self``."""
        params = self.translate_params(params)
        constraints = self.parameter_constraints()
        for k, v in params.items():
            if k not in constraints:
                raise ConfigError(f"{self.registry_name or type(self).__name__} has no parameter {k!r}; "
                                  f"its parameters: {', '.join(constraints)}")
            self._check_param(k, v, constraints[k])
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def clone(self) -> "Estimator":
        """Return an unfitted twin with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        """Show the class and its parameters."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @property
    def is_fitted(self) -> bool:
        """Return whether the model holds learned state (a public attribute ending in ``_``)."""
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RunDirError(f"{type(self).__name__} is not fitted: call fit() or load a run directory")

    # ---- persistence ----------------------------------------------------------------------------
    def _run_header(self) -> dict[str, Any]:
        """Learned state the contract itself owns, saved as top-level keys of model.json."""
        return {}

    def _load_run_header(self, doc: dict[str, Any], run_dir: Path) -> None:
        """Restore what :meth:`_run_header` saved (``doc`` is the whole model.json)."""

    def _state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def _load_state(self, tensors: dict[str, Any], extras: dict[str, Any]) -> None:
        raise NotImplementedError

    def _saved(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (tensors, header) as a run stores them: what :func:`estimator_from_saved` rebuilds from.

        :meth:`save` writes them as a run directory; an ensemble keeps its members' inside its own run.
        """
        tensors, extras = self._state()
        return tensors, {"kind": self.registry_kind, "name": self.registry_name, "class": type(self).__name__,
                         "params": _jsonable(self.get_params()), "params_vocabulary": PARAMS_VOCABULARY,
                         "extras": _jsonable(extras), **_jsonable(self._run_header())}

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory atomically: a temp folder renamed into place when complete.

        An existing non-empty ``run_dir`` is replaced only with ``overwrite=True``: a trained model is
        often the result of hours, and a typo in a path must not erase it.
        """
        self._check_fitted()
        if not overwrite and Path(run_dir).exists() and (not Path(run_dir).is_dir() or any(Path(run_dir).iterdir())):
            raise RunDirError("already exists and is not empty; save(..., overwrite=True) replaces it", run_dir)
        from safetensors.torch import save_file
        import torch

        run_dir = Path(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        tensors, header = self._saved()
        tensors = {k: (torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
                   .detach().cpu().contiguous() for k, v in tensors.items()}
        doc = {"waferscope_run_format": RUN_FORMAT, "waferscope_version": __version__, **header}
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
        try:
            save_file(tensors, str(tmp / WEIGHTS))
            (tmp / MODEL_JSON).write_text(json.dumps(doc, indent=2))
            replace_folder(tmp, run_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return run_dir


def read_run_header(run_dir: str | Path) -> dict[str, Any]:
    """Return the parsed ``model.json`` of a run directory, with a clear error when it is missing or damaged."""
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

    doc = read_run_header(run_dir)
    if kind is not None and doc.get("kind") != kind:
        raise RunDirError(f"this run holds a {doc.get('kind')} ({doc.get('name')}), not a {kind}", run_dir)
    wpath = Path(run_dir) / WEIGHTS
    try:
        tensors = load_file(str(wpath)) if wpath.exists() else {}
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise RunDirError(f"{WEIGHTS} is corrupt ({exc})", run_dir) from None
    return estimator_from_saved(doc, tensors, Path(run_dir))


def estimator_from_saved(doc: dict[str, Any], tensors: dict[str, Any], run_dir: Path) -> Estimator:
    """Rebuild an estimator from its saved header ``doc`` (name, kind, params, extras) and tensors.

    This is :func:`load_run`'s work after reading the files, also used for the members of an ensemble.
    """
    from waferscope import registry

    cls = registry.get(doc["name"], doc["kind"])
    # Options removed since the run was saved (measured as no help) are dropped if they were off;
    # a run that used one cannot be rebuilt faithfully and says so.
    params = dict(doc["params"])
    if doc.get("params_vocabulary") != PARAMS_VOCABULARY:  # saved before the one vocabulary (issue 30)
        params = cls.translate_params(params, saved_run=True)
    for name, off in getattr(cls, "removed_params", {}).items():
        if name in params:
            if params.pop(name) != off:
                raise RunDirError(f"this {doc['name']} run uses the option {name!r}, which waferscope no "
                                  f"longer has; retrain it", run_dir)
    # Options added since the run was saved take the value that reproduces the old behaviour, which
    # need not be today's default (e.g. gbm's orient="canonical").
    for name, before in getattr(cls, "params_before", {}).items():
        params.setdefault(name, before)
    est = cls(**params)
    est._load_state(tensors, doc.get("extras", {}))
    est._load_run_header(doc, run_dir)
    return est


def resolve_bundled_name(bundled: dict[str, Path], which: str, kind: str,
                         aliases: dict[str, str] | None = None) -> str:
    """Return the current name of a bundled model.

    ``which`` itself, or the model an old name (an alias) stands for, with a FutureWarning (the CLI
    shows it as a note). An unknown name is a clear error.
    """
    import warnings

    aliases = aliases or {}
    if which in aliases:
        new = aliases[which]
        warnings.warn(f"bundled {kind} {which!r} is now called {new!r}; the old name will be removed",
                      FutureWarning, stacklevel=3)
        return new
    if which not in bundled:
        raise ConfigError(f"unknown bundled {kind} {which!r}; choose one of {', '.join(bundled)}")
    return which


def load_bundled(bundled: dict[str, Path], which: str, kind: str,
                 aliases: dict[str, str] | None = None) -> Estimator:
    """One of the models shipped with waferscope.

    ``bundled`` maps a name (``gbm``, ``pattern_contrast``, …) to its run directory inside the
    package, ``aliases`` old names to new ones; an unknown name or a missing model is a clear
    error.
    """
    which = resolve_bundled_name(bundled, which, kind, aliases)
    if not (Path(bundled[which]) / MODEL_JSON).is_file():
        raise RunDirError(f"the bundled {kind} {which!r} is not installed (no {MODEL_JSON}); load a run "
                          "directory you trained with waferscope.base.load_run instead", bundled[which])
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
    _tags = {"needs_labels": True}
    # Why a class prior (models/classifiers/prior.py) cannot move this model's probabilities, or None
    # when they are class-balanced posteriors (every classifier trained with class weights).
    prior_refusal: str | None = None

    def fit(self, dataset, **kwargs) -> "Classifier":
        """Fit on the labelled maps of ``dataset``; return ``self``."""
        raise NotImplementedError

    def predict_proba(self, dataset) -> np.ndarray:
        """Return the (N, n_classes) class probabilities of every map, columns in ``classes_`` order."""
        raise NotImplementedError

    def predict(self, dataset) -> np.ndarray:
        """Return the most probable class of every map."""
        proba = self.predict_proba(dataset)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]

    def heat_to_die_grids(self, heat: np.ndarray, dataset) -> list[np.ndarray] | None:
        """Grad-CAM heat at the network's input resolution mapped back to each wafer's die grid.

        For a network whose input is not the plain nearest resize; None: the plain mapping
        applies.
        """
        return None


@dataclass
class DetectionResult:
    """What a detector's ``score`` returns: one anomaly score and one anomaly map per sample."""

    scores: np.ndarray  # (N,) image-level anomaly score, higher = more anomalous
    maps: list[np.ndarray]  # per sample, an anomaly map at the input's own H×W (float32)


THRESHOLD_JSON = "threshold.json"  # where runs written before the threshold moved into model.json kept it
THRESHOLD_RULES = ("auto", "quantile", "best_f1", "kfold")


def read_threshold_json(run_dir: str | Path) -> dict | None:
    """Return an older run's ``threshold.json`` ({"threshold": float, "method": str, ...}), or None."""
    path = Path(run_dir) / THRESHOLD_JSON
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        float(doc["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{THRESHOLD_JSON} is unreadable ({exc})", run_dir) from None
    return doc


class Detector(Estimator):
    """fit(dataset) on normal samples only; score(dataset) → DetectionResult.

    predict(dataset) → decisions (True = anomalous: score >= ``threshold_``).

    The decision threshold is learned state of the model (after pyod's ``threshold_`` and
    anomalib's post-processor): ``fit`` ends by :meth:`calibrate` with the default rule, unless
    called as ``fit(dataset, calibrate=False)``; :meth:`calibrate` can be rerun with another rule.
    The threshold and how it was chosen (``threshold_info_``) are saved in model.json; a run
    written before that keeps them in ``threshold.json``, which load_run still reads.
    """

    registry_kind = "detector"
    _after_fit_options = ("calibrate",)
    # The detectors' names before the one vocabulary (issue 30): batch_size was the scoring batch
    # and train_batch_size the training batch (see Estimator.translate_params for the overlap).
    renamed_params = {"verbose": "progress", "batch_size": "predict_batch_size", "train_batch_size": "batch_size"}

    def fit(self, dataset, **kwargs) -> "Detector":
        """Fit on the normal samples of ``dataset``; return ``self``."""
        raise NotImplementedError

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and anomaly map of every sample."""
        raise NotImplementedError

    # ---- the decision ---------------------------------------------------------------------------
    def _after_fit(self, dataset: Any, calibrate: bool = True) -> None:
        # the weights in use: as resolved at fit where the default depends on the data kind (backbone="auto")
        pretrained = getattr(self, "resolved_", {}).get("pretrained", getattr(self, "pretrained", None))
        if getattr(dataset, "kind", None) == "image" and pretrained == "wafer":
            # The wafer-domain weights describe three-state maps, not grey-level texture: on real
            # device images these detectors scored below a pixel z-score (docs/detection.md).
            warnings.warn(f"{self.registry_name or type(self).__name__}: fitted on images with the wafer-map "
                          "backbone weights (pretrained='wafer'), which do not describe grey-level texture; for "
                          "images use the texture_padim detector, or on a ResNet backbone "
                          "backbone='formula_resnet18', pretrained='formula' (docs/detection.md, device images)", AdviceWarning, stacklevel=3)
        if calibrate:
            self.calibrate(dataset)
        else:
            self.set_threshold(None)

    def calibrate(self, dataset, rule: str = "auto", q: float = 0.99, folds: int = 5,
                  seed: int = 0) -> "Detector":
        """Learn ``threshold_`` (score >= threshold_ → anomalous) from ``dataset`` by ``rule``.

        ``rule`` is one of:

        - ``"quantile"``: the ``q``-quantile of the normal samples' scores (expected false-positive
          rate about 1 - q; optimistic on the training normals, which a detector scores low);
        - ``"best_f1"``: the threshold with the best F1 over the labelled samples (normal vs
          anomalous; needs both);
        - ``"kfold"``: seed 004's mean-of-max: per fold of the normals, a clone fitted on the other
          folds scores the held-out ones; the threshold is the mean of the fold maxima;
        - ``"auto"`` (what ``fit`` uses): ``best_f1`` when the data holds labelled anomalies, else
          ``quantile``.
        """
        from waferscope.metrics.detection import (detection_targets, threshold_best_f1,
                                                  threshold_kfold_mean_of_max, threshold_quantile)

        if rule not in THRESHOLD_RULES:
            raise ConfigError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
        self._check_fitted()
        anomalous = dataset.is_labelled & ~dataset.is_normal
        if rule == "auto":
            rule = "best_f1" if anomalous.any() and dataset.is_normal.any() else "quantile"
        if rule == "quantile":
            normals = dataset.subset(dataset.is_normal)
            return self.set_threshold(threshold_quantile(self.score(normals).scores, q),
                                      f"quantile {q} of the training normals' scores")
        if rule == "best_f1":
            idx, y = detection_targets(dataset)
            if len(np.unique(y)) < 2:
                raise ConfigError("a best-F1 threshold needs labelled normal and anomalous samples")
            scores = np.asarray(self.score(dataset.subset(idx)).scores)
            return self.set_threshold(threshold_best_f1(y, scores),
                                      f"best F1 over {len(idx)} labelled samples ({int(y.sum())} anomalous)")
        normals = dataset.subset(dataset.is_normal)
        res = threshold_kfold_mean_of_max(self.clone, normals, n_splits=folds, seed=seed)
        return self.set_threshold(res["threshold"], f"kfold_mean_of_max (k={folds}, seed={seed})",
                                  per_fold=res["per_fold"])

    def set_threshold(self, threshold: float | None, method: str = "given", **info: Any) -> "Detector":
        """Set the decision threshold directly (None: no decisions); ``method`` says how it was chosen."""
        self.threshold_ = None if threshold is None else float(threshold)
        self.threshold_info_ = {} if threshold is None else {"method": method, **info}
        return self

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Decisions (bool, True = anomalous) for scores this detector gave."""
        if getattr(self, "threshold_", None) is None:
            raise RunDirError(f"this {self.registry_name or type(self).__name__} has no decision threshold: "
                              "fit it (which learns one) or call calibrate(normal samples)")
        return np.asarray(scores, dtype=np.float64) >= self.threshold_

    def predict(self, dataset) -> np.ndarray:
        """(N,) bool: is each sample anomalous (score >= threshold_)."""
        return self.decide(self.score(dataset).scores)

    def _run_header(self) -> dict[str, Any]:
        thr = getattr(self, "threshold_", None)
        return {"threshold": None if thr is None else {"value": thr, **getattr(self, "threshold_info_", {})}}

    def _load_run_header(self, doc: dict[str, Any], run_dir: Path) -> None:
        thr = doc.get("threshold")
        if "threshold" not in doc:  # written before the threshold moved into model.json
            old = read_threshold_json(run_dir)
            thr = None if old is None else {"value": old["threshold"], **{k: v for k, v in old.items()
                                                                        if k != "threshold"}}
        if thr is not None and not (isinstance(thr, dict) and isinstance(thr.get("value"), (int, float))):
            raise RunDirError(f"{MODEL_JSON}: threshold must be {{'value': number, ...}} or null, got {thr!r}",
                              run_dir)
        if thr is None:
            self.set_threshold(None)
        else:
            info = {k: v for k, v in thr.items() if k != "value"}
            self.set_threshold(thr["value"], **{"method": "given", **info})
