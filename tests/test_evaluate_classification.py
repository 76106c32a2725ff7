"""The held-out classification protocol (waferscope.evaluate.classification) and `waferscope evaluate heldout`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import invoke
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate
from waferscope.evaluate import classification as ev


class ByFailShare:
    """A stand-in classifier: 'Near-full' when most dies fail, else 'none' (enough to check the scoring)."""

    classes_ = np.array(["Near-full", "none"])

    def predict_proba(self, ds):
        share = np.array([(m == 2).sum() / max((m > 0).sum(), 1) for m in ds.maps])
        return np.c_[share > 0.5, share <= 0.5].astype(float)


def test_heldout_leaves_out_seen_maps_and_scores_the_rest():
    data = generate(30, seed=5)
    seen = data.subset(np.arange(10))
    rows = ev.heldout({"stub": ByFailShare}, data, [seen])
    assert len(rows) == 1 and rows[0]["n"] == 20  # the 10 seen maps are not scored
    held = data.subset(np.arange(10, 30))
    pred = ByFailShare.classes_[ByFailShare().predict_proba(held).argmax(1)]
    ref = ev.score_predictions(held.labels, pred)
    assert rows[0]["accuracy"] == pytest.approx(ref["accuracy"])
    assert rows[0]["macro_f1"] == pytest.approx(np.mean(list(ref["per_class_f1"].values())))
    assert set(rows[0]["per_class_f1"]) == set(held.labels.astype(str))  # classes present in the sample


def test_heldout_refuses_a_sample_entirely_seen():
    from waferscope.errors import DataError

    data = generate(8, seed=1)
    with pytest.raises(DataError, match="every map of the held-out sample is in the training sets"):
        ev.heldout({"stub": ByFailShare}, data, [data], sample_name="s.parquet")


def test_map_key_tells_shape_apart():
    a = np.ones((2, 3), np.uint8)
    assert ev.map_key(a) != ev.map_key(a.reshape(3, 2)) and ev.map_key(a) == ev.map_key(a.copy())


def test_cli_heldout(capsys, tmp_path):
    data = generate(24, seed=3)
    write_parquet(data, tmp_path / "sample.parquet")
    write_parquet(data.subset(np.arange(4)), tmp_path / "seen.parquet")
    code, out, err = invoke(capsys, "evaluate", "heldout", "--sample", tmp_path / "sample.parquet",
                            "--seen", tmp_path / "seen.parquet", "--json", tmp_path / "rows.jsonl")
    assert code == 0, err
    assert "20 maps of sample.parquet are in none of: seen.parquet" in out
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    from waferscope.models.classifiers import BUNDLED

    assert [r["model"] for r in rows] == list(BUNDLED) and all(0 <= r["macro_f1"] <= 1 for r in rows)


def test_cli_heldout_bad_input(capsys, tmp_path):
    code, _, err = invoke(capsys, "evaluate", "heldout", "--run", tmp_path)
    assert code == 2 and "model.json is missing" in err
    code, _, err = invoke(capsys, "evaluate", "heldout", "--sample", tmp_path / "nope.parquet",
                          "--seen", tmp_path / "nope.parquet")
    assert code == 2 and "nope.parquet" in err and "no such file" in err


# ---- lot-grouped k-fold ----------------------------------------------------------------------------
def _labelled_set(tmp_path, name, n, seed, lots):
    from waferscope.data import WaferDataset

    ds = generate(n, seed=seed)
    meta = ds.meta.copy()
    meta["lot"] = [f"L{i % lots}" for i in range(n)]  # the same lot names in both sets: must not merge
    ds = WaferDataset.from_maps(ds.maps, ds.labels, meta=meta, source=name)
    path = tmp_path / f"{name}.parquet"
    write_parquet(ds, path)
    return ds, path


def test_pool_sets_qualifies_lots_by_set(tmp_path):
    a, _ = _labelled_set(tmp_path, "a", 20, 1, 4)
    b, _ = _labelled_set(tmp_path, "b", 20, 2, 4)
    pooled, set_of, groups = ev.pool_sets({"a": a, "b": b})
    assert len(pooled) == 40 and list(set_of[:1]) == ["a"] and groups[0] == "a:L0" and groups[20] == "b:L0"
    folds = ev.lot_folds(pooled.labels, groups)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested) == list(range(40))  # every map tested exactly once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])  # no lot on both sides


TINY_GBM = "gbm:max_iter=3,max_leaf_nodes=4,n_jobs=1,progress=false"


def test_lot_kfold_caches_and_ensembles(tmp_path):
    a, _ = _labelled_set(tmp_path, "dev", 45, 1, 9)
    b, _ = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    sets = {"dev": a, "dev2": b}
    rep = ev.lot_kfold([TINY_GBM], sets, synthetic=0, work=tmp_path / "w")[TINY_GBM]
    assert rep["n"] == 90 and rep["folds"] == 5 and 0 <= rep["macro_f1"] <= 1 and "macro_f1_dev2" in rep
    caches = sorted((tmp_path / "w").glob("*.json"))
    assert len(caches) == 5
    before = [c.stat().st_mtime_ns for c in caches]
    again = ev.lot_kfold([TINY_GBM], sets, synthetic=0, work=tmp_path / "w")[TINY_GBM]
    assert again == rep and [c.stat().st_mtime_ns for c in caches] == before  # read from the caches
    both = ev.lot_kfold([f"{TINY_GBM}+{TINY_GBM}"], sets, synthetic=0, work=tmp_path / "w")
    assert next(iter(both.values()))["macro_f1"] == pytest.approx(rep["macro_f1"])  # a model averaged with itself



def test_lot_fold_cache_is_refit_when_the_models_params_changed(tmp_path):
    """A cache written under other parameters (e.g. an old default) is stale and is refit, not reused."""
    a, _ = _labelled_set(tmp_path, "dev", 45, 1, 9)
    b, _ = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    pooled, _, groups = ev.pool_sets({"dev": a, "dev2": b})
    folds = ev.lot_folds(pooled.labels, groups)
    rec = ev.run_lot_fold(TINY_GBM, 0, pooled, folds, 0, tmp_path)
    assert rec["params"]["max_leaf_nodes"] == 4 and "progress" not in rec["params"]
    cache = tmp_path / f"{TINY_GBM}_fold0.json"
    stale = dict(rec, params=dict(rec["params"], max_leaf_nodes=15), proba=[[0.0]])
    cache.write_text(json.dumps(stale))
    assert ev.run_lot_fold(TINY_GBM, 0, pooled, folds, 0, tmp_path)["proba"] == rec["proba"]
    assert json.loads(cache.read_text())["params"] == rec["params"]

def test_a_seed_in_the_method_spec_wins_over_the_protocols(tmp_path):
    """'name:seed=1' runs a second seed of a recipe (its own cache), not a duplicate-argument error."""
    a, _ = _labelled_set(tmp_path, "dev", 45, 1, 9)
    b, _ = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    pooled, _, groups = ev.pool_sets({"dev": a, "dev2": b})
    folds = ev.lot_folds(pooled.labels, groups)
    assert ev.method_params(f"{TINY_GBM},seed=7")["seed"] == 7 and ev.method_params(TINY_GBM)["seed"] == 0
    rec = ev.run_lot_fold(f"{TINY_GBM},seed=7", 0, pooled, folds, 0, tmp_path)
    assert rec["params"]["seed"] == 7


def test_cli_classifiers(capsys, tmp_path):
    _, a = _labelled_set(tmp_path, "dev", 45, 1, 9)
    _, b = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    code, out, err = invoke(capsys, "evaluate", "classifiers", TINY_GBM, "--fold", "0", "--synthetic", "20",
                            "--dev", a, "--dev2", b, "--work", tmp_path / "w", "--json", tmp_path / "r.jsonl")
    assert code == 0, err
    rep = json.loads((tmp_path / "r.jsonl").read_text())
    assert rep["folds"] == 1 and rep["n"] < 90 and f"{TINY_GBM}: macro-F1" in out
    code, _, err = invoke(capsys, "evaluate", "classifiers", "no_such_model", "--dev", a, "--dev2", b)
    assert code == 2 and "unknown classifier 'no_such_model'" in err
    code, _, err = invoke(capsys, "evaluate", "classifiers", TINY_GBM, "--fold", "7", "--dev", a, "--dev2", b)
    assert code == 2 and "--fold must be 0..4, got 7" in err


# ---- lot learning curve and cross-set -----------------------------------------------------------
def test_lot_subsample_keeps_whole_lots_seeded():
    groups = np.array([f"L{i % 8}" for i in range(80)])
    train = np.arange(0, 80, 2)  # the even maps: lots L0, L2, L4, L6
    part = ev.lot_subsample(train, groups, 0.5, seed=3)
    lots = set(groups[part])
    assert len(lots) == 2 and set(part) == set(train[np.isin(groups[train], list(lots))])  # whole lots only
    assert np.array_equal(part, ev.lot_subsample(train, groups, 0.5, seed=3))
    assert ev.lot_subsample(train, groups, 1.0, seed=3) is train
    from waferscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"must be in \(0, 1\], got 0"):
        ev.lot_subsample(train, groups, 0, seed=0)


def test_learning_curve_trains_on_fewer_maps_with_the_same_test_folds(tmp_path):
    a, _ = _labelled_set(tmp_path, "dev", 60, 1, 12)
    b, _ = _labelled_set(tmp_path, "dev2", 60, 2, 12)
    points = ev.learning_curve(TINY_GBM, {"dev": a, "dev2": b}, [0.25, 1.0], synthetic=10, work=tmp_path / "w")
    (f_small, small), (f_full, full) = points
    assert (f_small, f_full) == (0.25, 1.0) and small["n"] == full["n"] == 120  # test folds unchanged
    assert small["n_real_train"] < full["n_real_train"] == pytest.approx(96)
    # the full fraction is the plain protocol, read from the same caches
    assert ev.lot_kfold([TINY_GBM], {"dev": a, "dev2": b}, synthetic=10, work=tmp_path / "w")[TINY_GBM] == full
    assert len(list((tmp_path / "w").glob("*_frac0.25_fold*.json"))) == 5
    ev.plot_learning_curve(points, "tiny", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_learning_curve_and_cross_set(capsys, tmp_path):
    _, a = _labelled_set(tmp_path, "dev", 45, 1, 9)
    _, b = _labelled_set(tmp_path, "dev2", 40, 2, 8)
    code, out, err = invoke(capsys, "evaluate", "learning-curve", TINY_GBM, "--fractions", "0.5", "--fractions", "1",
                            "--synthetic", "10", "--dev", a, "--dev2", b, "--work", tmp_path / "w",
                            "--out", tmp_path / "curve.png")
    assert code == 0, err
    assert "fraction 0.5:" in out and "fraction 1:" in out and (tmp_path / "curve.png").exists()
    code, _, err = invoke(capsys, "evaluate", "learning-curve", TINY_GBM, "--fractions", "1.5", "--dev", a,
                          "--dev2", b)
    assert code == 2 and "--fractions must be in (0, 1], got 1.5" in err
    code, out, err = invoke(capsys, "evaluate", "cross-set", TINY_GBM, "--synthetic", "10", "--dev", a,
                            "--dev2", b, "--work", tmp_path / "w")
    assert code == 0, err
    assert "dev->dev2: macro-F1" in out and "over 40 maps" in out and "dev2->dev: macro-F1" in out
    assert "over 45 maps" in out and len(list((tmp_path / "w").glob("*_cross_*.json"))) == 2


def test_cross_set_scores_each_direction_on_all_of_the_other_set(tmp_path):
    a, _ = _labelled_set(tmp_path, "dev", 30, 1, 6)
    b, _ = _labelled_set(tmp_path, "dev2", 20, 2, 4)
    rep = ev.cross_set(TINY_GBM, {"dev": a, "dev2": b}, synthetic=0, work=tmp_path / "w")
    assert list(rep) == ["dev->dev2", "dev2->dev"]
    assert rep["dev->dev2"]["n"] == 20 and rep["dev2->dev"]["n"] == 30
    assert set(rep["dev->dev2"]["per_class_f1"]) == set(b.labels.astype(str))
    from waferscope.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly two"):
        ev.cross_set(TINY_GBM, {"dev": a}, work=tmp_path / "w")


# ---- student check ---------------------------------------------------------------------------------
TINY_CNN = "cnn:input_size=16,epochs=4,width=4,progress=false"
TINY_STUDENT = "kd_student:input_size=16,epochs=1,width=2,head=8,progress=false"


def test_student_retention_distils_each_folds_teacher(tmp_path):
    """One teacher per fold, kept and reused; the student's cache names its teacher and is read back."""
    from waferscope.evaluate.student import student_retention

    a, _ = _labelled_set(tmp_path, "dev", 45, 1, 9)
    b, _ = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    sets, work = {"dev": a, "dev2": b}, tmp_path / "w"
    rep = student_retention(TINY_CNN, TINY_STUDENT, sets, folds=[0, 1], synthetic=0, work=work)
    assert rep["folds"] == [0, 1] and len(rep["retention_per_fold"]) == 2
    assert rep["student_parameters"] < rep["teacher_parameters"]
    assert rep["parameter_ratio"] == pytest.approx(100 * rep["student_parameters"] / rep["teacher_parameters"])
    assert 0 <= rep["agreement"] <= 1
    assert (work / "models" / f"{TINY_CNN}_fold0" / "model.json").is_file()
    student_cache = work / f"{TINY_STUDENT}@{TINY_CNN}_fold1.json"
    assert json.loads(student_cache.read_text())["params"]["teacher"]["width"] == 4
    # the teacher's cache is the plain protocol's: `evaluate classifiers TEACHER` reads it
    assert ev.lot_kfold([TINY_CNN], sets, folds=[0, 1], synthetic=0, work=work)[TINY_CNN]["macro_f1"] == \
        pytest.approx(rep["teacher_report"]["macro_f1"])
    before = student_cache.stat().st_mtime_ns
    again = student_retention(TINY_CNN, TINY_STUDENT, sets, folds=[0, 1], synthetic=0, work=work)
    assert json.dumps(again) == json.dumps(rep)  # (a tiny teacher may score 0: NaN retention, equal as text)
    assert student_cache.stat().st_mtime_ns == before


