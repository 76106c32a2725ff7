"""`waferscope index build` and `waferscope search`.

Find the archive wafers most like a query (:mod:`waferscope.search`). Thin: parse, call the
library, write a CSV and a PNG montage.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import List, Optional

import typer

from waferscope.cli.common import (DATA_HELP, PASS_BINS_HELP, PASS_BINS_REFUSED, SCHEDULER_OPTION, WORKERS_OPTION,
                                   load_data, write_text_atomic)
from waferscope.errors import ConfigError, DataError

index_app = typer.Typer(no_args_is_help=True, help="Similarity-search indexes of wafer archives.")


def register(app: typer.Typer) -> None:
    """Add ``waferscope index`` and ``waferscope search`` to ``app``."""
    app.add_typer(index_app, name="index")
    app.command("search")(search_cmd)


def _wafers(specs: List[str], pass_bins: Optional[str], what: str):
    ds = load_data(specs, pass_bins=pass_bins)
    if ds.kind != "wafer":
        raise DataError(f"{what} must be wafer maps; this holds {ds.kind}s", ", ".join(specs))
    if not len(ds):
        raise DataError(f"{what} holds no wafer maps", ", ".join(specs))
    return ds


@index_app.command("build")
def build_cmd(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (the archive; repeatable)"),
    out: Path = typer.Option(..., "--out", help="Index folder to write (replaced if it is an index)"),
    add: bool = typer.Option(False, "--add", help="Add --data to the existing index at --out instead of a new one"),
    embedding: Optional[str] = typer.Option(None, "--embedding", help="metric (default: a learnt head on the wafer "
                                            "features), lda, features, cnn or raw (docs/search.md)"),
    fit_data: List[str] = typer.Option([], "--fit-data", help="Labelled maps the embedding learns from (repeatable; "
                                       "default: the archive's own labelled wafers, or for 'metric' without enough "
                                       "labels the head bundled with waferscope)"),
    exact: bool = typer.Option(False, "--exact", help="Brute-force search instead of the HNSW graph"),
    no_thumbnails: bool = typer.Option(False, "--no-thumbnails", help="Keep no 32×32 map per wafer (1 KB each): "
                                       "a smaller index, but the montage shows only the queries"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    threads: int = typer.Option(2, "--threads", min=1),
    engine: str = typer.Option("local", "--engine", help="local: this process; dask: --data is one folder/glob of "
                               ".parquet partitions, each embedded by a Dask task, the graph built here"),
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: int = WORKERS_OPTION,
) -> None:
    """Embed an archive of wafer maps and write a nearest-neighbour index of it (ids, lots, classes kept)."""
    from waferscope.search import EMBEDDINGS, WaferIndex

    if embedding is not None and embedding not in EMBEDDINGS:
        raise ConfigError(f"--embedding must be one of {sorted(EMBEDDINGS)}, got {embedding!r}")
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown --engine {engine!r}: expected local or dask")
    _threads(threads)
    if engine == "dask":
        _build_on_dask(data, out, add, embedding, fit_data, exact, no_thumbnails, pass_bins, scheduler, workers)
        return
    if scheduler:
        raise ConfigError("--scheduler goes with --engine dask")
    ds = _wafers(data, pass_bins, "--data")
    if add:
        if embedding is not None or exact or no_thumbnails or fit_data:
            raise ConfigError("--add keeps the index's own settings: drop --embedding/--exact/--no-thumbnails/--fit-data")
        index = WaferIndex.load(out).add(ds)
    else:
        fit_on = _wafers(fit_data, pass_bins, "--fit-data") if fit_data else None
        index = WaferIndex(embedding=embedding, exact=exact, thumb_size=0 if no_thumbnails else 32,
                           n_jobs=threads, progress=True).build(ds, fit_on=fit_on)
    index.save(out)
    fitted = getattr(index.embedding_, "fitted_on_", "")
    typer.echo(f"index {out}: {len(index)} wafers, embedding {index.embedding_.name} ({index.index_.d} dims"
               + (f", fitted on {fitted})" if fitted else ")"))


def _build_on_dask(data, out, add, embedding, fit_data, exact, no_thumbnails, pass_bins, scheduler, workers) -> None:
    from waferscope.scale import build_index_partitions

    if pass_bins:
        raise ConfigError(f"--pass-bins does not apply with --engine dask: {PASS_BINS_REFUSED}")
    if len(data) != 1:
        raise ConfigError("--engine dask takes one --data: a folder of .parquet partitions, a glob or one file")
    params = {}
    if add:
        if embedding is not None or exact or no_thumbnails or fit_data:
            raise ConfigError("--add keeps the index's own settings: drop --embedding/--exact/--no-thumbnails/--fit-data")
    else:
        params = {"embedding": embedding, "exact": exact, "thumb_size": 0 if no_thumbnails else 32}
    fit_on = _wafers(fit_data, pass_bins, "--fit-data") if fit_data else None
    run = build_index_partitions(data[0], out, engine="dask", scheduler=scheduler, workers=workers, add=add,
                                 fit_on=fit_on, progress=True, **params)
    index = run.index
    fitted = getattr(index.embedding_, "fitted_on_", "")
    typer.echo(f"index {out}: {'added' if add else 'embedded'} {run.added} wafers from {run.partitions} partitions "
               f"on Dask; {len(index)} wafers, embedding {index.embedding_.name} ({index.index_.d} dims"
               + (f", fitted on {fitted})" if fitted else ")"))


def search_cmd(
    index_path: Path = typer.Option(..., "--index", help="Index folder from `waferscope index build`"),
    query: List[str] = typer.Option(..., "--query", help=DATA_HELP + " (the wafers to look up; repeatable)"),
    k: int = typer.Option(20, "-k", "--k", min=1, max=1000, help="Neighbours per query"),
    out: Path = typer.Option(..., "--out", help="Folder for neighbours.csv and neighbours.png"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    threads: int = typer.Option(2, "--threads", min=1),
) -> None:
    """Find the k archive wafers most like each query wafer.

    neighbours.csv (query id, rank, neighbour id, lot, distance, class) and neighbours.png
    (each query beside its neighbours).
    """
    from waferscope.search import WaferIndex
    from waferscope.search.montage import search_montage

    _threads(threads)
    index = WaferIndex.load(index_path)
    ds = _wafers(query, pass_bins, "--query")
    res = index.query(ds, k)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query_id", "query_lot", "rank", "neighbour_id", "lot", "distance", "class"])
    qlots = ds.meta["lot"].fillna("").astype(str).to_numpy()
    for i, qid in enumerate(ds.ids):
        for r in range(res["ids"].shape[1]):
            if res["positions"][i, r] < 0:
                continue
            w.writerow([qid, qlots[i], r + 1, res["ids"][i, r], res["lots"][i, r], f"{res['distances'][i, r]:.6g}",
                        res["labels"][i, r]])
    write_text_atomic(out / "neighbours.csv", buf.getvalue())
    neighbours = [[index.thumbnail(int(p)) for p in row] for row in res["positions"]]
    search_montage(ds.maps, ds.ids, neighbours, res, out / "neighbours.png", query_labels=ds.labels)
    typer.echo(f"{len(ds)} queries × {k} neighbours from {len(index)} wafers → {out / 'neighbours.csv'}, "
               f"{out / 'neighbours.png'}")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
