"""waferscope's canonical on-disk format: one Parquet file, one row per wafer map (or image).

Why Parquet (details in docs/data.md): it is columnar and compressed, it is written and read in
row groups so a set of any size (the full 811,457-map WM-811K) streams through a fixed amount of
memory, and pandas, Arrow, Polars, DuckDB and Spark all read it without waferscope.

Columns (``SCHEMA``): ``id``, ``label`` ("" = unlabelled), ``multilabel`` (list<uint8> over
:data:`BASE_PATTERNS`, null when unknown), ``rows``, ``cols``, ``channels`` (1 for wafer maps and
grey images, 3 for RGB), ``map`` (the raw uint8 bytes, row-major, H×W[×C]), ``mask`` (uint8 0/1
bytes, H×W, null when there is none), ``lot``, ``wafer_index``, ``die_size``, ``split``,
``source``, ``kind`` ("wafer" or "image"). Extra metadata columns of a data set are kept as extra
Parquet columns when Arrow can store them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.classes import BASE_PATTERNS
from waferscope.data.dataset import META_COLUMNS, WaferDataset
from waferscope.errors import DataError

FORMAT_NAME = "waferscope-parquet"
FORMAT_VERSION = 1
DEFAULT_ROW_GROUP = 8192

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("label", pa.string()),
    ("multilabel", pa.list_(pa.uint8())),
    ("rows", pa.int32()),
    ("cols", pa.int32()),
    ("channels", pa.int8()),
    ("map", pa.binary()),
    ("mask", pa.binary()),
    ("lot", pa.string()),
    ("wafer_index", pa.float64()),
    ("die_size", pa.float64()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("kind", pa.string()),
])
REQUIRED_COLUMNS = ("id", "label", "rows", "cols", "map")
_CORE = set(SCHEMA.names)


# ---- writing ------------------------------------------------------------------------------------
def dataset_to_table(ds: WaferDataset, schema: pa.Schema | None = None) -> pa.Table:
    """One Arrow table (a row group's worth) from a WaferDataset."""
    n = len(ds)
    maps = ds.maps
    shapes = np.array([m.shape[:2] for m in maps], dtype=np.int32).reshape(-1, 2)
    chans = np.array([m.shape[2] if m.ndim == 3 else 1 for m in maps], dtype=np.int8)
    map_bytes = pa.array([np.ascontiguousarray(m, dtype=np.uint8).tobytes() for m in maps], type=pa.binary())
    if ds.masks is not None:
        mask_bytes = pa.array([None if k is None else np.ascontiguousarray(k, dtype=np.uint8).tobytes()
                               for k in ds.masks], type=pa.binary())
    else:
        mask_bytes = pa.nulls(n, type=pa.binary())
    if ds.multilabels is not None:
        ml = np.asarray(ds.multilabels, dtype=np.uint8).reshape(n, len(BASE_PATTERNS))
        offsets = pa.array(np.arange(0, (n + 1) * ml.shape[1], ml.shape[1], dtype=np.int32))
        multilabel = pa.ListArray.from_arrays(offsets, pa.array(ml.ravel(), type=pa.uint8()))
    else:
        multilabel = pa.nulls(n, type=pa.list_(pa.uint8()))
    meta = ds.meta

    def text(col: str) -> pa.Array:
        vals = meta[col] if col in meta else pd.Series([""] * n)
        return pa.array(vals.fillna("").astype(str).tolist(), type=pa.string())

    def number(col: str) -> pa.Array:
        vals = pd.to_numeric(meta[col], errors="coerce") if col in meta else pd.Series(np.full(n, np.nan))
        return pa.array(vals.to_numpy(dtype=np.float64), type=pa.float64())

    columns = {
        "id": text("id"),
        "label": pa.array([str(x) for x in ds.labels], type=pa.string()),
        "multilabel": multilabel,
        "rows": pa.array(shapes[:, 0], type=pa.int32()),
        "cols": pa.array(shapes[:, 1], type=pa.int32()),
        "channels": pa.array(chans, type=pa.int8()),
        "map": map_bytes,
        "mask": mask_bytes,
        "lot": text("lot"),
        "wafer_index": number("wafer_index"),
        "die_size": number("die_size"),
        "split": text("split"),
        "source": text("source"),
        "kind": pa.array([ds.kind] * n, type=pa.string()),
    }
    arrays = [columns[name] for name in SCHEMA.names]
    fields = list(SCHEMA)
    extra_names = [c for c in meta.columns if c not in _CORE and c not in META_COLUMNS]
    if schema is not None:  # later batches follow the first batch's extra columns exactly
        extra_names = [f.name for f in schema if f.name not in _CORE]
    for name in extra_names:
        field = schema.field(name) if schema is not None else None
        try:
            vals = meta[name] if name in meta else pd.Series([None] * n)
            arr = pa.array(vals.tolist(), type=None if field is None else field.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            if field is not None:
                raise DataError(f"metadata column {name!r} cannot be stored as {field.type}") from None
            continue  # an object column Arrow cannot represent: not part of the canonical format
        arrays.append(arr)
        fields.append(field or pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _batches(data: WaferDataset | Iterable[WaferDataset], row_group_size: int) -> Iterator[WaferDataset]:
    if isinstance(data, WaferDataset):
        for start in range(0, len(data), row_group_size):
            yield data.subset(np.arange(start, min(start + row_group_size, len(data))))
        return
    yield from data


def write_parquet(
    data: WaferDataset | Iterable[WaferDataset],
    path: str | Path,
    *,
    row_group_size: int = DEFAULT_ROW_GROUP,
    compression: str = "zstd",
    name: str | None = None,
) -> Path:
    """Write a data set (or an iterable of batches, e.g. from a streaming importer) to ``path``.

    Each batch becomes one or more row groups, so only one batch is ever in memory. The file is
    written under a temporary name and renamed into place only when complete: an interrupted
    write leaves no file that looks finished.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise DataError("output folder does not exist", path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    kind = None
    count = 0
    ds_name = name
    try:
        for batch in _batches(data, row_group_size):
            if not len(batch):
                continue
            if kind is None:
                kind = batch.kind
                ds_name = ds_name or batch.name
            elif batch.kind != kind:
                raise DataError(f"cannot mix {kind} and {batch.kind} data in one file", path)
            table = dataset_to_table(batch, schema)
            if writer is None:
                schema = table.schema.with_metadata({
                    "waferscope": json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                              "name": ds_name, "kind": kind}),
                })
                writer = pq.ParquetWriter(tmp, schema, compression=compression)
            writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=row_group_size)
            count += len(batch)
        if writer is None:  # nothing at all: still write a valid, empty file
            schema = SCHEMA.with_metadata({"waferscope": json.dumps(
                {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": ds_name or path.stem, "kind": "wafer"})})
            writer = pq.ParquetWriter(tmp, schema, compression=compression)
        writer.close()
        writer = None
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---- reading ------------------------------------------------------------------------------------
def _open(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise DataError("no such file", path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # ArrowInvalid for truncated/non-Parquet files
        raise DataError(f"cannot read as Parquet ({exc})", path) from None
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(f"not a waferscope Parquet file: missing column(s) {', '.join(missing)}", path)
    return pf


def _file_info(pf: pq.ParquetFile, path: Path) -> dict:
    raw = (pf.schema_arrow.metadata or {}).get(b"waferscope")
    info = json.loads(raw) if raw else {}
    info.setdefault("name", path.stem)
    return info


def _binary_views(column: pa.ChunkedArray | pa.Array, sizes: np.ndarray, what: str, path: Path,
                  max_value: int | None = None) -> list[np.ndarray | None]:
    """Split an Arrow binary column into per-row uint8 arrays.

    Each Arrow chunk is copied once into one writable buffer that its rows share (no per-row
    allocation, no read-only views).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[np.ndarray | None] = []
    for arr in chunks:
        n = len(arr)
        if n == 0:
            continue
        start = len(out)
        valid = np.ones(n, dtype=bool) if arr.null_count == 0 else ~arr.is_null().to_numpy(zero_copy_only=False)
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + n + 1].astype(np.int64)
        lengths = np.diff(offsets)
        bad = valid & (lengths != sizes[start:start + n])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"row {start + i}: {what} holds {lengths[i]} bytes but its shape needs "
                            f"{sizes[start + i]}", path)
        data = arr.buffers()[2]
        flat = (np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]].copy() if data is not None
                else np.zeros(0, np.uint8))
        if max_value is not None and flat.size and int(flat.max()) > max_value:
            row = start + int(np.searchsorted(offsets[1:] - offsets[0], int(np.argmax(flat > max_value)), "right"))
            raise DataError(f"row {row}: {what} values must be 0 to {max_value}; found {int(flat.max())}", path)
        offsets -= offsets[0]
        out.extend(flat[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(n))
    return out


def table_to_dataset(table: pa.Table, path: Path, name: str | None = None) -> WaferDataset:
    """Decode an Arrow table in waferscope's Parquet layout into a WaferDataset."""
    n = table.num_rows
    cols = set(table.column_names)
    rows = table.column("rows").to_numpy().astype(np.int64)
    ncols = table.column("cols").to_numpy().astype(np.int64)
    chans = table.column("channels").to_numpy().astype(np.int64) if "channels" in cols else np.ones(n, np.int64)
    kinds = set(table.column("kind").unique().to_pylist()) if "kind" in cols else {"wafer"}
    kind = kinds.pop() if len(kinds) == 1 else "wafer"
    if kinds:
        raise DataError("the file mixes wafer maps and images", path)
    if ((rows <= 0) | (ncols <= 0)).any():
        raise DataError(f"row {int(np.flatnonzero((rows <= 0) | (ncols <= 0))[0])}: empty map", path)
    flat_maps = _binary_views(table.column("map"), rows * ncols * chans, "map", path,
                              max_value=2 if kind == "wafer" else None)
    if any(m is None for m in flat_maps):
        raise DataError(f"row {next(i for i, m in enumerate(flat_maps) if m is None)}: the map is missing", path)
    maps = [m.reshape((r, c, k) if k > 1 else (r, c)) for m, r, c, k in zip(flat_maps, rows, ncols, chans)]
    masks = None
    if "mask" in cols and table.column("mask").null_count < n:
        flat_masks = _binary_views(table.column("mask"), rows * ncols, "mask", path, max_value=1)
        masks = [None if k is None else k.reshape(r, c).astype(bool) for k, r, c in zip(flat_masks, rows, ncols)]
    multilabels = None
    if "multilabel" in cols and n and table.column("multilabel").null_count == 0:
        ml = table.column("multilabel").combine_chunks()
        flat = ml.flatten().to_numpy(zero_copy_only=False).astype(np.uint8)
        if flat.size != n * len(BASE_PATTERNS):
            raise DataError(f"multilabel lists must have {len(BASE_PATTERNS)} entries each", path)
        multilabels = flat.reshape(n, len(BASE_PATTERNS))
    meta_cols = [c for c in table.column_names if c not in _CORE or c in META_COLUMNS]
    meta = table.select(meta_cols).to_pandas() if meta_cols else pd.DataFrame(index=range(n))
    for col in ("lot", "split", "source"):
        if col in meta:
            meta[col] = meta[col].fillna("").astype(str)
    labels = table.column("label").to_pandas().fillna("").astype(str).to_numpy(dtype=object)
    return WaferDataset(maps=maps, labels=labels, meta=_complete_meta(meta, n, path.name), multilabels=multilabels,
                        masks=masks, kind=kind, name=name or path.stem)


def _complete_meta(meta: pd.DataFrame, n: int, source: str) -> pd.DataFrame:
    meta = meta.reset_index(drop=True)
    defaults = {"id": [f"{source}-{i}" for i in range(n)], "lot": "", "wafer_index": np.nan,
                "die_size": np.nan, "split": "", "source": source}
    for col in META_COLUMNS:
        if col not in meta:
            meta[col] = defaults[col]
    meta["id"] = meta["id"].astype(str)
    return meta


def read_parquet(path: str | Path, limits: LoadLimits | None = None) -> WaferDataset:
    """Return the whole file as one WaferDataset.

    Its size checked against ``limits`` before the maps are decoded
    (:func:`check_parquet_limits`), and the decoded bytes counted row group by row group.
    """
    path = Path(path)
    limits = resolve_limits(limits)
    pf = _open(path)
    info = _file_info(pf, path)
    check_parquet_limits(pf, path, limits)
    cap = limits.max_decompressed_bytes
    try:
        parts, decoded = [], 0
        for i in range(pf.metadata.num_row_groups):  # a row group whose metadata lied stops the read here
            part = pf.read_row_group(i)
            decoded += part.nbytes
            if cap is not None and decoded > cap:
                raise DataError(f"row group {i}: the data decodes to more than {cap:,} bytes "
                                "(max_decompressed_bytes)", path)
            parts.append(part)
        table = pa.concat_tables(parts) if parts else pf.schema_arrow.empty_table()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read as Parquet ({exc})", path) from None
    return table_to_dataset(table, path, info.get("name"))


def check_parquet_limits(pf: pq.ParquetFile, path: Path, limits: LoadLimits) -> None:
    """Refuse a file over ``limits`` from what it states, before any map is decoded.

    The row count (footer), each map's rows×cols×channels (three small integer columns, read alone),
    the bytes the row groups state once uncompressed, and the ``map`` column's stated size against
    what those shapes need (a file whose shapes understate its maps is refused here, not after
    decoding).
    """
    md = pf.metadata
    limits.check_count(md.num_rows, path)
    cap = limits.max_decompressed_bytes
    stated = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    if cap is not None and stated > cap:
        raise DataError(f"the row groups state {stated:,} bytes uncompressed, more than {cap:,} "
                        "(max_decompressed_bytes)", path)
    names = pf.schema_arrow.names
    try:
        sizes = pf.read(columns=[c for c in ("rows", "cols", "channels") if c in names])
    except Exception as exc:
        raise DataError(f"cannot read as Parquet ({exc})", path) from None
    for col in ("rows", "cols"):
        if sizes.column(col).null_count:
            raise DataError(f"column {col!r} has missing values", path)
    rows = sizes.column("rows").to_numpy().astype(np.int64)
    cols = sizes.column("cols").to_numpy().astype(np.int64)
    chans = (sizes.column("channels").fill_null(1).to_numpy().astype(np.int64) if "channels" in names
             else np.ones(len(rows), np.int64))
    bad = (rows <= 0) | (cols <= 0) | (chans <= 0)
    if bad.any():
        raise DataError(f"row {int(np.flatnonzero(bad)[0])}: empty map", path)
    budget = limits.budget(path)
    for i, (r, c, k) in enumerate(zip(rows, cols, chans)):
        budget.add((r, c) if k == 1 else (r, c, k), f"row {i}")
    # the map column as stored, uncompressed: the bytes the shapes need + a 4-byte length per value
    # (+ slack for page headers/levels); more means a row's map is longer than its shape says
    need = int((rows * cols * chans).sum()) + 16 * len(rows) + (1 << 20)
    map_stated = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        map_stated += sum(rg.column(j).total_uncompressed_size for j in range(rg.num_columns)
                          if rg.column(j).path_in_schema == "map")
    if map_stated > need:
        raise DataError(f"the 'map' column states {map_stated:,} bytes uncompressed but the rows/cols "
                        f"columns need about {need:,}: the maps are larger than their shapes say", path)


def iter_parquet(path: str | Path, batch_size: int = DEFAULT_ROW_GROUP) -> Iterator[WaferDataset]:
    """Stream the file as WaferDataset batches of at most ``batch_size`` rows."""
    path = Path(path)
    pf = _open(path)
    info = _file_info(pf, path)
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            yield table_to_dataset(pa.Table.from_batches([batch]), path, info.get("name"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read as Parquet ({exc})", path) from None


def read_ids(path: str | Path) -> list[str]:
    """Return the sample ids of a file, as read_parquet / iter_parquet give them, without reading the maps."""
    path = Path(path)
    pf = _open(path)
    try:
        table = pf.read(columns=["id"])
    except Exception as exc:
        raise DataError(f"cannot read as Parquet ({exc})", path) from None
    return _complete_meta(table.to_pandas(), table.num_rows, path.name)["id"].tolist()


def parquet_count(path: str | Path) -> int:
    """Return the number of maps in a Parquet file, from its metadata alone."""
    return _open(Path(path)).metadata.num_rows
