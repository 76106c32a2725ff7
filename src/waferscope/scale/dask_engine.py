"""Run an exported ONNX model over Parquet partitions, one result file per input partition.

The same per-partition function serves ``engine="local"`` (a loop in this process) and
``engine="dask"`` (one task per partition on a LocalCluster or an existing scheduler), so the two
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
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from waferscope.errors import ConfigError, DataError, WaferscopeError
from waferscope.utils import anomaly_map_names, save_npy

STREAM_BATCH = 4096  # rows read from a partition at a time: memory stays flat however big the file
_SESSIONS: dict[str, object] = {}  # per worker process: model digest -> OnnxModel


def list_partitions(spec: str) -> list[Path]:
    """Return a directory (its *.parquet), a glob, or one file; sorted so output order is stable."""
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
    """Return the ONNX bytes of an estimator (exported and verified now) or of an exported .onnx file."""
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


class ScaleRun(NamedTuple):
    """What a partitioned run wrote.

    The result files, the rows scored, the class mix the probabilities were moved to (``prior=``;
    None without one), how many scores reached ``threshold=`` (None without one), how many wafers the
    open-set model abstained on (``open_set=``).
    """

    files: list[Path]
    rows: int
    prior_used: np.ndarray | None = None
    above: int | None = None
    unknown: int | None = None  # with open_set=: wafers answered 'unknown'


def _class_columns(classes, proba: np.ndarray) -> dict:
    import pyarrow as pa

    cols = {"predicted": pa.array(np.asarray(classes, dtype=object)[proba.argmax(1)].astype(str))}
    for j, c in enumerate(classes):
        cols[f"p_{c}"] = pa.array(proba[:, j].astype(np.float64))
    return cols


def _result_table(model, ds, shift=None, threshold: float | None = None, map_dir: str | None = None,
                  map_names: list[str] | None = None, open_set=None):
    """Return the result rows of one batch; writes its anomaly maps to ``map_dir``/``map_names`` when given.

    ``open_set``: an open-set model (:class:`waferscope.search.discover.OpenSetModel`) that reads the
    classifier's own probabilities: ``predicted`` is ``unknown`` where it abstains, and an
    ``open_set_score`` column is added.
    """
    import pyarrow as pa

    cols = {"id": pa.array(ds.ids.astype(str)),
            "label": pa.array([str(x) for x in ds.labels], type=pa.string())}  # "" = unlabelled
    if "lot" in ds.meta:
        cols["lot"] = pa.array(ds.meta["lot"].astype(str).to_numpy())
    if "wafer_index" in ds.meta:
        cols["wafer_index"] = pa.array(pd.to_numeric(ds.meta["wafer_index"], errors="coerce").to_numpy(np.float64))
    if model.kind == "classifier":
        if open_set is None:
            proba = model.predict_proba(ds)
        else:  # on the model's own probabilities, before any prior shift; one task per core: no inner threads
            proba, score, names = open_set.classify(model, ds, n_jobs=1)
        if shift is not None:  # a fixed target mix: per row, so per partition = over the whole archive
            proba = shift.apply(proba)[0]
        cols.update(_class_columns(model.classes_, proba))
        if open_set is not None:
            from waferscope.search.open_set import UNKNOWN

            cols["predicted"] = pa.array(np.where(names == UNKNOWN, UNKNOWN, cols["predicted"].to_numpy(False)))
            cols["open_set_score"] = pa.array(np.asarray(score, dtype=np.float64))
        return pa.table(cols)
    result = model.score(ds)
    cols["score"] = pa.array(result.scores.astype(np.float64))
    if threshold is not None:
        cols["anomalous"] = pa.array(result.scores >= threshold)
    if map_dir is not None:
        for name, m in zip(map_names, result.maps):
            save_npy(Path(map_dir) / name, m)
    return pa.table(cols)


def _write_atomic(final: Path, tables) -> int:
    """Write an iterable of Arrow tables as one Parquet file, temp then rename; returns the rows."""
    import pyarrow.parquet as pq

    tmp = final.with_name(f".{final.name}.part-{os.getpid()}")
    writer, rows = None, 0
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:
            raise DataError("no maps in this partition", final)
        writer.close()
        writer = None
        os.replace(tmp, final)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return rows


def score_partition(onnx_bytes: bytes, src: str, out_dir: str, batch: int = STREAM_BATCH, shift=None,
                    threshold: float | None = None, map_dir: str | None = None,
                    map_names: list[str] | None = None, open_set=None) -> tuple[str, int]:
    """Score one Parquet partition, streaming it in batches; returns (result file, rows).

    ``shift``: a fixed class-prior shift (``PriorShift``) for the probabilities; ``threshold``: adds
    ``anomalous``; ``map_dir`` + ``map_names`` (one file name per row): the anomaly maps;
    ``open_set``: 'unknown' where the open-set model abstains, and ``open_set_score``.
    """
    from waferscope.data.io_parquet import iter_parquet

    model = _session(onnx_bytes)

    def tables():
        done = 0
        for ds in iter_parquet(src, batch_size=batch):
            if len(ds):
                names = None if map_names is None else map_names[done:done + len(ds)]
                done += len(ds)
                yield _result_table(model, ds, shift, threshold, map_dir, names, open_set)

    final = Path(out_dir) / Path(src).name
    try:
        rows = _write_atomic(final, tables())
    except WaferscopeError as exc:
        if exc.path is None or exc.path == str(final):  # name the input partition, not our output
            raise DataError(exc.problem, src) from None
        raise
    return str(final), rows


def reprior_partition(src: str, out_dir: str, shift) -> tuple[str, int]:
    """Second pass of ``prior="estimate"``.

    A partition's raw results with the probabilities moved to ``shift``'s (now fixed) class
    mix, written to ``out_dir`` under the same name.
    """
    import pyarrow.parquet as pq

    from waferscope.search.open_set import UNKNOWN

    table = pq.read_table(src)
    classes = [c[2:] for c in table.column_names if c.startswith("p_")]
    proba = np.column_stack([table.column(f"p_{c}").to_numpy() for c in classes])
    abstained = None
    if "open_set_score" in table.column_names:  # abstention read the model's own probabilities: it stays
        abstained = table.column("predicted").to_numpy(zero_copy_only=False) == UNKNOWN
    for name, col in _class_columns(classes, shift.apply(proba)[0]).items():
        if name == "predicted" and abstained is not None:
            import pyarrow as pa

            col = pa.array(np.where(abstained, UNKNOWN, col.to_numpy(False)))
        table = table.set_column(table.column_names.index(name), name, col)
    final = Path(out_dir) / Path(src).name
    return str(final), _write_atomic(final, [table])


def _probabilities(files: list[Path]) -> np.ndarray:
    """Return the p_<class> columns of result files, stacked in file order."""
    import pyarrow.parquet as pq

    cols = [c for c in pq.read_schema(files[0]).names if c.startswith("p_")]
    return np.concatenate([pq.read_table(f, columns=cols).to_pandas()[cols].to_numpy(np.float64) for f in files])


def check_out(out: Path, overwrite: bool, name: str = "out") -> None:
    """Refuse a bad output folder (parameter ``name``: out or maps) before any cluster is started or model exported."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{name} must be a directory", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{name} is not empty (overwrite=True replaces it)", out)


