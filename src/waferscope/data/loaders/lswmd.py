"""The Kaggle/MIR WM-811K ``LSWMD.pkl``: a pickled pandas DataFrame, one row per wafer.

Columns: ``waferMap`` (2-D uint8 array), ``dieSize``, ``lotName``, ``waferIndex``,
``trianTestLabel`` (sic; nested array like ``array([['Training']])``) and ``failureType`` (nested
array like ``array([['Loc']])``; an empty array marks an unlabelled wafer — 638,507 of 811,457).

The full file was pickled by pandas 0.x under Python 2; :mod:`.legacy_pickle` maps its old module
names and admits only numpy/pandas data classes. Unpickling still runs code named by the file, so
the loader warns once per process and points at ``waferscope data import LSWMD.pkl --out x.parquet``
so it happens once.

Streaming: the DataFrame is unpickled once, its columns are taken over as plain object arrays
(the frame itself is dropped), and rows are converted batch by batch; after a batch is handed on,
its entries are set to ``None`` so the original maps are freed while the converted batch is
written — never two copies of the whole set.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from waferscope.data.classes import UNLABELLED, canonical_label
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.errors import DataError

MAP_COLUMN = "waferMap"
LABEL_COLUMN = "failureType"
SPLIT_COLUMN = "trianTestLabel"
SPLIT_NAMES = {"training": "train", "train": "train", "test": "test"}


class PickleCodeWarning(UserWarning):
    """Unpickling a file runs code it names."""


_warned = False


def warn_pickle_once(path: Path, importing: bool = False) -> None:
    """Warn once per process that a pickle is read (it is trusted data)."""
    global _warned
    if _warned:
        return
    _warned = True
    risk = (f"{path.name} is a pickle; unpickling can run code named by the file. waferscope only admits "
            "numpy/pandas data classes, but open only pickles you trust")
    advice = (" (converting it once to Parquet, so later runs never unpickle it)" if importing else
              f", and convert it once: waferscope data import {path} --out {path.with_suffix('.parquet').name}")
    warnings.warn(risk + advice, PickleCodeWarning, stacklevel=3)


PROGRESS_MIN_BYTES = 64 << 20  # show an unpickling progress bar for files above this size


class _CountingReader(io.RawIOBase):
    """A raw file that advances a progress bar.

    Wrapped in a 1 MB BufferedReader, so the C unpickler calls back into Python once per
    megabyte, not once per opcode.
    """

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        self.bar.update(n or 0)
        return n


def read_lswmd_frame(path: str | Path, importing: bool = False, progress: bool | None = None) -> pd.DataFrame:
    """Unpickle the DataFrame (legacy module names shimmed) or raise one clear DataError."""
    from tqdm import tqdm

    from waferscope.data.loaders.legacy_pickle import RefusedGlobal, load_legacy_pickle

    path = Path(path)
    warn_pickle_once(path, importing)
    size = path.stat().st_size
    show = size >= PROGRESS_MIN_BYTES if progress is None else progress
    try:
        with open(path, "rb", buffering=0) as raw, tqdm(total=size, unit="B", unit_scale=True, disable=not show,
                                                      desc=f"unpickle {path.name}", mininterval=0.5) as bar:
            obj = load_legacy_pickle(io.BufferedReader(_CountingReader(raw, bar), buffer_size=1 << 20))
    except RefusedGlobal as exc:
        raise DataError(str(exc), path) from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"truncated or corrupt pickle ({type(exc).__name__}: {exc or 'unexpected end of file'})",
                        path) from None
    except MemoryError:
        raise DataError("not enough memory to unpickle the file", path) from None
    except Exception as exc:  # AttributeError/ImportError/TypeError/ValueError from a corrupt stream
        raise DataError(f"cannot unpickle as a pandas DataFrame ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(obj, pd.DataFrame):
        raise DataError(f"expected a pickled pandas DataFrame (the LSWMD layout), got {type(obj).__name__}", path)
    if MAP_COLUMN not in obj.columns:
        raise DataError(f"no '{MAP_COLUMN}' column; columns are {', '.join(map(str, obj.columns))}", path)
    return obj


def nested_text(v) -> str:
    """``array([['Loc']])`` → 'Loc'; empty array / None / NaN → ''."""
    if v is None:
        return ""
    if isinstance(v, np.ndarray):
        if v.size == 0:
            return ""
        v = v.flat[0]
    elif isinstance(v, (list, tuple)):
        flat = np.asarray(v, dtype=object).ravel()
        if flat.size == 0:
            return ""
        v = flat[0]
    if isinstance(v, bytes):
        v = v.decode("latin1")
    if isinstance(v, float) and v != v:
        return ""
    return str(v).strip()


def _column(df: pd.DataFrame, name: str, default, n: int) -> np.ndarray:
    if name not in df.columns:
        return np.full(n, default, dtype=object)
    arr = df[name].to_numpy(dtype=object, copy=True)  # own copy of the pointers, not of the objects
    return arr


def iter_lswmd(path: str | Path, batch_size: int = 8192, frame: pd.DataFrame | None = None,
               importing: bool = False, progress: bool | None = None) -> tuple[int, Iterator[WaferDataset]]:
    """(row count, iterator of WaferDataset batches).

    Frees the source maps batch by batch. ``progress``: unpickling progress bar (None =
    only for files over 64 MB).
    """
    path = Path(path)
    df = read_lswmd_frame(path, importing, progress) if frame is None else frame
    n = len(df)
    row_ids = df.index.to_numpy()
    maps_col = _column(df, MAP_COLUMN, None, n)
    labels_col = _column(df, LABEL_COLUMN, None, n)
    split_col = _column(df, SPLIT_COLUMN, None, n)
    lot = df["lotName"].to_numpy(dtype=object) if "lotName" in df else np.full(n, "", dtype=object)
    wafer_index = pd.to_numeric(df["waferIndex"], errors="coerce").to_numpy(float) if "waferIndex" in df else np.full(n, np.nan)
    die_size = pd.to_numeric(df["dieSize"], errors="coerce").to_numpy(float) if "dieSize" in df else np.full(n, np.nan)
    del df, frame  # the object arrays above now hold the only references to the maps

    def batches() -> Iterator[WaferDataset]:
        label_cache: dict[str, str] = {}
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            maps = []
            for i in range(start, stop):
                try:
                    maps.append(validate_map(maps_col[i], str(path), None))
                except DataError as exc:
                    raise DataError(f"row {row_ids[i]} ({MAP_COLUMN}): {exc.problem[len('map: '):]}", path) from None
            labels = []
            for v in labels_col[start:stop]:
                raw = nested_text(v)
                lab = label_cache.get(raw)
                if lab is None:
                    lab = label_cache[raw] = canonical_label(raw) if raw else UNLABELLED
                labels.append(lab)
            splits = [SPLIT_NAMES.get(nested_text(v).lower(), nested_text(v)) for v in split_col[start:stop]]
            meta = pd.DataFrame({
                "id": [f"{path.stem}-{r}" for r in row_ids[start:stop]],
                "lot": [nested_text(x) if not isinstance(x, str) else x for x in lot[start:stop]],
                "wafer_index": wafer_index[start:stop],
                "die_size": die_size[start:stop],
                "split": splits,
                "source": path.name,
            })
            batch = WaferDataset.from_maps(maps, labels, meta=meta, source=path.name, name=path.stem,
                                           validate=False, where=str(path))
            maps_col[start:stop] = None  # free the originals: only the batch holds them now
            labels_col[start:stop] = None
            split_col[start:stop] = None
            yield batch

    return n, batches()


def load_lswmd(path: str | Path) -> WaferDataset:
    """Return the whole file as one WaferDataset (the maps are the unpickled arrays, not copies)."""
    path = Path(path)
    n, it = iter_lswmd(path, batch_size=65536)
    parts = list(it)
    if not parts:
        return WaferDataset.from_maps([], [], source=path.name, name=path.stem)
    ds = WaferDataset.concat(parts, name=path.stem) if len(parts) > 1 else parts[0]
    ds.name = path.stem
    return ds
