"""MixedWM38 (Wang et al., 2020) ``Wafer_Map_Datasets.npz``.

``arr_0`` N×52×52 die maps, ``arr_1`` N×8 one-hot multi-labels over :data:`BASE_PATTERNS`
(Center, Donut, Edge-Loc, Edge-Ring, Loc, Near-full, Scratch, Random).

Single-label policy (the same naming the synthetic generator uses for its mixes): no pattern set
→ ``none``; exactly one → that pattern's WM-811K name; several → the set patterns joined with
``+`` in BASE_PATTERNS order, e.g. ``Center+Loc+Scratch``. That keeps all 38 MixedWM38 types
apart (a lone "Mixed" class would merge 29 of them) while the 8-dim ``multilabels`` stay the
training target for multi-label models; ``is_mixed`` = more than one pattern.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.classes import BASE_PATTERNS, NORMAL
from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError

MAPS_KEY, LABELS_KEY = "arr_0", "arr_1"


def is_mixedwm38(keys: list[str]) -> bool:
    """Return whether an npz's members are MixedWM38's."""
    return MAPS_KEY in keys and LABELS_KEY in keys


def multilabel_name(row: np.ndarray) -> str:
    """Return the class name of a MixedWM38 label row (patterns joined by "+", or the normal class)."""
    on = [p for p, v in zip(BASE_PATTERNS, row) if v]
    return "+".join(on) if on else NORMAL


def load_mixedwm38(path: str | Path, limits: LoadLimits | None = None) -> WaferDataset:
    """Read a MixedWM38 npz (multi-label wafer maps)."""
    path = Path(path)
    limits = resolve_limits(limits)
    from waferscope.data.loaders.devnpz import npz_headers, read_member

    try:
        with zipfile.ZipFile(path) as z:
            # the maps' count and extent from arr_0's npy header, checked before anything is inflated
            headers = npz_headers(z, path, limits)
            for key in (MAPS_KEY, LABELS_KEY):
                if key not in headers:
                    raise DataError(f"not a MixedWM38 archive: missing {key!r}", path)
            shape, _ = headers[MAPS_KEY]
            if len(shape) != 3 or min(shape) == 0:
                raise DataError(f"'{MAPS_KEY}' must be N×H×W wafer maps, got shape {shape}", path)
            limits.check_count(shape[0], path)
            budget = limits.budget(path)
            for i in range(shape[0]):
                budget.add(shape[1:], f"map {i}")
            maps = read_member(z, MAPS_KEY, headers[MAPS_KEY], path, limits)
            onehot = read_member(z, LABELS_KEY, headers[LABELS_KEY], path, limits)
    except DataError:
        raise
    except Exception as exc:  # truncated zip, bad header
        raise DataError(f"cannot read as .npz ({type(exc).__name__}: {exc})", path) from None
    if maps.ndim != 3 or min(maps.shape) == 0:
        raise DataError(f"'{MAPS_KEY}' must be N×H×W wafer maps, got shape {maps.shape}", path)
    n = len(maps)
    if onehot.shape != (n, len(BASE_PATTERNS)):
        raise DataError(f"'{LABELS_KEY}' must be N×{len(BASE_PATTERNS)} one-hot labels for {n} maps, "
                        f"got shape {onehot.shape}", path)
    if not np.issubdtype(maps.dtype, np.number):
        raise DataError(f"'{MAPS_KEY}' must hold numbers, got {maps.dtype}", path)
    bad = (maps < 0) | (maps > 2) | (maps != np.round(maps)) if maps.dtype.kind == "f" else (maps < 0) | (maps > 2)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(n, -1).any(1))[0])
        raise DataError(f"map {i}: die values must be 0 (no die), 1 (pass) or 2 (fail); "
                        f"found {np.unique(maps[i][bad[i]])[:5].tolist()}", path)
    if not np.isin(onehot, (0, 1)).all():
        raise DataError(f"'{LABELS_KEY}' must hold 0/1 values", path)
    maps = np.ascontiguousarray(maps, dtype=np.uint8)
    onehot = onehot.astype(np.uint8)
    names = {}
    labels = []
    for row in onehot:
        key = row.tobytes()
        if key not in names:
            names[key] = multilabel_name(row)
        labels.append(names[key])
    meta = {"id": [f"{path.stem}-{i}" for i in range(n)], "source": path.name}
    return WaferDataset.from_maps(list(maps), labels, multilabels=onehot, meta=meta, source=path.name,
                                  name=path.stem, validate=False, where=str(path))
