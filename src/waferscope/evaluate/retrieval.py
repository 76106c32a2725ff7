"""Retrieval benchmark: "find the wafers like this one" on lot-grouped real folds (issue #31).

Protocol (:func:`retrieval_folds`): the labelled wafers are split into ``n_splits`` lot-grouped
stratified folds (every lot on one side); each fold's wafers are the queries, the other folds' the
archive. A neighbour is relevant when it has the query's class. Reported per method: precision@k and
mAP (average precision over the whole archive ranking) of the defect-class queries, and the same for
the ``none`` queries apart (a clean wafer's neighbours are mostly clean wafers, which says little).

Methods are embeddings (:mod:`waferscope.search.embed`, ranked by Euclidean distance, exact);
``cnn_fold``: the ``cnn`` embedding of a ``cnn_fine`` trained on each fold's archive only (the
honest check of the bundled CNN, which was trained on the real labelled sets); and the
Wu, Jang & Chen 2015 pipeline (:func:`wu2015_rank`): Radon + geometry features, top-n by Euclidean
distance, re-ranked by the 2-D normalised correlation of the resized fail maps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from waferscope.errors import DataError

NONE_CLASS = "none"
# Embeddings that learn from class labels: in the benchmark each is fitted on the archive folds only.
SUPERVISED = ("lda", "metric")


def precision_at_k(relevant_sorted: np.ndarray, k: int) -> np.ndarray:
    """Per query: the share of relevant items among the first ``k`` of a (Q, N) 0/1 ranking."""
    rel = np.asarray(relevant_sorted, dtype=bool)[:, :k]
    return rel.sum(axis=1) / float(k)


def average_precision(relevant_sorted: np.ndarray) -> np.ndarray:
    """Per query: the mean over relevant items of the precision at their rank.

    For a (Q, N) 0/1 ranking of the whole archive; 0 for a query with no relevant item.
    """
    rel = np.asarray(relevant_sorted, dtype=bool)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    n_rel = rel.sum(axis=1)
    ap = (np.where(rel, hits / ranks, 0.0)).sum(axis=1)
    return np.where(n_rel > 0, ap / np.maximum(n_rel, 1), 0.0)


def exact_ranking(query_vectors: np.ndarray, archive_vectors: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(Q, N) archive indices, nearest first by Euclidean distance (exact; chunked over queries)."""
    a = np.asarray(archive_vectors, dtype=np.float64)
    a_sq = (a * a).sum(axis=1)
    out = np.empty((len(query_vectors), len(a)), dtype=np.int64)
    for s in range(0, len(query_vectors), chunk):
        q = np.asarray(query_vectors[s:s + chunk], dtype=np.float64)
        d = a_sq[None, :] - 2.0 * q @ a.T  # + |q|² does not change the order
        out[s:s + chunk] = np.argsort(d, axis=1, kind="stable")
    return out


def score_ranking(order: np.ndarray, query_labels: np.ndarray, archive_labels: np.ndarray, k: int = 10) -> dict:
    """Precision@k and mAP of a full ranking, defect-class queries and ``none`` queries apart."""
    q = np.asarray(query_labels).astype(str)
    rel = np.asarray(archive_labels).astype(str)[order] == q[:, None]
    p = precision_at_k(rel, k)
    ap = average_precision(rel)
    defect = q != NONE_CLASS
    out = {}
    for part, sel in (("defect", defect), ("none", ~defect)):
        out[f"p@{k}_{part}"] = float(p[sel].mean()) if sel.any() else float("nan")
        out[f"map_{part}"] = float(ap[sel].mean()) if sel.any() else float("nan")
        out[f"n_{part}"] = int(sel.sum())
    return out


