"""Data for the benchmark: load each data set once, fingerprint it, and cut it into train/test folds.

The fingerprint (SHA-256 over every map's shape and bytes and every label) goes into each cell's
cache key, so a changed data file or generator invalidates the cached results that used it.
The split seed is the cell's seed: each seed is a different split as well as a different
initialisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from waferscope.benchmark.config import DatasetSpec
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, WaferscopeError


def fingerprint(ds: WaferDataset) -> str:
    """Return a SHA-256 fingerprint of a data set's maps and labels (part of every cell's cache key)."""
    h = hashlib.sha256()
    h.update(f"{ds.kind}:{len(ds)}".encode())
    for m in ds.maps:
        h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m).tobytes())
    h.update("\x00".join(map(str, ds.labels)).encode())
    if ds.masks is not None:
        for k in ds.masks:
            h.update(b"-" if k is None else np.packbits(k).tobytes())
    return h.hexdigest()[:16]


@dataclass
class LoadedDataset:
    """A benchmark data set loaded: its spec, its parts and their fingerprint."""

    spec: DatasetSpec
    parts: dict[str, WaferDataset]  # "data" or "train"/"test"
    fingerprint: str

    @property
    def name(self) -> str:
        """Return the data set's name."""
        return self.spec.name

    def describe(self) -> dict:
        """Return the size and class counts of each part."""
        return {name: {"n": len(ds), "classes": ds.class_counts()} for name, ds in self.parts.items()}


def load_dataset(spec: DatasetSpec, tasks: list[str] | str, config_path) -> LoadedDataset:
    """Load the parts of a data set spec that ``tasks`` need."""
    from waferscope.data import load

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    parts = {}
    for key in ("data", "train", "test"):
        src = getattr(spec, key)
        if src is None:
            continue
        try:
            ds = load(src)
        except WaferscopeError as exc:
            raise ConfigError(f"datasets.{spec.name}.{key}: {exc}", config_path) from None
        if spec.exclude:
            ds = ds.subset(~np.isin(ds.labels.astype(str), spec.exclude))
        if "classification" in tasks and key != "test" and not ds.is_labelled.any():
            raise ConfigError(f"datasets.{spec.name}.{key}: {src} has no labelled maps to train a classifier", config_path)
        parts[key] = ds
    evaluated = parts.get("test", parts.get("data"))
    if "detection" in tasks:
        train = parts.get("train", parts.get("data"))
        if not train.is_normal.any():
            raise ConfigError(f"datasets.{spec.name}: no normal ('none') maps to train a detector on", config_path)
        lab = evaluated.labelled()
        if lab.is_normal.all() or not lab.is_normal.any():
            raise ConfigError(f"datasets.{spec.name}: the test maps need both normal and defect labels to score a detector",
                              config_path)
    h = hashlib.sha256("|".join(f"{k}={fingerprint(v)}" for k, v in sorted(parts.items())).encode()).hexdigest()[:16]
    return LoadedDataset(spec=spec, parts=parts, fingerprint=h)


def folds(loaded: LoadedDataset, seed: int) -> list[tuple[WaferDataset, WaferDataset]]:
    """Return the (train, test) pairs of one cell; for detection the caller keeps train's normal maps."""
    from waferscope.data.preprocess import stratified_kfold, stratified_split

    spec = loaded.spec
    if "data" not in loaded.parts:
        return [(loaded.parts["train"].labelled(), loaded.parts["test"].labelled())]
    data = loaded.parts["data"].labelled()
    if spec.kfold:
        return [(data.subset(tr), data.subset(te)) for tr, te in stratified_kfold(data.labels, spec.kfold, seed)]
    tr, te = stratified_split(data.labels, spec.split, seed)
    return [(data.subset(tr), data.subset(te))]


def normal_folds(normal: WaferDataset, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds over normal training maps, for choosing a threshold without test labels (seed 004)."""
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(normal))))
