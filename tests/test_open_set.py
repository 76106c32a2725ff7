"""Open set (issue #31): the scorer, cluster matching, the leave-one-class-out benchmark and `discover`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clitools import invoke
from waferscope.data import load
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError
from waferscope.search.open_set import OpenSetScorer, best_cluster, discover_clusters


def _toy(rng, centres, n):
    y = rng.integers(0, len(centres), n)
    return centres[y] + rng.normal(0, 0.3, (n, centres.shape[1])), y


def test_scorer_flags_a_class_it_never_saw():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 3
    x_tr, y_tr = _toy(rng, centres[:3], 300)
    x_cal, y_cal = _toy(rng, centres[:3], 200)
    x_new, _ = _toy(rng, centres[3:], 50)  # the fourth class: unknown
    x_known, y_known = _toy(rng, centres[:3], 200)

    def proba(x):  # a classifier that only knows three classes: confident even on the fourth
        logits = -((x[:, None, :] - centres[None, :3]) ** 2).sum(-1)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def sig(x):
        return {"proba": proba(x), "metric": x, "features": x}

    # (toy features: the parts that read no named extended feature columns)
    s = OpenSetScorer(abstain_rate=0.05, parts=("doubt", "metric_knn", "feature_knn")).fit(
        {"metric": x_tr, "features": x_tr}, y_tr.astype(str), sig(x_cal),
                                             ["0", "1", "2"])
    assert ((s.score(sig(x_cal)) > s.threshold_).mean()) == pytest.approx(0.05, abs=0.02)
    score = s.score(sig(np.vstack([x_known, x_new])))
    truth = np.r_[np.zeros(200), np.ones(50)]
    assert roc_auc_score(truth, score) > 0.95
    pred = s.predict(sig(x_new))
    assert (pred == "unknown").mean() > 0.8
    known_pred = s.predict(sig(x_known))
    assert (known_pred[known_pred != "unknown"] == y_known[known_pred != "unknown"].astype(str)).all()
    # the state round-trips through plain arrays + JSON-able extras: the same scores
    arrays, extras = s.state()
    again = OpenSetScorer.from_state(arrays, json.loads(json.dumps(extras)))
    np.testing.assert_array_equal(again.score(sig(x_new)), s.score(sig(x_new)))
    # a state saved before shape_knn / relative_knn (format 2: no reference labels, no shape names) still loads
    old = OpenSetScorer.from_state({k: v for k, v in arrays.items() if not k.startswith("feature_ref_")},
                                   {k: v for k, v in extras.items() if k != "shape_features"})
    np.testing.assert_array_equal(old.score(sig(x_new)), s.score(sig(x_new)))
    with pytest.raises(ConfigError):
        OpenSetScorer(abstain_rate=1.5)
    with pytest.raises(ConfigError, match="unknown open-set part"):
        OpenSetScorer(parts=("doubt", "vibes"))
    with pytest.raises(ConfigError, match="needs metric"):  # a signal missing when scoring: one clear error
        s.score({"proba": proba(x_new), "metric": None, "features": x_new})


def test_feature_distance_catches_what_a_confident_classifier_hides():
    """A new class the classifier maps confidently onto a known one: doubt alone cannot see it, the
    feature-space distance part can (why ``feature_knn`` was in the default parts until the fifth screen,
    where ``relative_knn`` and ``shape_tail`` took over what it saw)."""
    rng = np.random.default_rng(2)
    x_tr = rng.normal(0, 1, (300, 6))
    y_tr = (x_tr[:, 0] > 0).astype(int).astype(str)
    x_cal = rng.normal(0, 1, (200, 6))
    x_new = rng.normal(0, 1, (60, 6))
    x_new[:, 3] += 6  # off in a direction the classifier ignores
    onehot = lambda x: np.stack([x[:, 0] <= 0, x[:, 0] > 0], 1).astype(float) * 0.98 + 0.01  # noqa: E731

    def sig(x):
        return {"proba": onehot(x), "metric": x[:, :1], "features": x}

    truth = np.r_[np.zeros(200), np.ones(60)]
    x_test = np.vstack([rng.normal(0, 1, (200, 6)), x_new])
    doubt_only = OpenSetScorer(parts=("doubt",)).fit({}, y_tr, sig(x_cal), ["0", "1"])
    with_features = OpenSetScorer(parts=("doubt", "feature_knn")).fit({"features": x_tr}, y_tr, sig(x_cal), ["0", "1"])
    assert roc_auc_score(truth, doubt_only.score(sig(x_test))) < 0.7
    assert roc_auc_score(truth, with_features.score(sig(x_test))) > 0.95


def test_best_cluster_and_hdbscan():
    clusters = np.array([0, 0, 0, 1, 1, -1, 1, 2])
    target = np.array([1, 1, 0, 0, 0, 1, 0, 0], bool)
    best = best_cluster(clusters, target)
    assert best["cluster"] == 0 and best["purity"] == pytest.approx(2 / 3) and best["recall"] == pytest.approx(2 / 3)
    assert best_cluster(np.full(3, -1), np.ones(3, bool))["cluster"] is None
    rng = np.random.default_rng(1)
    blobs = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
    labels = discover_clusters(blobs, min_cluster_size=5)
    assert len(set(labels[:30]) - {-1}) == 1 and set(labels[:30]) != set(labels[30:])
    assert (discover_clusters(blobs[:3], min_cluster_size=5) == -1).all()


@pytest.fixture(scope="module")
def lots():
    return WaferDataset.concat([load(f"synthetic:n=27,seed={s}") for s in range(5)])


def test_open_set_folds_on_synthetic_lots(lots):
    from waferscope.evaluate.open_set import open_set_folds, summarise_open_set

    table = open_set_folds(lots, n_splits=5, max_folds=1, hidden=("Donut",), n_jobs=1, min_cluster_size=3)
    assert len(table) == 1 and table["n_hidden"].iloc[0] > 0
    row = table.iloc[0]
    for col in ("auroc", "f1_closed", "f1_open", "abstain_known", "features_purity", "metric_recall"):
        assert 0 <= row[col] <= 1, col
    assert summarise_open_set(table)["hidden"].tolist() == ["Donut", "mean"]


def _discover_without_donut(lots, tmp_path, capsys, abstain_rate: str):
    """`waferscope discover` on the lots into tmp_path/d, fitted on every class but Donut."""
    from waferscope.data.io_parquet import write_parquet

    write_parquet(lots, tmp_path / "archive.parquet")
    write_parquet(lots.subset(lots.labels != "Donut"), tmp_path / "known.parquet")
    return invoke(capsys, "discover", "--data", tmp_path / "archive.parquet", "--fit-data",
                  tmp_path / "known.parquet", "--out", tmp_path / "d", "--min-cluster-size", "3",
                  "--abstain-rate", abstain_rate, "--threads", "1")


def test_cli_discover_writes_the_page(lots, tmp_path, capsys):
    from waferscope.data.io_parquet import write_parquet

    code, text, err = _discover_without_donut(lots, tmp_path, capsys, "0.1")
    assert code == 0, err
    assert "fit no known class" in text
    page = (tmp_path / "d" / "index.html").read_text()
    assert "Candidate new patterns" in page
    rows = list(csv.DictReader(open(tmp_path / "d" / "wafers.csv")))
    assert rows and all(r["predicted"] == "unknown" for r in rows)
    clusters = list(csv.DictReader(open(tmp_path / "d" / "clusters.csv")))
    for c in clusters:
        assert (tmp_path / "d" / f"cluster_{c['cluster']}.png").read_bytes()[:4] == b"\x89PNG"
    # unlabelled known classes: one clear line
    write_parquet(WaferDataset.from_maps(list(lots.maps[:6])), tmp_path / "bare.parquet")
    code, _, err = invoke(capsys, "discover", "--data", tmp_path / "bare.parquet", "--out", tmp_path / "e")
    assert code == 2 and "at least two classes" in err and len(err.strip().splitlines()) == 1


def _csv(path):
    return list(csv.DictReader(open(path)))


def test_train_open_set_then_predict_abstains(lots, tmp_path, capsys):
    """`classify train --open-set` saves a scorer with the run; `predict --abstain` uses it: the hidden
    class scores higher than the known ones and some of it is answered 'unknown'."""
    from waferscope.data.io_parquet import write_parquet

    known = lots.subset(lots.labels != "Donut")
    write_parquet(known, tmp_path / "known.parquet")
    write_parquet(lots, tmp_path / "all.parquet")
    run = tmp_path / "run"
    code, _, err = invoke(capsys, "classify", "train", "--data", tmp_path / "known.parquet", "--model", "gbm",
                          "--set", "max_iter=40", "--set", "n_jobs=1", "--set", "progress=false", "--open-set",
                          "--abstain-rate", "0.1", "--out", run)
    assert code == 0, err
    assert (run / "open_set.json").is_file() and (run / "open_set.safetensors").is_file()
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--run", run,
                          "--abstain", "--out", tmp_path / "p.csv")
    assert code == 0, err
    rows = _csv(tmp_path / "p.csv")
    assert len(rows) == len(lots) and "open_set_score" in rows[0]
    donut = [float(r["open_set_score"]) for r in rows if r["label"] == "Donut"]
    other = [float(r["open_set_score"]) for r in rows if r["label"] != "Donut"]
    assert np.mean(donut) > np.mean(other) + 0.1
    assert any(r["predicted"] == "unknown" for r in rows if r["label"] == "Donut")
    assert "Donut" not in {r["predicted"] for r in rows}  # the run never learnt it
    # without --abstain: the closed-set answer, no score column
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--run", run,
                          "--out", tmp_path / "q.csv")
    assert code == 0 and "open_set_score" not in _csv(tmp_path / "q.csv")[0]
    assert "unknown" not in {r["predicted"] for r in _csv(tmp_path / "q.csv")}
    # a run without a scorer: one clear line, before the maps are read
    plain = tmp_path / "plain"
    code, _, err = invoke(capsys, "classify", "train", "--data", tmp_path / "known.parquet", "--model", "gbm",
                          "--set", "max_iter=5", "--set", "n_jobs=1", "--set", "progress=false", "--out", plain)
    assert code == 0, err
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--run", plain,
                          "--abstain", "--out", tmp_path / "r.csv")
    assert code == 2 and "no open-set scorer" in err and "--open-set" in err and len(err.strip().splitlines()) == 1
    # a scorer fitted for other classes than the run's: refused
    (plain / "open_set.json").write_bytes((run / "open_set.json").read_bytes().replace(b'"Center"', b'"Centre"'))
    (plain / "open_set.safetensors").write_bytes((run / "open_set.safetensors").read_bytes())
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--run", plain,
                          "--abstain", "--out", tmp_path / "r.csv")
    assert code == 2 and "knows classes" in err


def test_train_takes_a_discovered_cluster_as_a_new_class(lots, tmp_path, capsys):
    from waferscope.base import load_run

    code, _, err = _discover_without_donut(lots, tmp_path, capsys, "0.3")
    assert code == 0, err
    wafers = _csv(tmp_path / "d" / "wafers.csv")
    clusters = sorted({int(r["cluster"]) for r in wafers} - {-1})
    assert clusters, "the synthetic hidden class should form at least one cluster"
    c = clusters[0]
    members = {r["id"] for r in wafers if int(r["cluster"]) == c}
    run = tmp_path / "run"
    code, _, err = invoke(capsys, "classify", "train", "--data", tmp_path / "known.parquet", "--model", "gbm",
                          "--set", "max_iter=10", "--set", "n_jobs=1", "--set", "progress=false",
                          "--add-class", f"Ringlet={tmp_path / 'd'}:{c}", "--out", run)
    assert code == 0, err
    assert f"new class Ringlet: {len(members)} wafers" in err
    assert "Ringlet" in load_run(run).classes_
    # bad specs and missing clusters: one clear line each
    for spec, words in ((f"Ringlet={tmp_path / 'd'}", "NAME=DISCOVER_DIR:CLUSTER"),
                        (f"Ringlet={tmp_path / 'd'}:999", "no cluster 999"),
                        (f"Ringlet={tmp_path}:0", "not a `waferscope discover` output folder")):
        code, _, err = invoke(capsys, "classify", "train", "--data", tmp_path / "known.parquet", "--model", "gbm",
                              "--add-class", spec, "--out", tmp_path / "bad", "--overwrite")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (spec, err)


def test_service_abstains_with_the_runs_scorer(lots):
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

    from servetools import default_app
    from waferscope import registry
    from waferscope.search.discover import train_with_open_set
    from waferscope.serve import create_app

    known = lots.subset(lots.labels != "Donut")
    clf, model = train_with_open_set(registry.get("gbm", "classifier")(max_iter=20, n_jobs=1, progress=False), known,
                                     abstain_rate=0.1)
    from waferscope.models.detectors import load_default

    client = TestClient(create_app(clf, load_default(), open_set=model))
    donut = [m.tolist() for m, y in zip(lots.maps, lots.labels) if y == "Donut"][:6]
    plain = [m.tolist() for m, y in zip(lots.maps, lots.labels) if y == "none"][:6]
    r = client.post("/v1/classify?abstain=1", json={"maps": donut + plain})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["open_set"]["threshold"] == pytest.approx(model.scorer.threshold_, abs=1e-6)
    scores = [w["open_set_score"] for w in doc["wafers"]]
    assert all(w["class"] in set(clf.classes_) | {"unknown"} for w in doc["wafers"])
    assert np.mean(scores[:6]) > np.mean(scores[6:])  # the class it never learnt looks stranger
    for w in doc["wafers"]:
        assert (w["class"] == "unknown") == (w["open_set_score"] > model.scorer.threshold_)
    # the same maps without the flag: the closed-set answer, no score
    r = client.post("/v1/classify", json={"maps": donut})
    assert r.status_code == 200 and "open_set_score" not in r.json()["wafers"][0]
    assert client.post("/v1/classify?abstain=2", json={"maps": donut}).status_code == 400
    # a service whose classifier has no scorer: 409, one JSON error
    r = TestClient(default_app()).post("/v1/classify?abstain=1", json={"maps": donut})
    assert r.status_code == 409 and "open-set" in r.json()["error"]


def test_bundled_default_has_a_scorer_and_abstains(lots, tmp_path, capsys):
    """The bundled gbm ships a cross-fitted open-set scorer (scripts/train_bundled_classifier.py
    --open-set): `classify predict --abstain` works with the bundled default, changes no closed-set
    answer, answers 'unknown' exactly above the threshold, and the scorer stays small on disk."""
    import warnings

    from waferscope.data.io_parquet import write_parquet
    from waferscope.models.classifiers import BUNDLED, DEFAULT_FOR_LABELS
    from waferscope.search.discover import OPEN_SET_ARRAYS, OPEN_SET_JSON, load_open_set

    run = Path(BUNDLED[DEFAULT_FOR_LABELS])
    size = sum((run / n).stat().st_size for n in (OPEN_SET_JSON, OPEN_SET_ARRAYS))
    assert size < 4_000_000, size
    model = load_open_set(run)
    from waferscope.search.open_set import DEFAULT_PARTS

    assert model.scorer.parts == DEFAULT_PARTS, "refit the bundled scorer after changing the default parts"
    write_parquet(lots, tmp_path / "all.parquet")
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--abstain",
                          "--out", tmp_path / "p.csv")
    assert code == 0, err
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "all.parquet", "--out", tmp_path / "q.csv")
    assert code == 0, err
    opened, closed = _csv(tmp_path / "p.csv"), _csv(tmp_path / "q.csv")
    assert [r["id"] for r in opened] == [r["id"] for r in closed]
    threshold = model.scorer.threshold_
    for o, c in zip(opened, closed):
        assert o["predicted"] in (c["predicted"], "unknown")
        score = float(o["open_set_score"])  # written with 4 decimals
        if abs(score - threshold) > 1e-4:
            assert (o["predicted"] == "unknown") == (score > threshold)
    assert 0 < sum(o["predicted"] == "unknown" for o in opened) < len(opened)
    # the service started on the bundled default answers ?abstain=1 with it
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

    from servetools import default_app

    client = TestClient(default_app(open_set=model))
    r = client.post("/v1/classify?abstain=1", json={"maps": [m.tolist() for m in lots.maps[:8]]})
    assert r.status_code == 200, r.text
    assert [w["class"] for w in r.json()["wafers"]] == [o["predicted"] for o in opened[:8]]


def test_crossfit_calibrates_on_out_of_fold_wafers(lots):
    """crossfit_open_set (a classifier trained on every lot): each calibration value comes from models
    that never saw its wafer, the references are the share one fold's models had, and a class no
    fold learnt still scores higher than the known ones."""
    from waferscope import registry
    from waferscope.search.discover import crossfit_open_set

    known = lots.subset(lots.labels != "Donut")
    fit = lambda ds: registry.create("gbm", "classifier", max_iter=10, n_jobs=1, progress=False).fit(ds)  # noqa: E731
    final = fit(known)
    model = crossfit_open_set(fit, known, final.classes_, n_splits=3, n_jobs=1, abstain_rate=0.1)
    scorer = model.scorer
    from waferscope.search.open_set import DEFAULT_PARTS

    assert scorer.cal_parts_.shape == (len(known), len(DEFAULT_PARTS)) and np.isfinite(scorer.cal_parts_).all()
    assert len(scorer.feature_refs_) == sum(len(v) for v in scorer.class_vectors_) == round(len(known) * 2 / 3)
    # the references' classes (for relative_knn / shape_knn) are those of the class vectors
    assert np.bincount(scorer.feature_ref_labels_).tolist() == [len(v) for v in scorer.class_vectors_]
    cal_scores = scorer._combine(scorer._rank(scorer.cal_parts_))
    assert np.mean(cal_scores > scorer.threshold_) == pytest.approx(0.1, abs=0.03)
    score, _ = model.abstain(lots, final.predict_proba(lots))
    donut = lots.labels == "Donut"
    assert score[donut].mean() > score[~donut].mean() + 0.1
    with pytest.raises(ConfigError, match="learnt classes"):
        crossfit_open_set(fit, known, list(final.classes_)[::-1], n_splits=3, n_jobs=1)


def test_scorer_reads_the_canonical_view_and_reuses_the_classifiers_features(lots, tmp_path, monkeypatch):
    """The scorer's wafer features are those of each map's canonical view, the ones gbm computes: with
    gbm they are computed once (gbm's serve both), the answer is the same as computing them twice,
    and a turned/flipped wafer gets the same score. A classifier on another view: the scorer computes
    its own. The view is saved with the scorer; a format-1 scorer reads the maps as given."""
    from waferscope import registry
    from waferscope.errors import DataError
    from waferscope.features.handcrafted import extract_features
    from waferscope.search import discover
    from waferscope.search.discover import OPEN_SET_JSON, load_open_set, save_open_set, train_with_open_set

    known = lots.subset(lots.labels != "Donut")
    clf, model = train_with_open_set(registry.get("gbm", "classifier")(max_iter=10, n_jobs=1, progress=False), known,
                                     abstain_rate=0.1, n_jobs=1)
    assert model.orient == "canonical" and clf.feature_view() == model.feature_view() == ("extended", "canonical")
    test = lots.subset(np.arange(0, len(lots), 3))
    np.testing.assert_array_equal(model.features(test.maps, n_jobs=1), clf.features(test))
    proba = clf.predict_proba(test)
    twice = model.abstain(test, proba)
    calls = []
    monkeypatch.setattr(discover, "open_set_features", lambda *a, **k: calls.append(1) or extract_features(
        *a, feature_set="extended", **k))
    own, score, names = model.classify(clf, test)
    assert not calls, "the scorer extracted the features gbm had just computed"
    np.testing.assert_array_equal(own, proba)
    np.testing.assert_array_equal(score, twice[0])
    np.testing.assert_array_equal(names, twice[1])
    # every rotation/flip of the wafers: the same scores (canonical view, and gbm's call is invariant too)
    turned = WaferDataset.from_maps([np.rot90(m, 1 + i % 3) if i % 2 else m[:, ::-1] for i, m in enumerate(test.maps)])
    np.testing.assert_allclose(model.classify(clf, turned)[1], score, atol=1e-12)
    # a classifier reading the maps as given: the scorer computes its own (canonical) features, same answer
    plain = registry.get("gbm", "classifier")(max_iter=10, n_jobs=1, progress=False, orient="none").fit(known)
    p2, s2, _ = model.classify(plain, test)
    assert calls and np.allclose(p2, plain.predict_proba(test))
    np.testing.assert_array_equal(s2, model.abstain(test, p2)[0])
    with pytest.raises(ConfigError, match="features per wafer"):
        model.abstain(test, proba, features=np.zeros((len(test), 7)))
    # saved: the view travels; a format-1 scorer (before the view was recorded) reads the maps as given
    save_open_set(model, tmp_path)
    again = load_open_set(tmp_path, clf.classes_)
    assert again.orient == "canonical"
    np.testing.assert_array_equal(again.classify(clf, test)[1], score)
    doc = json.loads((tmp_path / OPEN_SET_JSON).read_text())
    assert doc["waferscope_open_set_format"] == 4 and doc["orient"] == "canonical"
    old = {k: v for k, v in doc.items() if k != "orient"} | {"waferscope_open_set_format": 1}
    (tmp_path / OPEN_SET_JSON).write_text(json.dumps(old))
    legacy = load_open_set(tmp_path, clf.classes_)
    assert legacy.orient == "none"
    np.testing.assert_array_equal(legacy.features(test.maps, n_jobs=1),
                                  extract_features(test.maps, n_jobs=1, feature_set="extended"))
    (tmp_path / OPEN_SET_JSON).write_text(json.dumps(doc | {"orient": "sideways"}))
    with pytest.raises(DataError, match="orient"):
        load_open_set(tmp_path)
    (tmp_path / OPEN_SET_JSON).write_text(json.dumps(doc | {"waferscope_open_set_format": 5}))
    with pytest.raises(DataError, match="format"):
        load_open_set(tmp_path)


def test_shape_and_relative_parts():
    """``shape_knn`` sees a shape no known class has in the few shape columns (drowned out in the full
    feature distance); ``relative_knn`` judges a distance against the chosen class's own spread."""
    from waferscope.errors import DataError
    from waferscope.features.handcrafted import feature_names
    from waferscope.search.open_set import SHAPE_FEATURES

    rng = np.random.default_rng(3)
    names = feature_names("extended")
    cols = [names.index(n) for n in SHAPE_FEATURES]
    tight = np.zeros(len(names))
    tight[0] = 5.0

    def wafers(n, cls):  # class 0 tight around `tight`, class 1 loose around 0
        return rng.normal(0, 1, (n, len(names))) * (0.2 if cls == 0 else 1.0) + (tight if cls == 0 else 0)

    x_tr = np.vstack([wafers(200, 0), wafers(200, 1)])
    y_tr = np.r_[np.zeros(200), np.ones(200)].astype(int).astype(str)
    x_cal = np.vstack([wafers(100, 0), wafers(100, 1)])
    onehot = lambda x: np.stack([x[:, 0] > 2.5, x[:, 0] <= 2.5], 1).astype(float) * 0.98 + 0.01  # noqa: E731

    def sig(x):
        return {"proba": onehot(x), "features": x}

    scorer = OpenSetScorer(parts=("shape_knn", "relative_knn", "feature_knn")).fit({"features": x_tr}, y_tr, sig(x_cal), ["0", "1"])
    # a loose-class wafer whose six shape columns sit where no training wafer has them
    odd = wafers(50, 1)
    odd[:, cols] += 6.0
    plain = wafers(50, 1)
    shape_rank = scorer.ranks(sig(np.vstack([plain, odd])))[:, 0]
    assert roc_auc_score(np.r_[np.zeros(50), np.ones(50)], shape_rank) > 0.95
    # the same absolute step (3 in one column) is far for the tight class, ordinary for the loose one
    step = np.zeros(len(names))
    step[5] = 3.0
    raw = scorer.raw_parts(sig(np.vstack([wafers(50, 0) + step, wafers(50, 1) + step])))
    rel, absolute = raw[:, 1], raw[:, 2]
    assert rel[:50].mean() > 1.3 * rel[50:].mean() and absolute[:50].mean() < absolute[50:].mean()
    # the state round-trips; a state without the reference labels the parts need is refused
    arrays, extras = scorer.state()
    again = OpenSetScorer.from_state(arrays, json.loads(json.dumps(extras)))
    np.testing.assert_array_equal(again.score(sig(odd)), scorer.score(sig(odd)))
    del arrays["feature_ref_labels"]
    with pytest.raises(DataError, match="reference labels"):
        OpenSetScorer.from_state(arrays, extras)
    with pytest.raises(ConfigError, match="extended wafer features"):  # too few feature columns
        scorer.score(sig(x_cal[:, :20]))
    with pytest.raises(ConfigError, match="shape_features"):
        OpenSetScorer(shape_features=("no_such_feature",))


def test_shape_tail_sees_a_few_extreme_descriptors_of_the_chosen_class():
    """``shape_tail``: a wafer ordinary for its chosen class in all but three of the tail descriptors, and
    extreme there, is flagged, though its distance over all 120 features hardly moves; the part only
    compares with the chosen class's wafers (what is ordinary for class 1 is extreme for class 0)."""
    from waferscope.features.handcrafted import feature_names
    from waferscope.search.open_set import TAIL_FEATURES, TAIL_TOP

    rng = np.random.default_rng(5)
    names = feature_names("extended")
    cols = [names.index(n) for n in TAIL_FEATURES]

    def wafers(n, cls):  # two classes apart in column 0; class 1's tail columns sit 4 higher
        x = rng.normal(0, 1, (n, len(names)))
        x[:, 0] += 5.0 * (cls == 0)
        x[:, cols] += 4.0 * (cls == 1)
        return x

    onehot = lambda x: np.stack([x[:, 0] > 2.5, x[:, 0] <= 2.5], 1).astype(float) * 0.98 + 0.01  # noqa: E731

    def sig(x):
        return {"proba": onehot(x), "features": x}

    x_tr = np.vstack([wafers(300, 0), wafers(300, 1)])
    y_tr = np.r_[np.zeros(300), np.ones(300)].astype(int).astype(str)
    scorer = OpenSetScorer(parts=("shape_tail", "feature_knn")).fit(
        {"features": x_tr}, y_tr, sig(np.vstack([wafers(100, 0), wafers(100, 1)])), ["0", "1"])
    odd = wafers(60, 0)
    odd[:, cols[:3]] += 3.0  # three descriptors beyond almost every class-0 wafer
    plain = wafers(60, 0)
    y = np.r_[np.zeros(60), np.ones(60)]
    ranks = scorer.ranks(sig(np.vstack([plain, odd])))
    assert roc_auc_score(y, ranks[:, 0]) > 0.95 and roc_auc_score(y, ranks[:, 1]) < 0.90
    raw = scorer.raw_parts(sig(odd))[:, 0]
    # finite even beyond every reference: at most TAIL_TOP * -log(2 / (n + 2)) for n = 300 references of the class
    assert np.isfinite(raw).all() and raw.max() <= TAIL_TOP * np.log(302 / 2) + 1e-9
    # class 1's ordinary tail values are extreme against class 0: the part reads the chosen class only
    as_class_0 = wafers(60, 1)
    as_class_0[:, 0] += 5.0  # the classifier calls them class 0
    assert scorer.raw_parts(sig(as_class_0))[:, 0].min() > np.quantile(scorer.raw_parts(sig(plain))[:, 0], 0.9)
    # the state round-trips (descriptors and how many add up); a state from before the part loads with the defaults
    arrays, extras = scorer.state()
    assert extras["tail_features"] == list(TAIL_FEATURES) and extras["tail_top"] == TAIL_TOP
    again = OpenSetScorer.from_state(arrays, json.loads(json.dumps(extras)))
    np.testing.assert_array_equal(again.score(sig(odd)), scorer.score(sig(odd)))
    old = {k: v for k, v in extras.items() if k not in ("tail_features", "tail_top")}
    np.testing.assert_array_equal(OpenSetScorer.from_state(arrays, old).score(sig(odd)), scorer.score(sig(odd)))
    with pytest.raises(ConfigError, match="extended wafer features"):  # too few feature columns
        scorer.score(sig(plain[:, :20]))
    with pytest.raises(ConfigError, match="tail_features"):
        OpenSetScorer(tail_features=("no_such_feature",))
    with pytest.raises(ConfigError, match="tail_top"):
        OpenSetScorer(tail_top=0)
