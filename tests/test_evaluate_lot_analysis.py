"""Prior shift and the confusion gallery on the cached lot-fold predictions
(waferscope.evaluate.lot_analysis, `waferscope evaluate prior-shift` / `errors`), on fake caches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import invoke
from waferscope.data import WaferDataset
from waferscope.data.classes import CLASSES
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate
from waferscope.errors import DataError
from waferscope.evaluate import classification as ev
from waferscope.evaluate import lot_analysis as la


def _sets(tmp_path, n=45):
    out = {}
    for name, seed in (("dev", 1), ("dev2", 2)):
        ds = generate(n, seed=seed)
        meta = ds.meta.copy()
        meta["lot"] = [f"L{i % 9}" for i in range(n)]
        ds = WaferDataset.from_maps(ds.maps, ds.labels, meta=meta, source=name)
        write_parquet(ds, tmp_path / f"{name}.parquet")
        out[name] = ds
    return out


def _write_caches(work, method, classes, proba, folds=range(ev.N_FOLDS)):
    work.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(len(proba)), ev.N_FOLDS)):
        if k in folds:
            ev.fold_cache(work, method, k).write_text(json.dumps(
                {"method": method, "classes": classes, "test_index": part.tolist(), "proba": proba[part].tolist(),
                 "train_seconds": 1.0, "wafers_per_second": 1.0}))


def test_per_class_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    np.testing.assert_allclose(la.per_class_f1(truth, pred, 4), f1_score(truth, pred, average=None))


def test_prior_shift_helps_when_normal_maps_dominate(tmp_path):
    """A classifier whose only errors are normal maps called Loc: the given prior takes them back
    once normal maps dominate (the wm811k mix), and EM estimates that mix without labels."""
    classes = list(CLASSES)
    y = np.repeat(classes, 30)
    proba = np.eye(9)[[classes.index(c) for c in y]] * 0.999 + 0.001 / 9  # confident (else rare classes tip to none)
    doubtful = np.flatnonzero(y == "none")[:6]
    proba[doubtful] = 0.02
    proba[doubtful, classes.index("Loc")] = 0.5
    proba[doubtful, classes.index("none")] = 0.36
    _write_caches(tmp_path, "toy", classes, proba)
    report = la.prior_shift("toy", y, tmp_path, draws=3, size=3000)
    assert set(report) == {"dev", "wm811k", "defects", "half-none"}
    assert report["dev"]["balanced"]["macro_f1_mean"] > 0.97
    wm = report["wm811k"]
    assert wm["given"]["macro_f1_mean"] > wm["balanced"]["macro_f1_mean"] + 0.05
    assert wm["estimated_mix"]["none"] > 0.7
    # an ensemble of a method with itself reads both members' caches and scores the same
    both = la.prior_shift("toy+toy", y, tmp_path, draws=3, size=3000)["wm811k"]
    assert [both[k]["macro_f1_mean"] for k in ("balanced", "given", "estimate")] == pytest.approx(
        [wm[k]["macro_f1_mean"] for k in ("balanced", "given", "estimate")])


def test_missing_fold_is_named(tmp_path):
    classes = list(CLASSES)
    _write_caches(tmp_path, "gbm", classes, np.full((20, 9), 1 / 9), folds=[0, 1, 2])
    with pytest.raises(DataError, match=r"gbm has not been run on every fold \(no gbm_fold3.json\)"):
        la.pooled_predictions("gbm", tmp_path, 20)
    _write_caches(tmp_path, "gbm", classes, np.full((20, 9), 1 / 9))
    with pytest.raises(DataError, match="do not cover the 30 pooled maps"):
        la.pooled_predictions("gbm", tmp_path, 30)


def test_cli_errors_and_prior_shift(tmp_path, capsys):
    sets = _sets(tmp_path)
    pooled, _, _ = ev.pool_sets(sets)
    labels = pooled.labels.astype(str)
    classes = sorted(set(labels))
    first, second = classes[:2]
    pred = labels.copy()
    pred[np.flatnonzero(labels == first)[:3]] = second  # three maps of one class called the other
    _write_caches(tmp_path / "w", "gbm", classes, np.eye(len(classes))[[classes.index(c) for c in pred]])
    files = ["--dev", tmp_path / "dev.parquet", "--dev2", tmp_path / "dev2.parquet", "--work", tmp_path / "w"]
    code, out, err = invoke(capsys, "evaluate", "errors", "gbm", "--out", tmp_path / "e.png", *files)
    assert code == 0, err
    assert f"{first} -> {second}: 3" in out and (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = invoke(capsys, "evaluate", "prior-shift", "gbm", "--draws", "2", "--size", "500",
                            "--json", tmp_path / "s.json", *files)
    assert code == 0, err
    assert "| gbm | wm811k |" in out and set(json.loads((tmp_path / "s.json").read_text())["gbm"]) >= {"dev"}


def test_cli_errors_refuses_no_errors_and_missing_caches(tmp_path, capsys):
    sets = _sets(tmp_path)
    labels = ev.pool_sets(sets)[0].labels.astype(str)
    classes = sorted(set(labels))
    _write_caches(tmp_path / "w", "gbm", classes, np.eye(len(classes))[[classes.index(c) for c in labels]])
    files = ["--dev", tmp_path / "dev.parquet", "--dev2", tmp_path / "dev2.parquet", "--work", tmp_path / "w"]
    code, _, err = invoke(capsys, "evaluate", "errors", "gbm", "--out", tmp_path / "e.png", *files)
    assert code == 2 and "made no errors" in err and not (tmp_path / "e.png").exists()
    code, _, err = invoke(capsys, "evaluate", "errors", "svm-rbf", "--out", tmp_path / "e.png", *files)
    assert code == 2 and "svm-rbf has not been run on every fold" in err and not (tmp_path / "e.png").exists()


def test_prior_shift_per_fold_with_calibration_on_tiny_caches(tmp_path, capsys):
    """Per-fold draws (each fold's own held-out maps), a temperature per fold fitted on the others,
    the smallest estimate - balanced gain and the EM mix error; the CLI prints them."""
    classes = list(CLASSES)
    rng = np.random.default_rng(0)
    y = np.repeat(classes, 20)
    logits = 4.0 * np.eye(9)[[classes.index(c) for c in y]] + rng.normal(0, 1.5, (len(y), 9))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    _write_caches(tmp_path, "toy", classes, proba)
    report = la.prior_shift_folds("toy", y, tmp_path, draws=2, size=400, calibrate=True)
    assert len(report["temperatures"]) == ev.N_FOLDS and all(t > 0 for t in report["temperatures"])
    wm = report["wm811k"]
    assert len(wm["folds"]) == ev.N_FOLDS and 0 <= wm["mix_error"] <= 1
    gains = [f["estimate"]["macro_f1_mean"] - f["balanced"]["macro_f1_mean"] for f in wm["folds"]]
    assert wm["min_gain"] == pytest.approx(min(gains))
    # estimate moves only none's share: the defect classes keep equal shares
    shares = np.array([wm["folds"][0]["estimated_mix"][c] for c in classes if c != "none"])
    np.testing.assert_allclose(shares, shares[0], atol=1e-4)
    sets = _sets(tmp_path)
    labels = ev.pool_sets(sets)[0].labels.astype(str)
    few = sorted(set(labels))
    _write_caches(tmp_path / "w", "gbm", few, np.eye(len(few))[[few.index(c) for c in labels]] * 0.9 + 0.1 / len(few))
    files = ["--dev", tmp_path / "dev.parquet", "--dev2", tmp_path / "dev2.parquet", "--work", tmp_path / "w"]
    code, out, err = invoke(capsys, "evaluate", "prior-shift", "gbm", "--per-fold", "--calibrate", "--draws", "2",
                            "--size", "300", *files)
    assert code == 0, err
    assert "temperatures per fold" in out and "| gbm (calibrated) | wm811k |" in out
    code, _, err = invoke(capsys, "evaluate", "prior-shift", "gbm", "--calibrate", *files)
    assert code == 2 and "--calibrate needs --per-fold" in err
