"""Run an exported ONNX model over Parquet partitions, one result file per input partition.

The same per-partition function serves ``--engine local`` (a loop in this process) and
``--engine dask`` (one task per partition on a LocalCluster or an existing scheduler), so the two
paths give identical results by construction. Workers get the ONNX model as bytes (no shared
file system needed) and cache one onnxruntime session per process with 1 intra-op thread.
Each result is written to a hidden temp name and renamed, so a failed run leaves no file that
looks complete.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from waferscope.errors import ConfigError, DataError

STREAM_BATCH = 4096  # rows read from a partition at a time: memory stays flat however big the file
_SESSIONS: dict[str, object] = {}  # per worker process: model digest -> OnnxModel


def list_partitions(spec: str) -> list[Path]:
    """A directory (its *.parquet), a glob, or one file; sorted so output order is stable."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
    elif any(ch in spec for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(spec))
    elif p.is_file():
        files = [p]
    else:
        raise DataError("no such file or directory", spec)
    if not files:
        raise DataError("no .parquet partitions match", spec)
    return files


def export_model_bytes(model) -> bytes:
    """The ONNX bytes of an estimator (exported and verified now) or of an exported .onnx file."""
    from waferscope.export import export_onnx, read_metadata

    if isinstance(model, (str, Path)):
        read_metadata(model)  # a clear error now, not one per worker, if it is no waferscope export
        return Path(model).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        return Path(path).read_bytes()


def _session(onnx_bytes: bytes):
    from waferscope.export import OnnxModel

    key = hashlib.sha256(onnx_bytes).hexdigest()
    if key not in _SESSIONS:
        fd, tmp = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as fh:
            fh.write(onnx_bytes)
        try:
            _SESSIONS[key] = OnnxModel(tmp, threads=1)
        finally:
            os.unlink(tmp)
    return _SESSIONS[key]


def _result_table(model, ds):
    import pyarrow as pa

    cols = {"id": pa.array(ds.ids.astype(str)),
            "label": pa.array([str(x) for x in ds.labels], type=pa.string())}  # "" = unlabelled
    if "lot" in ds.meta:
        cols["lot"] = pa.array(ds.meta["lot"].astype(str).to_numpy())
    if "wafer_index" in ds.meta:
        cols["wafer_index"] = pa.array(pd.to_numeric(ds.meta["wafer_index"], errors="coerce").to_numpy(np.float64))
    if model.kind == "classifier":
        proba = model.predict_proba(ds)
        classes = list(model.classes_)
        cols["predicted"] = pa.array(np.asarray(classes, dtype=object)[proba.argmax(1)].astype(str))
        for j, c in enumerate(classes):
            cols[f"p_{c}"] = pa.array(proba[:, j].astype(np.float64))
    else:
        cols["score"] = pa.array(model.score(ds).scores.astype(np.float64))
    return pa.table(cols)


def score_partition(onnx_bytes: bytes, src: str, out_dir: str, batch: int = STREAM_BATCH) -> tuple[str, int]:
    """Score one Parquet partition, streaming it in batches; returns (result file, rows)."""
    import pyarrow.parquet as pq

    from waferscope.data.io_parquet import iter_parquet

    model = _session(onnx_bytes)
    final = Path(out_dir) / Path(src).name
    tmp = Path(out_dir) / f".{final.name}.part-{os.getpid()}"
    writer, rows = None, 0
    try:
        for ds in iter_parquet(src, batch_size=batch):
            if len(ds) == 0:
                continue
            table = _result_table(model, ds)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += len(ds)
        if writer is None:
            raise DataError("no maps in this partition", src)
        writer.close()
        writer = None
        os.replace(tmp, final)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return str(final), rows


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a bad --out before any cluster is started or model exported."""
    if out.exists() and not out.is_dir():
        raise ConfigError("--out must be a directory", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError("output directory is not empty (give --overwrite to replace it)", out)


def prepare_out(out: Path, overwrite: bool) -> None:
    check_out(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _client(scheduler: str | None, workers: int, timeout: float):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=timeout), None
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler within {timeout:g} s ({exc})", scheduler) from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


def run_partitions(model, data: str, out: Path, engine: str = "local", scheduler: str | None = None,
                   workers: int = 2, overwrite: bool = False, timeout: float = 10.0) -> tuple[list[Path], int]:
    """Score every partition of ``data`` into ``out`` (one file per partition); (files, rows).

    ``model`` is an estimator that exports to ONNX, or the path of a `waferscope export` file.

    On any failure the partial results are removed, so ``out`` never looks complete."""
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown engine {engine!r}: expected 'local' or 'dask'")
    files = list_partitions(data)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise DataError("two partitions share a file name; results are named after their input", data)
    out = Path(out)
    check_out(out, overwrite)
    onnx_bytes = export_model_bytes(model)
    client = cluster = None
    if engine == "dask":
        client, cluster = _client(scheduler, workers, timeout)  # a bad scheduler fails before --out is touched
    try:
        prepare_out(out, overwrite)
        try:
            if engine == "local":
                results = [score_partition(onnx_bytes, str(f), str(out)) for f in files]
            else:
                blob = client.scatter(onnx_bytes, broadcast=True)
                futures = [client.submit(score_partition, blob, str(f), str(out), pure=False) for f in files]
                try:
                    results = client.gather(futures)
                except BaseException:
                    client.cancel(futures)  # the other partitions stop before --out is removed
                    raise
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
    finally:  # also when --out is refused: a client left open keeps reconnecting to its scheduler
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return [Path(r[0]) for r in results], sum(r[1] for r in results)


def run_cli(model, data: list[str], out: Path, engine: str, scheduler: str | None, workers: int,
            overwrite: bool, unsupported: dict[str, bool]) -> str | None:
    """The ``--engine`` part of ``classify predict`` / ``detect score``: None when the command's own
    single-process CSV path should run, else the summary line of a partitioned run.

    ``unsupported`` names the command's options that the partitioned path does not implement, so a
    user who gave one gets an error instead of silently different output."""
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown --engine {engine!r}: expected local or dask")
    if engine == "local":
        if scheduler or overwrite:
            raise ConfigError("--scheduler and --overwrite go with --engine dask")
        return None
    given = [name for name, on in unsupported.items() if on]
    if given:
        raise ConfigError(f"{', '.join(given)} not supported with --engine dask yet")
    if len(data) != 1:
        raise ConfigError("--engine dask takes one --data: a folder of .parquet partitions, a glob or one file")
    files, rows = run_partitions(model, data[0], out, engine="dask", scheduler=scheduler, workers=workers,
                                 overwrite=overwrite)
    return f"scored {rows} maps in {len(files)} partitions with Dask; wrote {out}/ (one .parquet per partition)"