def _staging_dir(target: Path) -> Path:
    """Return a hidden, empty folder beside ``target`` on the same file system.

    The workers write there and the finished folder is renamed to ``target``, so ``target``
    never holds a partial result.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir, not tempfile.mkdtemp: mkdtemp's mode 0700 would outlive the rename; this gets the umask's.
    path = target.parent / f".{target.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _publish(staging: Path, target: Path) -> None:
    """Replace ``target`` (checked empty, or ``overwrite``, before the run) by the finished ``staging``."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def _remove_staging(path: Path, settle: float) -> None:
    """Remove a failed run's staging folder.

    A Dask task already running when the run failed cannot be stopped and may still be
    writing into it, so look again for ``settle`` seconds.
    """
    deadline = time.monotonic() + settle
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


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


def _run_tasks(client, fn, arg_lists: list[tuple], progress: bool = False, what: str = "partitions") -> list:
    """``fn(*args)`` for each args, results in the order of ``arg_lists``.

    A loop here (no client), else one Dask task each; on a failure the other tasks are
    cancelled before the error goes up. ``progress``: a bar (``what``) over the finished tasks.
    """
    from tqdm.auto import tqdm

    if client is None:
        return [fn(*args) for args in tqdm(arg_lists, desc=what, unit="partition", disable=not progress)]
    futures = [client.submit(fn, *args, pure=False) for args in arg_lists]
    try:
        if progress:
            from distributed import as_completed

            with tqdm(total=len(futures), desc=what, unit="partition") as bar:
                for _ in as_completed(futures):
                    bar.update()
        return client.gather(futures)
    except BaseException:
        client.cancel(futures)  # the other partitions stop before the output is removed
        raise


def _map_names(files: list[Path]) -> list[list[str]]:
    """Return the anomaly-map file name of every row, per partition.

    Named over the whole archive in partition order, as the single-process scoring names
    them over its one data set.
    """
    from waferscope.data.io_parquet import read_ids

    ids = [read_ids(f) for f in files]
    names = iter(anomaly_map_names([i for part in ids for i in part]))
    return [[next(names) for _ in part] for part in ids]


def _check_targets(out: Path, maps, overwrite: bool) -> tuple[Path, Path | None]:
    """Refuse an ``out`` (and ``maps``) that would overwrite without ``overwrite``, or overlap."""
    check_out(out, overwrite)
    if maps is not None:
        maps = Path(maps)
        check_out(maps, overwrite, "maps")
        if maps.resolve() == out.resolve() or out.resolve() in maps.resolve().parents:
            raise ConfigError("maps must not be out or inside it (out holds one .parquet per partition)", maps)
    return out, maps