def normalised_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-lag 2-D normalised correlation of each row of ``a`` (Q, P) with each row of ``b`` (N, P) (flattened maps).

    The Pearson correlation of the die values.
    """
    def z(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return z(a) @ z(b).T


def wu2015_rank(q_feat, a_feat, q_maps, a_maps, top_n: int = 50) -> np.ndarray:
    """Return the Wu 2015 similarity ranking.

    Euclidean top-``top_n`` on (standardised) Radon + geometry features, those re-ranked by
    descending 2-D normalised correlation of the resized fail maps, then the rest of the archive
    in feature-distance order (so mAP sees a full ranking).
    """
    order = exact_ranking(q_feat, a_feat)
    for i in range(len(order)):
        head = order[i, :top_n]
        corr = normalised_correlation(q_maps[i:i + 1], a_maps[head])[0]
        order[i, :top_n] = head[np.argsort(-corr, kind="stable")]
    return order


def _wu_columns() -> np.ndarray:
    from waferscope.features.handcrafted import feature_names

    names = feature_names("extended")
    return np.array([i for i, n in enumerate(names) if n.startswith(("radon_", "geom_"))])


def retrieval_folds(dataset, methods=("metric", "lda", "features", "cnn", "raw", "wu2015"), n_splits: int = 5, k: int = 10,
                    seed: int = 0, progress: bool = False, n_jobs: int = -1, cnn_epochs: int = 15,
                    max_folds: int | None = None) -> pd.DataFrame:
    """Return per (method, fold) precision@k and mAP on lot-grouped folds.

    Of the labelled wafers of ``dataset`` (needs a ``lot`` column); see the module docstring.
    """
    from waferscope.data.preprocess import grouped_stratified_kfold, resize_maps
    from waferscope.features.handcrafted import extract_features
    from waferscope.search.embed import make_embedding

    ds = dataset.labelled()
    if not len(ds):
        raise DataError("retrieval needs labelled wafers; this data set has none", dataset.name)
    lots = ds.meta["lot"].astype(str).to_numpy()
    if (lots == "").all():
        raise DataError("retrieval folds are grouped by lot; this data set has no lot names", dataset.name)
    labels = ds.labels.astype(str)
    cache: dict = {}
    on_features = ("features", "wu2015") + SUPERVISED
    needs_features = any(m in on_features for m in methods)
    if needs_features:
        cache["feat"] = extract_features(ds.maps, n_jobs=n_jobs, progress=progress, feature_set="extended")
    if "wu2015" in methods:
        cache["maps32"] = (resize_maps(ds.maps, 32) == 2).reshape(len(ds), -1).astype(np.float32)
    for m in methods:
        if m not in on_features + ("cnn_fold",):
            cache[m] = make_embedding(m).fit(ds).transform(ds)
    rows = []
    for fold, (arch, qry) in enumerate(grouped_stratified_kfold(labels, lots, n_splits=n_splits, seed=seed)):
        if max_folds is not None and fold >= max_folds:
            break
        for m in methods:
            if m == "cnn_fold":
                from waferscope.registry import create
                from waferscope.search.embed import CnnEmbedding

                emb = CnnEmbedding()
                emb._clf = create("cnn_fine", "classifier", epochs=cnn_epochs, progress=progress,
                                  seed=seed).fit(ds.subset(arch))
                order = exact_ranking(emb.transform(ds.subset(qry)), emb.transform(ds.subset(arch)))
            elif m in SUPERVISED:  # fitted on the archive folds' wafers and labels only
                emb = make_embedding(m, seed=seed)
                emb.fit(None, raw=cache["feat"][arch], labels=labels[arch])
                order = exact_ranking(emb.transform(None, raw=cache["feat"][qry]), emb.transform(None, raw=cache["feat"][arch]))
            elif m == "features":
                emb = make_embedding("features").fit(None, raw=cache["feat"][arch])
                order = exact_ranking(emb.transform(None, raw=cache["feat"][qry]), emb.transform(None, raw=cache["feat"][arch]))
            elif m == "wu2015":
                cols = _wu_columns()
                f = cache["feat"][:, cols]
                mu, sd = f[arch].mean(0), f[arch].std(0)
                sd = np.where(sd > 1e-12, sd, 1.0)
                order = wu2015_rank((f[qry] - mu) / sd, (f[arch] - mu) / sd, cache["maps32"][qry], cache["maps32"][arch])
            else:
                order = exact_ranking(cache[m][qry], cache[m][arch])
            rows.append({"method": m, "fold": fold, **score_ranking(order, labels[qry], labels[arch], k)})
    return pd.DataFrame(rows)


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over folds per method."""
    metrics = [c for c in per_fold.columns if c.startswith(("p@", "map_"))]
    g = per_fold.groupby("method", sort=False)[metrics]
    mean, std = g.mean(), g.std(ddof=0)
    out = mean.round(4).astype(str) + " ± " + std.round(4).astype(str)
    return out.reset_index()


