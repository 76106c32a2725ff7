"""``WaferIndex``: an approximate-nearest-neighbour index of wafer embeddings with their ids, lots and classes.

The ANN structure is faiss's HNSW graph (``IndexHNSWFlat``, Euclidean): it needs no training pass,
so wafers can be added at any time (:meth:`WaferIndex.add`), and it is saved in faiss's own file
format. ``exact=True`` uses faiss's brute-force ``IndexFlatL2`` instead (the reference for recall).

On disk an index is a folder, nothing pickled:

- ``index.json``: format version, waferscope version, the embedding's name, parameters and
  signature (what the vectors mean), dimension, count;
- ``vectors.faiss``: the faiss index (``faiss.write_index``);
- ``ids.npy``, ``lots.npy``, ``labels.npy``: unicode arrays (``allow_pickle=False``);
- ``embedding.npz``: the embedding's learned arrays (e.g. the feature standardisation);
- ``thumbs.npy``: each wafer resized to ``thumb_size``² die states (uint8, 1 KB a wafer at 32), so a
  search can draw its neighbours without the archive files (``thumb_size=0``: none kept).

An index written by another format version, or whose embedding signature differs from what this
waferscope computes (e.g. the feature set changed), is refused with one :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from waferscope.errors import ConfigError, DataError

INDEX_FORMAT = 1
_FILES = ("index.json", "vectors.faiss", "ids.npy", "lots.npy", "labels.npy", "embedding.npz", "thumbs.npy")


def embedding_signature(embedding) -> str:
    """Return what the vectors mean, as a short hash.

    The embedding's name, parameters and what else fixes its output (``signature_extra``:
    the feature names, the bundled network's weights).
    """
    parts = [embedding.name, json.dumps(embedding.state()[1], sort_keys=True), embedding.signature_extra()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _column(dataset, name: str) -> np.ndarray:
    if name in dataset.meta:
        return dataset.meta[name].fillna("").astype(str).to_numpy()
    return np.full(len(dataset), "", dtype=object)


class WaferIndex:
    """Nearest-wafer search: ``build(archive)``, ``add(more)``, ``query(wafers, k)``, ``save``/``load``.

    ``embedding``: a name from :data:`waferscope.search.embed.EMBEDDINGS`; ``m`` and
    ``ef_search``: the HNSW graph degree and query beam (higher: better recall, slower);
    ``exact``: brute force instead of HNSW.
    """

    def __init__(self, embedding: str | None = None, m: int = 32, ef_construction: int = 80, ef_search: int = 64,
                 exact: bool = False, thumb_size: int = 32, n_jobs: int = -1, progress: bool = False):
        from waferscope.search.embed import DEFAULT_EMBEDDING

        self.embedding = embedding or DEFAULT_EMBEDDING
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.exact = exact
        self.thumb_size = thumb_size
        self.n_jobs = n_jobs
        self.progress = progress

    # ---- building --------------------------------------------------------------------------------
    def _new_embedding(self):
        from waferscope.search.embed import EMBEDDINGS, FeatureEmbedding, make_embedding

        on_features = issubclass(EMBEDDINGS.get(self.embedding, object), FeatureEmbedding)
        params = {"n_jobs": self.n_jobs, "progress": self.progress} if on_features else {}
        return make_embedding(self.embedding, **params)

    def _new_faiss(self, dim: int):
        import faiss

        if self.exact:
            return faiss.IndexFlatL2(dim)
        index = faiss.IndexHNSWFlat(dim, int(self.m))
        index.hnsw.efConstruction = int(self.ef_construction)
        return index

    def build(self, dataset, fit_on=None) -> "WaferIndex":
        """Return a new index of ``dataset``.

        The embedding learns what it needs (standardisation, a supervised projection) from ``fit_on``
        (default: ``dataset`` itself, e.g. its labelled wafers).
        """
        if not len(dataset):
            raise DataError("cannot build an index of an empty data set", dataset.name)
        embedding = self._new_embedding().fit(dataset if fit_on is None else fit_on)
        vectors = embedding.transform(dataset)
        self.start(embedding, vectors.shape[1])
        self._add_vectors(vectors, dataset)
        return self

    def start(self, embedding, dim: int) -> "WaferIndex":
        """Return an empty index for the vectors of a fitted ``embedding`` (``dim`` numbers each).

        Fill it with :meth:`add_embedded` (e.g. vectors computed elsewhere: :mod:`waferscope.scale.index`).
        """
        getattr(embedding, "forget", lambda: None)()  # an index must not keep its archive alive
        self.embedding_ = embedding
        self.index_ = self._new_faiss(int(dim))
        self.ids_ = np.empty(0, dtype=str)
        self.lots_ = np.empty(0, dtype=str)
        self.labels_ = np.empty(0, dtype=str)
        self.thumbs_ = np.zeros((0, self.thumb_size, self.thumb_size), dtype=np.uint8)
        return self

    def add(self, dataset) -> "WaferIndex":
        """Add wafers to a built index (the embedding is not refitted, so old vectors stay valid)."""
        self._check_built()
        if len(dataset):
            self._add_vectors(self.embedding_.transform(dataset), dataset)
        return self

    def _add_vectors(self, vectors: np.ndarray, dataset) -> None:
        self.add_embedded(vectors, *self.wafer_columns(dataset))

    def wafer_columns(self, dataset) -> tuple:
        """(ids, lots, labels, thumbnails or None) of a data set's wafers, as the index keeps them."""
        thumbs = None
        if self.thumb_size:
            from waferscope.data.preprocess import resize_maps

            thumbs = resize_maps(dataset.maps, int(self.thumb_size))
        return dataset.ids.astype(str), _column(dataset, "lot").astype(str), dataset.labels.astype(str), thumbs

    def add_embedded(self, vectors: np.ndarray, ids, lots, labels, thumbs=None) -> "WaferIndex":
        """Add wafers whose vectors were computed already (by this index's embedding).

        With their ids, lots, classes and (when the index keeps them) ``thumb_size``² thumbnails.
        """
        self._check_built()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.index_.d or not len(ids) == len(lots) == len(labels) == n:
            raise ConfigError(f"{n} vectors of shape {vectors.shape[1:]} for an index of dimension {self.index_.d} "
                              f"with {len(ids)} ids, {len(lots)} lots, {len(labels)} labels")
        if self.thumb_size and (thumbs is None or len(thumbs) != n):
            raise ConfigError("this index keeps a thumbnail of every wafer: give one per vector")
        self.index_.add(vectors)
        self.ids_ = np.concatenate([self.ids_, np.asarray(ids).astype(str)]).astype(str)
        self.lots_ = np.concatenate([self.lots_, np.asarray(lots).astype(str)]).astype(str)
        self.labels_ = np.concatenate([self.labels_, np.asarray(labels).astype(str)]).astype(str)
        if self.thumb_size:
            self.thumbs_ = np.concatenate([self.thumbs_, np.asarray(thumbs, dtype=np.uint8)])
        return self

    def _check_built(self) -> None:
        if not hasattr(self, "index_"):
            raise ConfigError("the index is empty: build() it first")

    def __len__(self) -> int:
        """Return the number of indexed wafers."""
        return int(self.index_.ntotal) if hasattr(self, "index_") else 0

    # ---- querying --------------------------------------------------------------------------------
    def embed(self, dataset) -> np.ndarray:
        """Return the embedding vectors of every wafer."""
        self._check_built()
        return self.embedding_.transform(dataset)

    def query_vectors(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) archive positions (-1 where fewer than k exist) and Euclidean distances."""
        self._check_built()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if not self.exact:
            self.index_.hnsw.efSearch = max(int(self.ef_search), int(k))
        dist, pos = self.index_.search(np.ascontiguousarray(vectors, dtype=np.float32), int(k))
        return pos, np.sqrt(np.maximum(dist, 0.0))

    def query(self, dataset, k: int = 10) -> dict:
        """Return the ``k`` nearest archive wafers of every wafer in ``dataset``.

        A dict of (Q, k) arrays ``positions``, ``ids``, ``lots``, ``labels``, ``distances`` (missing
        neighbours: position -1, id "" and distance inf).
        """
        pos, dist = self.query_vectors(self.embed(dataset), k)
        ok = pos >= 0
        safe = np.where(ok, pos, 0)
        pick = lambda arr: np.where(ok, arr[safe] if len(arr) else "", "")  # noqa: E731
        return {"positions": pos, "ids": pick(self.ids_), "lots": pick(self.lots_), "labels": pick(self.labels_),
                "distances": np.where(ok, dist, np.inf)}

    def thumbnail(self, position: int):
        """Return the stored small map of archive wafer ``position`` (None without thumbnails or for -1)."""
        if position < 0 or not self.thumb_size:
            return None
        return np.asarray(self.thumbs_[position])

    # ---- persistence -----------------------------------------------------------------------------
    def header(self) -> dict:
        """Return the index's header: the embedding's name, state and signature, the waferscope version."""
        import waferscope

        arrays, extras = self.embedding_.state()
        return {"waferscope_index_format": INDEX_FORMAT, "waferscope_version": waferscope.__version__,
                "embedding": self.embedding_.name, "embedding_params": extras,
                "embedding_signature": embedding_signature(self.embedding_), "dim": int(self.index_.d),
                "count": len(self), "exact": bool(self.exact), "m": int(self.m),
                "ef_construction": int(self.ef_construction), "ef_search": int(self.ef_search),
                "thumb_size": int(self.thumb_size)}

    def save(self, path: str | Path) -> Path:
        """Write the index folder; a temporary folder renamed into place, so a crash leaves no half index."""
        import faiss

        self._check_built()
        path = Path(path)
        if path.exists() and not (path / "index.json").is_file():
            raise DataError("exists and is not a waferscope index folder; refusing to overwrite it", path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=False)
        except FileNotFoundError:
            raise DataError("output folder does not exist", path.parent) from None
        try:
            faiss.write_index(self.index_, str(tmp / "vectors.faiss"))
            for name, arr in (("ids", self.ids_), ("lots", self.lots_), ("labels", self.labels_)):
                np.save(tmp / f"{name}.npy", np.asarray(arr, dtype=str), allow_pickle=False)
            np.save(tmp / "thumbs.npy", self.thumbs_, allow_pickle=False)
            arrays, _ = self.embedding_.state()
            np.savez(tmp / "embedding.npz", **{k: np.asarray(v) for k, v in arrays.items()})
            (tmp / "index.json").write_text(json.dumps(self.header(), indent=2) + "\n")
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WaferIndex":
        """Load an index folder written by :meth:`save`."""
        import faiss

        from waferscope.search.embed import EMBEDDINGS

        path = Path(path)
        head_path = path / "index.json"
        if not head_path.is_file():
            raise DataError("not a waferscope index folder (no index.json)", path)
        try:
            head = json.loads(head_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"unreadable index header: {exc}", head_path) from None
        if not isinstance(head, dict) or head.get("waferscope_index_format") != INDEX_FORMAT:
            fmt = head.get("waferscope_index_format") if isinstance(head, dict) else None
            raise DataError(f"index format {fmt!r} (written by waferscope {head.get('waferscope_version') if isinstance(head, dict) else '?'}); "
                            f"this waferscope reads format {INDEX_FORMAT}: rebuild it with `waferscope index build`", head_path)
        name = head.get("embedding")
        if name not in EMBEDDINGS:
            raise DataError(f"index uses embedding {name!r}, unknown to this waferscope ({sorted(EMBEDDINGS)}); rebuild it",
                            head_path)
        for f in _FILES:
            if not (path / f).is_file():
                raise DataError(f"index folder is missing {f}", path)
        try:
            with np.load(path / "embedding.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            embedding = EMBEDDINGS[name].from_state(arrays, head.get("embedding_params") or {})
        except (ValueError, KeyError, OSError) as exc:
            raise DataError(f"unreadable embedding state: {exc}", path / "embedding.npz") from None
        if embedding_signature(embedding) != head.get("embedding_signature"):
            raise DataError(f"index embedding {name!r} was computed differently (signature "
                            f"{head.get('embedding_signature')} vs {embedding_signature(embedding)} here, "
                            f"written by waferscope {head.get('waferscope_version')}): rebuild it", head_path)
        self = cls(embedding=name, m=int(head.get("m", 32)), ef_construction=int(head.get("ef_construction", 80)),
                   ef_search=int(head.get("ef_search", 64)), exact=bool(head.get("exact", False)),
                   thumb_size=int(head.get("thumb_size", 0)))
        try:
            self.index_ = faiss.read_index(str(path / "vectors.faiss"))
            self.ids_, self.lots_, self.labels_ = (np.load(path / f"{n}.npy", allow_pickle=False).astype(str)
                                                   for n in ("ids", "lots", "labels"))
            self.thumbs_ = np.load(path / "thumbs.npy", allow_pickle=False, mmap_mode="r")
        except (RuntimeError, ValueError, OSError) as exc:
            raise DataError(f"unreadable index data: {str(exc).splitlines()[0] if str(exc) else exc}", path) from None
        n = int(self.index_.ntotal)
        if self.index_.d != head.get("dim") or not (len(self.ids_) == len(self.lots_) == len(self.labels_) == n) \
                or self.thumbs_.ndim != 3 or self.thumbs_.dtype != np.uint8 \
                or (self.thumb_size and len(self.thumbs_) != n):
            raise DataError(f"index parts disagree: {n} vectors of dimension {self.index_.d}, {len(self.ids_)} ids, "
                            f"header says {head.get('count')} × {head.get('dim')}", path)
        self.embedding_ = embedding
        return self