def test_cli_student_and_its_bad_input(capsys, tmp_path):
    _, a = _labelled_set(tmp_path, "dev", 45, 1, 9)
    _, b = _labelled_set(tmp_path, "dev2", 45, 2, 9)
    code, out, err = invoke(capsys, "evaluate", "student", TINY_CNN, TINY_STUDENT, "--fold", "0", "--synthetic", "0",
                            "--dev", a, "--dev2", b, "--work", tmp_path / "w", "--out", tmp_path / "r.png")
    assert code == 0, err
    assert "fold 0: teacher" in out and "retention mean over folds" in out and "parameters" in out
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    # unlabelled transfer maps: a cache of their own beside the plain student's
    u = generate(12, seed=5)
    u.labels[:] = ""
    write_parquet(u, tmp_path / "u.parquet")
    code, out, err = invoke(capsys, "evaluate", "student", TINY_CNN, TINY_STUDENT, "--fold", "0", "--synthetic", "0",
                            "--dev", a, "--dev2", b, "--work", tmp_path / "w", "--unlabelled", tmp_path / "u.parquet")
    assert code == 0, err
    assert (tmp_path / "w" / f"{TINY_STUDENT}@{TINY_CNN}+12unlabelled_fold0.json").is_file()
    code, _, err = invoke(capsys, "evaluate", "student", TINY_CNN, TINY_STUDENT, "--fold", "0", "--dev", a,
                          "--dev2", b, "--work", tmp_path / "w", "--unlabelled", a)
    assert code == 2 and "must hold unlabelled maps only" in err and "dev.parquet" in err
    code, _, err = invoke(capsys, "evaluate", "student", TINY_CNN, "gbm", "--dev", a, "--dev2", b)
    assert code == 2 and "gbm does not learn from a teacher" in err and "kd_student" in err
    code, _, err = invoke(capsys, "evaluate", "student", "no_such_model", TINY_STUDENT, "--dev", a, "--dev2", b)
    assert code == 2 and "unknown classifier 'no_such_model'" in err
    code, _, err = invoke(capsys, "evaluate", "student", TINY_CNN, TINY_STUDENT, "--fold", "7", "--dev", a, "--dev2", b)
    assert code == 2 and "--fold must be 0..4" in err