def ann_speed(archive_vectors: np.ndarray, query_vectors: np.ndarray, k: int = 10, m: int = 32,
              ef_construction: int = 80, ef_search: int = 64) -> dict:
    """Return the HNSW index of :class:`waferscope.search.WaferIndex` against exact search on the same vectors.

    Build wafers/s, recall@k of the exact k nearest, one-query-at-a-time latency p50/p99 (ms), and
    the index's bytes per wafer (faiss's serialised size). Embedding time is not included.
    """
    import time

    import faiss

    x = np.ascontiguousarray(archive_vectors, dtype=np.float32)
    q = np.ascontiguousarray(query_vectors, dtype=np.float32)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    _, truth = flat.search(q, k)
    hnsw = faiss.IndexHNSWFlat(x.shape[1], m)
    hnsw.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    hnsw.add(x)
    build_s = time.perf_counter() - t0
    hnsw.hnsw.efSearch = max(ef_search, k)
    lat, found = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        _, nn = hnsw.search(q[i:i + 1], k)
        lat.append(time.perf_counter() - t)
        found.append(nn[0])
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
    lat_exact = []
    for i in range(min(len(q), 50)):
        t = time.perf_counter()
        flat.search(q[i:i + 1], k)
        lat_exact.append(time.perf_counter() - t)
    lat = np.asarray(lat) * 1e3
    return {"n": len(x), "dim": int(x.shape[1]), "k": k, "m": m, "ef_search": ef_search,
            "build_wafers_per_s": round(len(x) / build_s, 1), f"recall@{k}": round(float(recall), 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "exact_p50_ms": round(float(np.percentile(np.asarray(lat_exact) * 1e3, 50)), 3),
            "bytes_per_wafer": round(faiss.serialize_index(hnsw).size / len(x), 1)}


def synthetic_vectors(n: int, n_base: int = 2000, noise: float | None = None, seed: int = 0, progress: bool = False,
                      n_jobs: int = -1, embedding: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(archive, queries) vectors for the speed check.

    ``n_base`` synthetic wafers embedded with the ``embedding`` (default: the index default),
    resampled to ``n`` rows plus Gaussian noise of ``noise`` times the mean per-dimension spread
    (default 0.3), and 500 queries made the same way. Embedding 10^5 real maps costs minutes to half
    an hour here; the resampling keeps the check short while the vectors keep the embedding's cluster
    structure.
    """
    from waferscope.data.synthetic import generate
    from waferscope.search.embed import DEFAULT_EMBEDDING, make_embedding

    name = embedding or DEFAULT_EMBEDDING
    ds = generate(n=n_base, seed=seed)
    from waferscope.search.embed import EMBEDDINGS, FeatureEmbedding

    on_features = issubclass(EMBEDDINGS.get(name, object), FeatureEmbedding)
    emb = make_embedding(name, **({"n_jobs": n_jobs, "progress": progress} if on_features else {})).fit(ds)
    base = emb.transform(ds)
    noise = 0.3 * float(base.std(axis=0).mean()) if noise is None else noise
    rng = np.random.default_rng(seed)
    def draw(m):
        return (base[rng.integers(0, len(base), m)] + rng.normal(0, noise, (m, base.shape[1]))).astype(np.float32)
    return draw(n), draw(500)
