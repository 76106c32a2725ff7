"""The benchmark configuration: a small YAML file read and checked in full before any training.

Schema (docs/benchmark.md has the long version)::

    task: classification            # or detection: the default task of the methods
    name: quick                     # optional, shown in the report
    threads: 2                      # torch/BLAS threads for every cell (part of the cache key)
    seeds: [0]
    speed: {batch_size: 256, n: 2000, repeats: 20}
    datasets:
      synthetic:
        train: synthetic:n=600,seed=1
        test: synthetic:n=300,seed=2
      dev:
        data: ../../shared/data/wm811k/wm811k_dev.npz   # relative to this file
        protocol: {split: 0.3}      # or {kfold: 5}; detection also {threshold_folds: 5}
        exclude: [Random]           # classes to drop (optional)
        optional: true              # skip (with a note) when the file is missing
    methods:
      cnn: {model: cnn, params: {epochs: 3}}
      svm: svm-linear               # shorthand: registry name, default parameters
      pc: {task: detection, model: patchcore}   # a method may override the task (mixed configs)

Every problem raises one :class:`~waferscope.errors.ConfigError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waferscope.errors import ConfigError

TASKS = {"classification": "classifier", "detection": "detector"}
TOP_KEYS = {"task", "name", "description", "threads", "seeds", "speed", "datasets", "methods", "report"}
DATASET_KEYS = {"data", "train", "test", "protocol", "optional", "description", "exclude"}
PROTOCOL_KEYS = {"split", "kfold", "threshold_folds"}
METHOD_KEYS = {"model", "params", "label", "description", "task"}
SPEED_KEYS = {"batch_size", "n", "repeats", "enabled"}
REPORT_KEYS = {"examples", "gradcam"}


@dataclass
class DatasetSpec:
    """A data set of the benchmark config: one source the protocol splits, or a fixed train / test pair."""

    name: str
    data: str | None = None  # one source split by the protocol
    train: str | None = None  # or a fixed train / test pair
    test: str | None = None
    split: float | None = None
    kfold: int | None = None
    threshold_folds: int | None = None
    optional: bool = False
    exclude: list[str] = field(default_factory=list)  # classes dropped from every part (seed 002)
    missing: list[str] = field(default_factory=list)  # optional sources that are absent

    @property
    def sources(self) -> list[str]:
        """Return the data specs this data set reads."""
        return [s for s in (self.data, self.train, self.test) if s is not None]

    def protocol(self) -> dict:
        """Return what decides which maps train and test (part of every cell's cache key)."""
        out: dict[str, Any] = {}
        if self.data is not None:
            out = {"kfold": self.kfold} if self.kfold else {"split": self.split}
        if self.threshold_folds:
            out["threshold_folds"] = self.threshold_folds
        if self.exclude:
            out["exclude"] = sorted(self.exclude)
        return out


@dataclass
class MethodSpec:
    """A method of the benchmark config: a registered model with its parameters."""

    name: str
    model: str
    params: dict[str, Any]
    label: str
    task: str = "classification"

    @property
    def kind(self) -> str:
        """Return the registry kind (classifier or detector) of the method's task."""
        return TASKS[self.task]


@dataclass
class BenchmarkConfig:
    """A parsed, validated benchmark config (see :func:`load_config`)."""

    path: Path
    task: str
    name: str
    datasets: list[DatasetSpec]
    methods: list[MethodSpec]
    seeds: list[int]
    threads: int = 1
    batch_size: int = 256
    speed_n: int = 2000
    repeats: int = 20
    speed_enabled: bool = True
    examples: int = 4
    gradcam: bool = True
    description: str = ""
    text: str = ""  # the file as read, hashed into the report

    @property
    def tasks(self) -> list[str]:
        """The tasks of the methods, in TASKS order."""
        return [t for t in TASKS if any(m.task == t for m in self.methods)]

    @property
    def active_datasets(self) -> list[DatasetSpec]:
        """Return the data sets whose files exist."""
        return [d for d in self.datasets if not d.missing]


def _err(path: Path, problem: str) -> ConfigError:
    return ConfigError(problem, path)


def _check_keys(path: Path, where: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise _err(path, f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def _positive_int(path: Path, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _err(path, f"{where} must be a positive whole number, got {value!r}")
    return value


def _resolve_source(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(path, f"{where} must be a data spec (a path or synthetic:n=…), got {value!r}")
    value = value.strip()
    if value.startswith("synthetic:"):
        from waferscope.data.load import parse_synthetic_spec
        from waferscope.errors import DataError

        try:
            parse_synthetic_spec(value)
        except DataError as exc:
            raise _err(path, f"{where}: {exc.problem}") from None
        return value
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (path.parent / p).resolve()
    return str(p)


def _parse_dataset(path: Path, name: str, body: Any) -> DatasetSpec:
    where = f"datasets.{name}"
    if isinstance(body, str):
        body = {"data": body}
    if not isinstance(body, dict):
        raise _err(path, f"{where} must be a data spec or a mapping with data/train/test/protocol")
    _check_keys(path, where, body, DATASET_KEYS)
    ds = DatasetSpec(name=str(name), optional=bool(body.get("optional", False)))
    exclude = body.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(c, str) for c in exclude):
        raise _err(path, f"{where}.exclude must be a list of class names, got {exclude!r}")
    ds.exclude = list(exclude)
    has_data = _parse_sources(path, where, body, ds)
    _parse_protocol(path, where, body.get("protocol", {}) or {}, ds, has_data)
    _check_files(path, where, ds)
    return ds


def _parse_sources(path: Path, where: str, body: dict, ds: DatasetSpec) -> bool:
    """Set ``ds``'s data / train / test sources; return True for one ``data`` source, False for a pair."""
    has_data, has_pair = "data" in body, ("train" in body or "test" in body)
    if has_data == has_pair:
        raise _err(path, f"{where}: give either 'data' (split by the protocol) or both 'train' and 'test'")
    if has_pair and not ("train" in body and "test" in body):
        raise _err(path, f"{where}: 'train' and 'test' go together; one of them is missing")
    for key in ("data", "train", "test"):
        if key in body:
            setattr(ds, key, _resolve_source(path, f"{where}.{key}", body[key]))
    return has_data


def _parse_protocol(path: Path, where: str, protocol: Any, ds: DatasetSpec, has_data: bool) -> None:
    """Set ``ds``'s split / kfold / threshold_folds from its ``protocol`` mapping."""
    if not isinstance(protocol, dict):
        raise _err(path, f"{where}.protocol must be a mapping such as {{split: 0.25}} or {{kfold: 5}}")
    _check_keys(path, f"{where}.protocol", protocol, PROTOCOL_KEYS)
    if "split" in protocol and "kfold" in protocol:
        raise _err(path, f"{where}.protocol: choose split or kfold, not both")
    if not has_data and ("split" in protocol or "kfold" in protocol):
        raise _err(path, f"{where}.protocol: split/kfold need 'data'; this data set has a fixed train/test pair")
    if "kfold" in protocol:
        ds.kfold = _positive_int(path, f"{where}.protocol.kfold", protocol["kfold"])
        if ds.kfold < 2:
            raise _err(path, f"{where}.protocol.kfold must be at least 2")
    elif has_data:
        split = protocol.get("split", 0.25)
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split < 1:
            raise _err(path, f"{where}.protocol.split must be a test fraction between 0 and 1, got {split!r}")
        ds.split = float(split)
    if "threshold_folds" in protocol:
        ds.threshold_folds = _positive_int(path, f"{where}.protocol.threshold_folds", protocol["threshold_folds"])
        if ds.threshold_folds < 2:
            raise _err(path, f"{where}.protocol.threshold_folds must be at least 2")


def _check_files(path: Path, where: str, ds: DatasetSpec) -> None:
    """Refuse a missing data file, or record it in ``ds.missing`` when the data set is optional."""
    for src in ds.sources:
        if not src.startswith("synthetic:") and not Path(src).exists():
            if not ds.optional:
                raise _err(path, f"{where}: data file not found: {src} (add 'optional: true' to skip it when absent)")
            ds.missing.append(src)


def _parse_method(path: Path, name: str, body: Any, default_task: str) -> MethodSpec:
    from waferscope import registry

    where = f"methods.{name}"
    if isinstance(body, str):
        body = {"model": body}
    if not isinstance(body, dict) or "model" not in body:
        raise _err(path, f"{where} must be a registry name or a mapping with 'model' (and optional 'params')")
    _check_keys(path, where, body, METHOD_KEYS)
    task = body.get("task", default_task)
    if task not in TASKS:
        raise _err(path, f"{where}.task must be one of {', '.join(TASKS)}, got {task!r}")
    kind = TASKS[task]
    model = body["model"]
    available = registry.available(kind)
    if model not in available:
        raise _err(path, f"{where}: unknown {kind} {model!r}; available: {', '.join(available) or 'none'}")
    params = body.get("params", {}) or {}
    if not isinstance(params, dict):
        raise _err(path, f"{where}.params must be a mapping of parameter names to values")
    cls = registry.get(model, kind)
    valid = cls._param_names()
    bad = sorted(set(params) - set(valid))
    if bad:
        raise _err(path, f"{where}.params: {model} has no parameter {', '.join(map(repr, bad))}; "
                         f"its parameters: {', '.join(valid) or 'none'}")
    return MethodSpec(name=str(name), model=model, params=dict(params), label=str(body.get("label", name)), task=task)


def load_config(path: str | Path) -> BenchmarkConfig:
    """Read and check a benchmark config; every problem is a ConfigError naming ``path``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise _err(path, "no such config file")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _err(path, f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(doc, dict):
        raise _err(path, "a benchmark config is a YAML mapping with task, datasets and methods")
    _check_keys(path, "top level", doc, TOP_KEYS)
    for key in ("task", "datasets", "methods"):
        if key not in doc:
            raise _err(path, f"missing required key {key!r}")
    task = doc["task"]
    if task not in TASKS:
        raise _err(path, f"task must be one of {', '.join(TASKS)}, got {task!r}")

    seeds = doc.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise _err(path, f"seeds must be a non-empty list of whole numbers ≥ 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _err(path, f"seeds repeat a value: {seeds}")

    speed = doc.get("speed", {}) or {}
    if not isinstance(speed, dict):
        raise _err(path, "speed must be a mapping such as {batch_size: 256, n: 2000}")
    _check_keys(path, "speed", speed, SPEED_KEYS)
    report = doc.get("report", {}) or {}
    if not isinstance(report, dict):
        raise _err(path, "report must be a mapping such as {examples: 4}")
    _check_keys(path, "report", report, REPORT_KEYS)

    datasets_doc, methods_doc = doc["datasets"], doc["methods"]
    if not isinstance(datasets_doc, dict) or not datasets_doc:
        raise _err(path, "datasets must be a non-empty mapping of name → data spec")
    if not isinstance(methods_doc, dict) or not methods_doc:
        raise _err(path, "methods must be a non-empty mapping of name → model")
    datasets = [_parse_dataset(path, str(n), b) for n, b in datasets_doc.items()]
    if not any(not d.missing for d in datasets):
        raise _err(path, "every data set is optional and missing: nothing to benchmark")
    methods = [_parse_method(path, str(n), b, task) for n, b in methods_doc.items()]
    return BenchmarkConfig(
        path=path.resolve(), task=task, name=str(doc.get("name", path.stem)), datasets=datasets,
        methods=methods, seeds=list(seeds),
        threads=_positive_int(path, "threads", doc.get("threads", 1)),
        batch_size=_positive_int(path, "speed.batch_size", speed.get("batch_size", 256)),
        speed_n=_positive_int(path, "speed.n", speed.get("n", 2000)),
        repeats=_positive_int(path, "speed.repeats", speed.get("repeats", 20)),
        speed_enabled=bool(speed.get("enabled", True)),
        examples=int(report.get("examples", 4)), gradcam=bool(report.get("gradcam", True)),
        description=str(doc.get("description", "")), text=text,
    )
