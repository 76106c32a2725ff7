"""The in-memory wafer-map data set every loader returns and every model consumes.

A wafer map is a 2-D ``uint8`` array of any size with die states 0 (no die), 1 (pass), 2 (fail).
For ordinary images (MVTec-AD layout) the same container holds ``uint8`` arrays of shape (H, W) or
(H, W, 3) and ``kind == "image"``.

Per sample the set holds one class label (``""`` = unlabelled), optionally an 8-dim multi-label
vector over :data:`BASE_PATTERNS`, optionally a ground-truth mask (bool, same H×W as the map), and
metadata in a pandas DataFrame (``id``, ``lot``, ``wafer_index``, ``die_size``, ``split``,
``source``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from waferscope.data.classes import BASE_PATTERNS, DIE_STATES, NORMAL_LABELS, UNLABELLED
from waferscope.errors import DataError

META_COLUMNS = ("id", "lot", "wafer_index", "die_size", "split", "source")


def validate_map(m: np.ndarray, where: str | None = None, index: int | None = None, kind: str = "wafer") -> np.ndarray:
    """Check one map and return it as a C-contiguous uint8 array, or raise a clear DataError."""
    label = f"map {index}" if index is not None else "map"
    arr = np.asarray(m)
    if kind == "image":
        if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
            raise DataError(f"{label}: expected an H×W or H×W×3 image, got shape {arr.shape}", where)
        return np.ascontiguousarray(arr.astype(np.uint8, copy=False))
    if arr.ndim != 2:
        raise DataError(f"{label}: a wafer map must be 2-D, got shape {arr.shape}", where)
    if arr.size == 0 or min(arr.shape) == 0:
        raise DataError(f"{label}: the wafer map is empty (shape {arr.shape})", where)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise DataError(f"{label}: die values must be numbers, got dtype {arr.dtype}", where)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise DataError(f"{label}: die values must be 0, 1 or 2; found NaN/inf", where)
        bad = (arr < 0) | (arr > 2) | (arr != np.round(arr))
        if bad.any():
            raise DataError(f"{label}: die values must be 0 (no die), 1 (pass) or 2 (fail); "
                            f"found {np.unique(arr[bad])[:5].tolist()}", where)
        arr = arr.astype(np.uint8)
    elif arr.max(initial=0) > 2:
        vals = np.unique(arr[arr > 2])[:5].tolist()
        raise DataError(f"{label}: die values must be 0 (no die), 1 (pass) or 2 (fail); found {vals}", where)
    return np.ascontiguousarray(arr)


@dataclass
class WaferDataset:
    """Wafer maps (or images) with labels and per-sample metadata: what every loader returns and every model takes."""

    maps: list[np.ndarray]
    labels: np.ndarray  # str, "" = unlabelled
    meta: pd.DataFrame
    multilabels: np.ndarray | None = None  # (N, 8) uint8 over BASE_PATTERNS
    masks: list[np.ndarray | None] | None = None  # bool, same shape as the map (H×W)
    kind: str = "wafer"  # "wafer" or "image"
    name: str = "dataset"
    attrs: dict = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_maps(
        cls,
        maps: Sequence[np.ndarray],
        labels: Iterable[str] | None = None,
        *,
        multilabels: np.ndarray | None = None,
        masks: Sequence[np.ndarray | None] | None = None,
        meta: pd.DataFrame | dict | None = None,
        source: str = "memory",
        kind: str = "wafer",
        name: str | None = None,
        validate: bool = True,
        where: str | None = None,
    ) -> "WaferDataset":
        """Build a data set from maps and labels; ``validate`` checks each map first (a clear DataError)."""
        maps = list(maps)
        if validate:
            maps = [validate_map(m, where, i, kind) for i, m in enumerate(maps)]
        n = len(maps)
        labels_arr = np.array([UNLABELLED] * n if labels is None else [str(x) for x in labels], dtype=object)
        if len(labels_arr) != n:
            raise DataError(f"{len(labels_arr)} labels for {n} maps", where)
        meta_df = pd.DataFrame(meta) if meta is not None else pd.DataFrame(index=range(n))
        meta_df = meta_df.reset_index(drop=True)
        if len(meta_df) != n:
            raise DataError(f"metadata has {len(meta_df)} rows for {n} maps", where)
        defaults = {"id": [f"{source}-{i}" for i in range(n)], "lot": "", "wafer_index": np.nan,
                    "die_size": np.nan, "split": "", "source": source}
        for col in META_COLUMNS:
            if col not in meta_df:
                meta_df[col] = defaults[col]
        meta_df["id"] = meta_df["id"].astype(str)
        if multilabels is not None:
            multilabels = np.asarray(multilabels, dtype=np.uint8)
            if multilabels.shape != (n, len(BASE_PATTERNS)):
                raise DataError(f"multi-labels must have shape ({n}, {len(BASE_PATTERNS)}), got {multilabels.shape}", where)
        if masks is not None:
            masks = list(masks)
            if len(masks) != n:
                raise DataError(f"{len(masks)} masks for {n} maps", where)
            for i, (m, k) in enumerate(zip(maps, masks)):
                if k is not None and np.shape(k)[:2] != m.shape[:2]:
                    raise DataError(f"mask {i} has shape {np.shape(k)}, its map has {m.shape[:2]}", where)
            masks = [None if k is None else np.asarray(k).astype(bool) for k in masks]
        return cls(maps=maps, labels=labels_arr, meta=meta_df, multilabels=multilabels, masks=masks,
                   kind=kind, name=name or source)

    # ---- views ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.maps)

    def __repr__(self) -> str:
        """Show the name, kind, size and class counts."""
        return f"WaferDataset(name={self.name!r}, kind={self.kind!r}, n={len(self)}, classes={self.class_counts()})"

    def subset(self, index: Sequence[int] | np.ndarray) -> "WaferDataset":
        """Return the samples at ``index`` (integer positions or a boolean mask) as a new data set."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return WaferDataset(
            maps=[self.maps[i] for i in idx],
            labels=self.labels[idx],
            meta=self.meta.iloc[idx].reset_index(drop=True),
            multilabels=None if self.multilabels is None else self.multilabels[idx],
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            kind=self.kind,
            name=self.name,
            attrs=dict(self.attrs),
        )

    @property
    def ids(self) -> np.ndarray:
        """Return the sample ids."""
        return self.meta["id"].to_numpy()

    @property
    def is_labelled(self) -> np.ndarray:
        """Return a boolean mask of the labelled samples."""
        return self.labels != UNLABELLED

    @property
    def is_normal(self) -> np.ndarray:
        """Return a boolean mask of the normal samples."""
        return np.isin(self.labels, list(NORMAL_LABELS))

    def normal(self) -> "WaferDataset":
        """Return the normal samples."""
        return self.subset(self.is_normal)

    def labelled(self) -> "WaferDataset":
        """Return the labelled samples."""
        return self.subset(self.is_labelled)

    def class_counts(self) -> dict[str, int]:
        """Return the number of samples of each label ("(unlabelled)" for none)."""
        vals, counts = np.unique(self.labels.astype(str), return_counts=True)
        return {str(v) if v else "(unlabelled)": int(c) for v, c in zip(vals, counts)}

    @property
    def shapes(self) -> np.ndarray:
        """Return the (N, 2) array of map heights and widths."""
        return np.array([m.shape[:2] for m in self.maps], dtype=np.int64).reshape(-1, 2)

    def fail_rates(self) -> np.ndarray:
        """Share of failing dies among the dies on the wafer (wafer maps only)."""
        out = np.empty(len(self), dtype=np.float64)
        for i, m in enumerate(self.maps):
            on = np.count_nonzero(m)
            out[i] = np.count_nonzero(m == 2) / on if on else 0.0
        return out

    @staticmethod
    def concat(parts: Sequence["WaferDataset"], name: str | None = None) -> "WaferDataset":
        """Concatenate data sets of one kind (empty ones skipped); a DataError when nothing is left."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError("nothing to concatenate: every data set is empty")
        kinds = {p.kind for p in parts}
        if len(kinds) > 1:
            raise DataError(f"cannot mix wafer maps and images in one data set ({sorted(kinds)})")
        has_ml = all(p.multilabels is not None for p in parts)
        has_masks = any(p.masks is not None for p in parts)
        return WaferDataset(
            maps=[m for p in parts for m in p.maps],
            labels=np.concatenate([p.labels for p in parts]),
            meta=pd.concat([p.meta for p in parts], ignore_index=True),
            multilabels=np.concatenate([p.multilabels for p in parts]) if has_ml else None,
            masks=[k for p in parts for k in (p.masks if p.masks is not None else [None] * len(p))] if has_masks else None,
            kind=parts[0].kind,
            name=name or "+".join(p.name for p in parts),
        )

    def summary(self) -> dict:
        """Return counts per class, map sizes and fail rates: what `waferscope data info` prints."""
        shapes = self.shapes
        per_class: dict[str, dict] = {}
        rates = self.fail_rates() if self.kind == "wafer" else None
        for cls_name in sorted(set(self.labels.astype(str))):
            sel = self.labels == cls_name
            entry: dict = {"count": int(sel.sum())}
            if rates is not None:
                r = rates[sel]
                entry.update(fail_rate_mean=round(float(r.mean()), 4), fail_rate_median=round(float(np.median(r)), 4))
            entry.update(rows_median=float(np.median(shapes[sel, 0])), cols_median=float(np.median(shapes[sel, 1])))
            per_class[cls_name or "(unlabelled)"] = entry
        out = {
            "name": self.name,
            "kind": self.kind,
            "count": len(self),
            "per_class": per_class,
            "labelled": int(self.is_labelled.sum()),
            "has_masks": self.masks is not None and any(k is not None for k in self.masks),
            "has_multilabels": self.multilabels is not None,
        }
        if len(self):
            out["shape_min"] = shapes.min(0).tolist()
            out["shape_max"] = shapes.max(0).tolist()
            out["shape_median"] = np.median(shapes, 0).tolist()
        if rates is not None and len(self):
            out["fail_rate_mean"] = round(float(rates.mean()), 4)
        if self.multilabels is not None:
            out["per_pattern"] = {p: int(c) for p, c in zip(BASE_PATTERNS, self.multilabels.sum(0))}
        return out


def validate_wafer_maps(maps: Sequence[np.ndarray], where: str | None = None) -> None:
    """Raise the clear DataError of :func:`validate_map` for the first map that is not a 2-D grid of die states 0/1/2.

    Models call this on what they are given, since a WaferDataset built directly (not through
    ``from_maps``) is not validated; the common case (uint8, max ≤ 2) costs one max.
    """
    for i, m in enumerate(maps):
        if not (isinstance(m, np.ndarray) and m.ndim == 2 and m.dtype == np.uint8 and m.size
                and m.max() <= 2):
            validate_map(m, where, i)


def check_die_states(values: Iterable[int]) -> bool:
    """Return whether every value is a die state (0, 1 or 2)."""
    return set(int(v) for v in values) <= set(DIE_STATES)
