"""Build (or grow) a similar-wafer index over a partitioned archive, the costly part on Dask workers.

Embedding a wafer (its 120 features, ~ms each, then the metric head) is what takes the time when an
archive has millions of wafers; inserting the vectors into the HNSW graph is fast (~10,000 vectors/s
on one core, docs/search.md) but one structure. So:

1. **fit** (a new index only): the embedding learns from ``fit_on`` when given, else from the
   archive's labelled wafers, which each partition's task sends back (the unlabelled wafers stay
   where they are); an archive with no labelled wafer sends a sample of up to ``FIT_SAMPLE`` wafers
   spread over the partitions instead (the ``metric`` embedding then takes the head bundled with
   waferscope, as :meth:`WaferIndex.build` does);
2. **embed**: one task per Parquet partition streams it in batches through the fitted embedding
   (shipped to each worker once) and returns the vectors, ids, lots, classes and thumbnails;
3. **insert**: this process adds them to the graph in partition order and writes the index folder
   (temp folder renamed into place, like :meth:`WaferIndex.save`).

The same task function runs in a loop here with ``engine="local"``, so both engines give the same
index. The vectors equal those of :meth:`WaferIndex.build` on the concatenated partitions when the
embedding learnt from the same wafers (``metric``/``lda`` learn from the labelled ones either way).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import numpy as np

from waferscope.errors import ConfigError, DataError
from waferscope.scale.dask_engine import STREAM_BATCH, _client, _run_tasks, list_partitions

FIT_SAMPLE = 10_000  # wafers an unlabelled archive lends the embedding's fit (spread over the partitions)


class IndexRun(NamedTuple):
    """What a partitioned index build did: the index, wafers added, partitions, wafers fitted on."""

    index: object
    added: int
    partitions: int
    fitted_on: int


def fit_set_partition(src: str, sample: int):
    """Return a partition's labelled wafers (all of them), else its first ``sample`` wafers, and whether they are labelled."""
    from waferscope.data import WaferDataset
    from waferscope.data.io_parquet import iter_parquet

    labelled, first = [], []
    taken = 0
    for ds in iter_parquet(src, batch_size=STREAM_BATCH):
        if ds.kind != "wafer":
            raise DataError(f"an index holds wafer maps; this partition holds {ds.kind}s", src)
        if ds.is_labelled.any():
            labelled.append(ds.subset(np.flatnonzero(ds.is_labelled)))
        if taken < sample:
            first.append(ds.subset(np.arange(min(len(ds), sample - taken))))
            taken += len(first[-1])
    if labelled:
        return WaferDataset.concat(labelled, name=Path(src).name), True
    return (WaferDataset.concat(first, name=Path(src).name) if first else None), False


def embed_partition(index, src: str, batch: int = STREAM_BATCH) -> tuple:
    """Embed every wafer of one partition with ``index``'s fitted embedding.

    Returns (vectors, ids, lots, labels, thumbnails or None), streamed ``batch`` rows at a time.
    """
    from waferscope.data.io_parquet import iter_parquet

    parts = []
    for ds in iter_parquet(src, batch_size=batch):
        if not len(ds):
            continue
        if ds.kind != "wafer":
            raise DataError(f"an index holds wafer maps; this partition holds {ds.kind}s", src)
        parts.append((np.asarray(index.embedding_.transform(ds), dtype=np.float32), *index.wafer_columns(ds)))
        getattr(index.embedding_, "forget", lambda: None)()
    if not parts:
        raise DataError("no maps in this partition", src)
    cols = list(zip(*parts))
    thumbs = None if cols[4][0] is None else np.concatenate(cols[4])
    return (np.concatenate(cols[0]), *(np.concatenate(c).astype(str) for c in cols[1:4]), thumbs)


def _worker_copy(index):
    """Return what the workers get: the fitted embedding on one thread, no progress bars, the thumbnail size.

    Each task embeds; only this process inserts into the graph.
    """
    from waferscope.search import WaferIndex

    light = WaferIndex(embedding=index.embedding, thumb_size=index.thumb_size, n_jobs=1)
    light.embedding_ = copy.copy(index.embedding_)
    for name, value in (("n_jobs", 1), ("progress", False)):
        if hasattr(light.embedding_, name):
            setattr(light.embedding_, name, value)
    return light


def build_index_partitions(data: str, out, engine: str = "local", scheduler: str | None = None, workers: int = 2,
                           timeout: float = 10.0, add: bool = False, fit_on=None, progress: bool = False,
                           **index_params) -> IndexRun:
    """Build (or with ``add``, grow) the similar-wafer index of Parquet partitions, one task per partition.

    A new index of the partitions ``data`` (a folder, a glob or one file) is written to ``out``, or
    with ``add`` the existing index at ``out`` is grown by them; the embedding of every wafer is computed
    by one task per partition (``engine="dask"``: on a LocalCluster of ``workers`` processes, or the
    ``scheduler`` given). ``fit_on``: a labelled data set the embedding learns from (a new index
    only); ``index_params``: :class:`~waferscope.search.WaferIndex`'s (``embedding``, ``exact``,
    ``thumb_size``, …); ``progress``: a bar over the embedded partitions.
    """
    from waferscope.search import WaferIndex

    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown engine {engine!r}: expected 'local' or 'dask'")
    files = list_partitions(data)
    out = Path(out)
    if add:
        if fit_on is not None or index_params:
            raise ConfigError("add keeps the index's own embedding and settings: give no fit_on or index settings")
        index = WaferIndex.load(out)  # a foreign or damaged index stops here, before any cluster starts
    else:
        if out.exists() and not (out / "index.json").is_file():
            raise DataError("exists and is not a waferscope index folder; refusing to overwrite it", out)
        index = WaferIndex(progress=progress, **index_params)
    client = cluster = None
    if engine == "dask":
        client, cluster = _client(scheduler, workers, timeout)
    try:
        fitted_on = 0
        if not add:
            if fit_on is None:
                per_part = -(-FIT_SAMPLE // len(files))
                got = _run_tasks(client, fit_set_partition, [(str(f), per_part) for f in files])
                labelled = [d for d, lab in got if lab]
                pool = labelled or [d for d, _ in got if d is not None]
                from waferscope.data import WaferDataset

                fit_on = WaferDataset.concat(pool, name=str(data))
            fitted_on = len(fit_on)
            index = _fit(index, fit_on)
        remote = _worker_copy(index)
        shipped = remote if client is None else client.scatter(remote, broadcast=True)
        results = _run_tasks(client, embed_partition, [(shipped, str(f)) for f in files], progress, "embedding")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    added = 0
    for vectors, ids, lots, labels, thumbs in results:  # partition order: the same index on every engine
        index.add_embedded(vectors, ids, lots, labels, thumbs)
        added += len(vectors)
    index.save(out)
    return IndexRun(index, added, len(files), fitted_on)


def _fit(index, fit_on):
    """``index`` started with its embedding fitted on ``fit_on`` (dimension from one wafer)."""
    embedding = index._new_embedding().fit(fit_on)
    dim = np.asarray(embedding.transform(fit_on.subset([0]))).shape[1]
    return index.start(embedding, dim)
