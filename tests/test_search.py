"""Similarity search (issue #31): the index, its persistence and version check, the CLI, the metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clitools import invoke
from waferscope.data import load
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, DataError
from waferscope.evaluate.retrieval import (ann_speed, average_precision, exact_ranking, precision_at_k,
                                           retrieval_folds, score_ranking, wu2015_rank)
from waferscope.search import WaferIndex


@pytest.fixture(scope="module")
def archive():
    return WaferDataset.concat([load(f"synthetic:n=30,seed={s}") for s in (1, 2)])


def test_metrics_on_a_hand_made_ranking():
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert precision_at_k(rel, 2).tolist() == [0.5, 0.0, 0.0]
    # query 0: hits at ranks 1 and 3 → (1/1 + 2/3)/2; query 1: one hit at rank 4 → 1/4; none → 0
    assert np.allclose(average_precision(rel), [(1 + 2 / 3) / 2, 0.25, 0.0])
    order = np.array([[0, 1, 2, 3]] * 2)
    out = score_ranking(order, np.array(["A", "none"]), np.array(["A", "B", "none", "A"]), k=2)
    assert out["p@2_defect"] == 0.5 and out["n_defect"] == 1 and out["p@2_none"] == 0.0
    assert out["map_none"] == pytest.approx(1 / 3)


def test_exact_ranking_and_wu_rerank():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    assert exact_ranking(np.array([[0.9, 0.1]]), a).tolist() == [[1, 0, 2]]
    maps = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=float)
    # feature order says 0, 1, 2; the correlation with the query map [1,1,0,0] puts 2 first
    order = wu2015_rank(np.array([[0.0, 0.0]]), a, np.array([[1, 1, 0, 0]], dtype=float), maps, top_n=3)
    assert order[0, 0] == 2 and order[0, -1] == 1


@pytest.mark.parametrize("exact", [True, False])
def test_index_build_add_query_save_load(archive, tmp_path, exact):
    first, more = archive.subset(np.arange(40)), archive.subset(np.arange(40, 60))
    index = WaferIndex(embedding="raw", exact=exact).build(first)
    assert len(index) == 40
    res = index.query(first.subset([3, 7]), k=5)
    assert res["ids"][:, 0].tolist() == [first.ids[3], first.ids[7]]  # a wafer is its own nearest
    assert np.allclose(res["distances"][:, 0], 0.0)
    assert (np.diff(res["distances"], axis=1) >= -1e-6).all()
    index.add(more)
    assert len(index) == 60
    assert index.query(more.subset([0]), k=1)["ids"][0, 0] == more.ids[0]
    index.save(tmp_path / "idx")
    back = WaferIndex.load(tmp_path / "idx")
    r1, r2 = index.query(archive, k=6), back.query(archive, k=6)
    assert (r1["ids"] == r2["ids"]).all() and np.allclose(r1["distances"], r2["distances"])
    assert r2["lots"][0, 0] == archive.meta["lot"].iloc[0]
    assert np.array_equal(back.thumbnail(5), index.thumbnail(5))
    back.add(first.subset([0]))  # a loaded index keeps growing
    assert len(back) == 61
    # more neighbours than wafers: the missing ones are marked, not invented
    small = WaferIndex(embedding="raw", exact=exact).build(first.subset([0, 1]))
    r = small.query(first.subset([0]), k=4)
    assert (r["positions"][0, 2:] == -1).all() and np.isinf(r["distances"][0, 2:]).all()


def test_index_from_another_version_or_embedding_is_refused(archive, tmp_path):
    WaferIndex(embedding="raw").build(archive).save(tmp_path / "idx")
    head_path = tmp_path / "idx" / "index.json"
    head = json.loads(head_path.read_text())
    head_path.write_text(json.dumps({**head, "waferscope_index_format": 99}))
    with pytest.raises(DataError, match="index format 99.*rebuild"):
        WaferIndex.load(tmp_path / "idx")
    head_path.write_text(json.dumps({**head, "embedding_params": {"size": 16}}))
    with pytest.raises(DataError, match="computed differently"):
        WaferIndex.load(tmp_path / "idx")
    head_path.write_text(json.dumps({**head, "embedding": "vgg"}))
    with pytest.raises(DataError, match="unknown to this waferscope"):
        WaferIndex.load(tmp_path / "idx")
    with pytest.raises(DataError, match="no index.json"):
        WaferIndex.load(tmp_path)


def test_supervised_embeddings_fit_save_load(archive, tmp_path):
    from waferscope.search.embed import MetricEmbedding
    from waferscope.search.metric import MetricHead

    # a head trained on the labels pulls same-class wafers together: on separable toy data the nearest
    # neighbour of every point has its class
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 40)
    x = rng.normal(0, 1, (120, 6)) + np.repeat(np.eye(3, 6) * 3, 40, axis=0)
    head = MetricHead(epochs=20, seed=1).fit(x, y)
    e = head.transform(x)
    assert e.shape == (120, 32) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    nn = exact_ranking(e, e)[:, 1]
    assert (y[nn] == y).mean() > 0.9
    assert np.array_equal(MetricHead(epochs=20, seed=1).fit(x, y).transform(x), e)  # seeded
    assert np.array_equal(MetricHead.from_arrays(head.arrays()).transform(x), e)
    with pytest.raises(DataError, match="inconsistent shapes"):
        MetricHead.from_arrays({**head.arrays(), "head_b1": np.zeros(3)})
    # on wafers: each supervised embedding is saved with the index and reloads to the same vectors
    for name, dim in (("lda", len(set(archive.labels)) - 1), ("metric", 32)):
        params = {"embedding": name}
        index = WaferIndex(**params, n_jobs=1)
        if name == "metric":
            index._new_embedding = lambda: MetricEmbedding(source="labels", n_jobs=1, epochs=5)
        index.build(archive)
        assert index.index_.d == dim
        index.save(tmp_path / name)
        back = WaferIndex.load(tmp_path / name)
        assert np.allclose(back.embed(archive.subset([0, 5])), index.embed(archive.subset([0, 5])), atol=1e-5)
    unlabelled = WaferDataset.from_maps(list(archive.maps[:4]))
    with pytest.raises(ConfigError, match="needs labelled wafers of at least two classes"):
        WaferIndex(embedding="lda").build(unlabelled)
    with pytest.raises(ConfigError, match="needs labelled wafers"):
        MetricEmbedding(source="labels").fit(unlabelled)
    bundled = MetricEmbedding().fit(unlabelled)  # too few labels: the head shipped with waferscope
    assert bundled.fitted_on_.startswith("bundled") and bundled.transform(unlabelled).shape == (4, 32)


def test_hnsw_recall_against_exact():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (20, 16))
    x = centres[rng.integers(0, 20, 3000)] + rng.normal(0, 1, (3000, 16))
    q = centres[rng.integers(0, 20, 50)] + rng.normal(0, 1, (50, 16))
    row = ann_speed(x, q, k=10)
    assert row["recall@10"] >= 0.9 and row["p99_ms"] > 0 and row["bytes_per_wafer"] > 16 * 4


def test_retrieval_folds_on_synthetic_lots():
    ds = WaferDataset.concat([load(f"synthetic:n=24,seed={s}") for s in range(5)])
    table = retrieval_folds(ds, methods=("raw",), n_splits=5, k=5)
    assert len(table) == 5 and table["p@5_defect"].between(0, 1).all()
    one = retrieval_folds(ds, methods=("cnn_fold",), n_splits=5, k=5, cnn_epochs=1, max_folds=1)
    assert len(one) == 1 and 0 <= one["p@5_defect"].iloc[0] <= 1
    # the supervised embeddings are fitted on the archive folds; on these separable synthetic classes
    # they rank same-class wafers first far more often than chance (9 classes)
    sup = retrieval_folds(ds, methods=("lda", "metric"), n_splits=5, k=5, max_folds=1, n_jobs=1)
    assert sup["method"].tolist() == ["lda", "metric"] and (sup["p@5_defect"] > 0.3).all()
    with pytest.raises(DataError, match="no lot names"):
        ds2 = ds.subset(np.arange(len(ds)))
        ds2.meta["lot"] = ""
        retrieval_folds(ds2, methods=("raw",))


def test_cli_index_build_add_search(tmp_path, capsys):
    idx, out = tmp_path / "idx", tmp_path / "res"
    code, text, err = invoke(capsys, "index", "build", "--data", "synthetic:n=40,seed=1", "--out", idx, "--threads", "1")
    assert code == 0, err
    # 40 synthetic wafers have fewer than 20 of any class: the bundled head, not one trained on them
    assert "40 wafers, embedding metric (32 dims, fitted on bundled head" in text
    code, text, err = invoke(capsys, "index", "build", "--data", "synthetic:n=5,seed=4", "--out", idx, "--add")
    assert code == 0 and "45 wafers" in text, err
    code, text, err = invoke(capsys, "search", "--index", idx, "--query", "synthetic:n=3,seed=2", "-k", "4",
                             "--out", out)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "neighbours.csv")))
    assert len(rows) == 12 and [r["rank"] for r in rows[:4]] == ["1", "2", "3", "4"]
    assert set(rows[0]) == {"query_id", "query_lot", "rank", "neighbour_id", "lot", "distance", "class"}
    assert rows[0]["lot"] in ("syn-1", "syn-4") and float(rows[0]["distance"]) <= float(rows[3]["distance"])
    assert (out / "neighbours.png").read_bytes()[:4] == b"\x89PNG"
    # bad input: one clear line, exit code 2
    code, _, err = invoke(capsys, "search", "--index", tmp_path, "--query", "synthetic:n=2,seed=2", "--out", out)
    assert code == 2 and "not a waferscope index folder" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke(capsys, "search", "--index", idx, "--query", tmp_path / "missing.npz", "--out", out)
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    code, text, err = invoke(capsys, "index", "build", "--data", "synthetic:n=6,seed=1", "--out", tmp_path / "bare",
                             "--embedding", "raw", "--no-thumbnails")
    assert code == 0 and not (tmp_path / "bare" / "thumbs.npy").stat().st_size > 200, err
    code, _, err = invoke(capsys, "search", "--index", tmp_path / "bare", "--query", "synthetic:n=2,seed=2", "-k", "3",
                          "--out", tmp_path / "bare_out")
    assert code == 0 and (tmp_path / "bare_out" / "neighbours.png").exists(), err
    code, _, err = invoke(capsys, "index", "build", "--data", "synthetic:n=5,seed=1", "--out", idx, "--embedding", "vgg")
    assert code == 2 and "--embedding" in err


def test_cli_evaluate_retrieval(tmp_path, capsys):
    data = [a for s in (1, 2, 3) for a in ("--data", f"synthetic:n=15,seed={s}")]
    code, text, err = invoke(capsys, "evaluate", "retrieval", *data, "--methods", "raw,wu2015", "--folds", "3",
                             "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "wu2015" in text and "p@10_defect" in text
    assert len(json.loads((tmp_path / "r.json").read_text())["per_fold"]) == 6
    code, _, err = invoke(capsys, "evaluate", "retrieval", "--methods", "vgg")
    assert code == 2 and "unknown" in err