def _check_open_set(model, open_set) -> None:
    """Refuse an open-set model that does not go with ``model`` (not a classifier, other classes)."""
    from waferscope.export import read_metadata

    meta = read_metadata(model) if isinstance(model, (str, Path)) else \
        {"kind": model.registry_kind, "classes": [str(c) for c in getattr(model, "classes_", [])]}
    if meta.get("kind") != "classifier":
        raise ConfigError(f"open_set= goes with a classifier; this model is a {meta.get('kind')}")
    classes = [str(c) for c in meta.get("classes") or []]
    if [str(c) for c in open_set.scorer.classes_] != classes:
        raise ConfigError(f"the open-set scorer knows classes {list(open_set.scorer.classes_)}, the model {classes}")


def _count(results, column: str, value) -> int:
    """Count the rows of the written result files whose ``column`` equals ``value``."""
    import pyarrow.parquet as pq

    return sum(int((pq.read_table(r[0], columns=[column]).column(0).to_numpy(False) == value).sum())
               for r in results)


def run_partitions(model, data: str, out: Path, engine: str = "local", scheduler: str | None = None,
                   workers: int = 2, overwrite: bool = False, timeout: float = 10.0, prior=None,
                   threshold: float | None = None, maps: Path | None = None, open_set=None) -> ScaleRun:
    """Score every partition of ``data`` into ``out`` (one file per partition).

    ``model`` is an estimator that exports to ONNX, or the path of a `waferscope export` file.
    ``prior``: a ``PriorShift`` (``resolve_prior``) for a classifier's probabilities; ``"estimate"``
    learns the mix from all partitions at once (a first pass writes the raw probabilities, the mix is
    estimated here, a second pass writes the adjusted results).
    ``threshold``: a detector's scores get an ``anomalous`` column. ``maps``: a detector's
    anomaly maps, ``<id>.npy`` (float32). ``open_set``: a classifier's open-set model
    (:func:`waferscope.search.discover.load_open_set`): ``predicted`` is ``unknown`` for a wafer of no
    known class and ``open_set_score`` is added (the workers compute the wafer features it reads).

    The workers write into hidden folders beside ``out`` and ``maps`` that are renamed to them when
    every partition is done (so both must be on a file system the workers see): ``out`` and ``maps``
    appear complete or not at all, and a failed run leaves an existing ``overwrite`` target as it was.
    """
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown engine {engine!r}: expected 'local' or 'dask'")
    files = list_partitions(data)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise DataError("two partitions share a file name; results are named after their input", data)
    out, maps = _check_targets(Path(out), maps, overwrite)
    if open_set is not None:
        _check_open_set(model, open_set)
    onnx_bytes = export_model_bytes(model)
    client = cluster = None
    if engine == "dask":
        client, cluster = _client(scheduler, workers, timeout)  # a bad scheduler fails before out is touched
    staging = maps_staging = None
    try:
        staging = _staging_dir(out)
        blob = onnx_bytes if client is None else client.scatter(onnx_bytes, broadcast=True)
        # the open-set model travels once per worker too (plain arrays and a small torch head)
        scorer = open_set if client is None or open_set is None else client.scatter(open_set, broadcast=True)
        estimate = prior is not None and prior.estimates
        first_out = staging / ".raw" if estimate else staging
        first_out.mkdir(exist_ok=True)
        map_names = [None] * len(files)
        if maps is not None:
            map_names = _map_names(files)
            maps_staging = _staging_dir(maps)
        results = _run_tasks(client, score_partition, [
            (blob, str(f), str(first_out), STREAM_BATCH, None if estimate else prior, threshold,
             None if maps_staging is None else str(maps_staging), n, scorer) for f, n in zip(files, map_names)])
        used = None if prior is None else prior.target
        if estimate:  # the whole archive's probabilities are small: n × classes floats
            raw = [Path(r[0]) for r in results]
            fixed = prior.fixed(_probabilities(raw))
            used = fixed.target
            results = _run_tasks(client, reprior_partition, [(str(r), str(staging), fixed) for r in raw])
            shutil.rmtree(first_out)
        above = None if threshold is None else _count(results, "anomalous", True)
        unknown = None
        if open_set is not None:
            from waferscope.search.open_set import UNKNOWN

            unknown = _count(results, "predicted", UNKNOWN)
        _publish(staging, out)
        staging = None
        if maps_staging is not None:
            _publish(maps_staging, maps)
            maps_staging = None
    finally:  # also when out is refused: a client left open keeps reconnecting to its scheduler
        settle = 0.0 if client is None else 2.0
        for path in (staging, maps_staging):
            if path is not None:
                _remove_staging(path, settle)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    files_written = [out / Path(r[0]).name for r in results]
    return ScaleRun(files_written, sum(r[1] for r in results), used, above, unknown)
