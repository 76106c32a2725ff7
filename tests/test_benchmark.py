"""The benchmark runner end to end on a tiny config: tables, cache resume, determinism, config errors.

The models here are tiny fixture estimators defined in this file (a nearest-centroid classifier on
a coarse fail-density grid, a mean-map detector), so the test exercises the benchmark machinery in
seconds, independently of the real models.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from waferscope import registry
from waferscope.base import Classifier, DetectionResult, Detector
from waferscope.data.preprocess import resize_maps
from waferscope.errors import ConfigError


# ---- fixture estimators ------------------------------------------------------------------------
def _grid(dataset, size):
    maps = resize_maps(dataset.maps, size)
    return (maps == 2).reshape(len(maps), -1).astype(np.float64)


@registry.register("bench-test-centroid", kind="classifier")
class CentroidClassifier(Classifier):
    def __init__(self, size: int = 8, seed: int = 0):
        self.size = size
        self.seed = seed

    def fit(self, dataset, **kwargs):
        x = _grid(dataset, self.size)
        self.classes_ = sorted(set(dataset.labels.astype(str)))
        # A seeded jitter so the seed visibly matters (and must be reproduced).
        jitter = np.random.default_rng(self.seed).normal(0, 1e-3, (len(self.classes_), x.shape[1]))
        self.centroids_ = np.stack([x[dataset.labels == c].mean(0) for c in self.classes_]) + jitter
        return self

    def predict_proba(self, dataset):
        d = ((_grid(dataset, self.size)[:, None] - self.centroids_[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)

    def _state(self):
        return {"centroids": self.centroids_.astype(np.float32)}, {"classes": self.classes_}

    def _load_state(self, tensors, extras):
        self.centroids_ = tensors["centroids"].numpy().astype(np.float64)
        self.classes_ = extras["classes"]


@registry.register("bench-test-meanmap", kind="detector")
class MeanMapDetector(Detector):
    def __init__(self, size: int = 16):
        self.size = size

    def fit(self, dataset, **kwargs):
        self.mean_ = resize_maps(dataset.maps, self.size).astype(np.float64).mean(0)
        return self

    def score(self, dataset):
        maps = resize_maps(dataset.maps, self.size).astype(np.float64)
        diff = np.abs(maps - self.mean_[None])
        out = [resize_maps([d], m.shape[0])[0][:, : m.shape[1]].astype(np.float32) if m.shape[0] == m.shape[1]
               else np.resize(d, m.shape).astype(np.float32) for d, m in zip(diff, dataset.maps)]
        return DetectionResult(scores=diff.reshape(len(diff), -1).mean(1), maps=out)

    def _state(self):
        return {"mean": self.mean_.astype(np.float32)}, {}

    def _load_state(self, tensors, extras):
        self.mean_ = tensors["mean"].numpy().astype(np.float64)


# ---- tiny data ---------------------------------------------------------------------------------
def make_maps(n: int, seed: int):
    """Round 24×24 wafers: normal (sparse random fails), Center blob, Edge-Ring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:24, :24] - 11.5
    r = np.hypot(yy, xx)
    maps, labels = [], []
    for i in range(n):
        label = ("none", "Center", "Edge-Ring")[i % 3]
        m = np.where(r < 11.5, 1, 0).astype(np.uint8)
        fail = rng.random(m.shape) < 0.04
        if label == "Center":
            fail |= (r < rng.uniform(3, 5)) & (rng.random(m.shape) < 0.8)
        elif label == "Edge-Ring":
            fail |= (r > rng.uniform(9, 10)) & (rng.random(m.shape) < 0.8)
        m[(m == 1) & fail] = 2
        maps.append(m)
        labels.append(label)
    return maps, labels


def write_npz(path: Path, n: int, seed: int) -> Path:
    maps, labels = make_maps(n, seed)
    np.savez(path, maps_flat=np.concatenate([m.ravel() for m in maps]),
             shapes=np.array([m.shape for m in maps]), labels=np.array(labels))
    return path


def write_config(tmp: Path, task: str = "classification", **overrides) -> Path:
    import yaml

    write_npz(tmp / "train.npz", 60, 1)
    write_npz(tmp / "test.npz", 30, 2)
    method = "bench-test-centroid" if task == "classification" else "bench-test-meanmap"
    doc = {"task": task, "seeds": [0, 1], "speed": {"batch_size": 8, "n": 16, "repeats": 3},
           "datasets": {"pair": {"train": "train.npz", "test": "test.npz"},
                        "folds": {"data": "train.npz", "protocol": {"kfold": 3}}},
           "methods": {"small": {"model": method}}}
    doc.update(overrides)
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def quality_rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    cols = json.loads((out / "results.json").read_text())["quality_columns"]
    return [{c: r[c] for c in cols} for r in rows]


# ---- tests -------------------------------------------------------------------------------------
def test_classification_end_to_end_is_deterministic_and_resumes(tmp_path):
    from waferscope.benchmark import run_benchmark

    cfg = write_config(tmp_path)
    logs: list[str] = []
    run_benchmark(cfg, tmp_path / "a", report=False, log=logs.append)
    rows = quality_rows(tmp_path / "a")
    assert len(rows) == 4  # 2 data sets × 1 method × 2 seeds
    assert {r["dataset"] for r in rows} == {"pair", "folds"}
    assert all(float(r["macro_f1"]) > 0.8 for r in rows), rows  # the patterns are easy
    assert rows[0]["f1[Center]"] != ""
    assert len(list((tmp_path / "a" / "cells").glob("*.json"))) == 4
    assert (tmp_path / "a" / "runs" / "small__pair__s0" / "model.json").is_file()
    assert "latency b=1" in (tmp_path / "a" / "results.md").read_text()

    # A second run from scratch gives byte-identical quality columns.
    run_benchmark(cfg, tmp_path / "b", report=False, log=lambda s: None)
    assert (tmp_path / "a" / "quality.csv").read_bytes() == (tmp_path / "b" / "quality.csv").read_bytes()

    # Resume: a deleted cell is recomputed, the others are read back from the cache.
    cells = sorted((tmp_path / "a" / "cells").glob("*.json"))
    cells[0].unlink()
    logs.clear()
    run_benchmark(cfg, tmp_path / "a", report=False, log=logs.append)
    assert sum(": cached" in line for line in logs) == 3
    assert sum(": done" in line for line in logs) == 1
    assert quality_rows(tmp_path / "a") == rows


def test_changed_data_invalidates_the_cache(tmp_path):
    from waferscope.benchmark import run_benchmark

    cfg = write_config(tmp_path)
    run_benchmark(cfg, tmp_path / "o", report=False, log=lambda s: None)
    write_npz(tmp_path / "test.npz", 30, 3)  # new test maps
    logs: list[str] = []
    run_benchmark(cfg, tmp_path / "o", report=False, log=logs.append)
    assert sum(": done" in line for line in logs) == 2  # the two "pair" cells
    assert sum(": cached" in line for line in logs) == 2


def test_detection_end_to_end_with_kfold_threshold(tmp_path):
    from waferscope.benchmark import run_benchmark

    cfg = write_config(tmp_path, "detection", datasets={
        "pair": {"train": "train.npz", "test": "test.npz"},
        "folds": {"data": "train.npz", "protocol": {"split": 0.4, "threshold_folds": 3}}})
    run_benchmark(cfg, tmp_path / "d", report=True, log=lambda s: None)
    rows = quality_rows(tmp_path / "d")
    page = (tmp_path / "d" / "index.html").read_text()
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert "data:image/png;base64," in page and "<script" not in page and "http" not in page.replace(
        "http-equiv", "")  # self-contained: nothing fetched
    assert manifest["config_sha256"] in page and manifest["datasets"]["pair"]["fingerprint"] in page
    assert "Which method?" in page
    assert all(float(r["image_auroc"]) > 0.7 for r in rows), rows
    assert rows[0]["pixel_auroc"] == ""  # no ground-truth masks in these files
    assert any(r["image_f1_kfold_threshold"] for r in rows if r["dataset"] == "folds")
    cell = json.loads(next((tmp_path / "d" / "cells").glob("*.json")).read_text())
    assert cell["artefacts"]["roc"]["x"][0] == 0.0 and cell["artefacts"]["examples"]


@pytest.mark.parametrize("edit, message", [
    ({"task": "classify"}, "task must be one of"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"methods": {"x": {"model": "no-such-model"}}}, "unknown classifier 'no-such-model'; available:"),
    ({"methods": {"x": {"model": "bench-test-centroid", "params": {"epochs": 3}}}}, "has no parameter 'epochs'"),
    ({"datasets": {"d": {"data": "missing.npz"}}}, "data file not found"),
    ({"datasets": {"d": {"train": "train.npz"}}}, "'train' and 'test' go together"),
    ({"datasets": {"d": {"data": "train.npz", "protocol": {"kfold": 1}}}}, "kfold must be at least 2"),
    ({"seeds": [0, 0]}, "seeds repeat"),
    ({"speed": {"batch": 3}}, "unknown key 'batch'"),
    (None, "not valid YAML"),
])
def test_bad_config_fails_before_training(tmp_path, monkeypatch, edit, message):
    from waferscope.benchmark import cell, run_benchmark

    cfg = write_config(tmp_path, **(edit or {}))
    if edit is None:
        cfg.write_text(cfg.read_text() + "methods: [unclosed\n")
    monkeypatch.setattr(cell, "run_cell", lambda *a, **k: pytest.fail("trained despite a bad config"))
    with pytest.raises(ConfigError) as info:
        run_benchmark(cfg, tmp_path / "o", report=False, log=lambda s: None)
    assert message in str(info.value)
    assert str(cfg) in str(info.value)
    assert not (tmp_path / "o").exists()


def test_optional_missing_data_is_skipped(tmp_path):
    from waferscope.benchmark import load_config

    cfg = write_config(tmp_path, datasets={
        "absent": {"data": "nope.npz", "optional": True},
        "pair": {"train": "train.npz", "test": "test.npz"},
        "folds": {"data": "train.npz", "protocol": {"kfold": 3}}})
    config = load_config(cfg)
    assert [d.name for d in config.active_datasets] == ["pair", "folds"]
    assert config.datasets[0].missing


def test_cli_check_and_error_exit(tmp_path):
    from typer.testing import CliRunner

    from waferscope.cli.main import app

    cfg = write_config(tmp_path)
    res = CliRunner().invoke(app, ["benchmark", "--config", str(cfg), "--out", str(tmp_path / "o"), "--check"])
    assert res.exit_code == 0, res.output
    assert "4 cells" in res.output


def test_mixed_config_runs_classifiers_and_detectors(tmp_path):
    from waferscope.benchmark import run_benchmark

    cfg = write_config(tmp_path, seeds=[0], datasets={"pair": {"train": "train.npz", "test": "test.npz"}},
                       methods={"small": "bench-test-centroid",
                                "mean": {"task": "detection", "model": "bench-test-meanmap"}})
    run_benchmark(cfg, tmp_path / "m", report=True, log=lambda s: None)
    rows = {r["method"]: r for r in quality_rows(tmp_path / "m")}
    assert rows["small"]["task"] == "classification" and rows["small"]["image_auroc"] == ""
    assert rows["mean"]["task"] == "detection" and rows["mean"]["image_auroc"] != ""
    page = (tmp_path / "m" / "index.html").read_text()
    assert "Classification: results" in page and "Detection: results" in page


@registry.register("bench-test-broken", kind="classifier")
class BrokenClassifier(Classifier):
    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, dataset, **kwargs):
        raise RuntimeError("weights missing")


def test_a_failing_cell_is_reported_and_the_rest_written(tmp_path):
    from waferscope.benchmark import run_benchmark
    from waferscope.benchmark.runner import BenchmarkIncomplete

    cfg = write_config(tmp_path, seeds=[0], datasets={"pair": {"train": "train.npz", "test": "test.npz"}},
                       methods={"small": "bench-test-centroid", "broken": "bench-test-broken"})
    with pytest.raises(BenchmarkIncomplete, match="1 of 2 cells failed"):
        run_benchmark(cfg, tmp_path / "f", report=True, log=lambda s: None)
    assert [r["method"] for r in quality_rows(tmp_path / "f")] == ["small"]
    assert "weights missing" in (tmp_path / "f" / "results.md").read_text()
    assert "weights missing" in (tmp_path / "f" / "index.html").read_text()
    assert len(list((tmp_path / "f" / "cells").glob("*.json"))) == 1  # the failure is not cached


def test_class_mix_columns_weight_the_maps_like_wm811k():
    from types import SimpleNamespace

    from waferscope.benchmark.quality import class_mix_quality
    from waferscope.data.classes import CLASSES

    classes = list(CLASSES)
    y = np.repeat(classes, 20)
    proba = np.eye(len(classes))[[classes.index(c) for c in y]] * 0.999 + 0.001 / len(classes)  # confident
    # two of the 20 normal maps look like Loc: harmless on a balanced test set, costly when none is 85 %
    none_rows = np.flatnonzero(y == "none")[:2]
    proba[none_rows] = 0.01
    proba[none_rows, classes.index("Loc")] = 0.5
    proba[none_rows, classes.index("none")] = 0.42
    model = SimpleNamespace(classes_=classes, registry_name="gbm")
    q = class_mix_quality(y, proba, classes, model)
    balanced = float(np.mean([1.0] * 7 + [2 * 20 / 42, 2 * 18 / 38]))  # Loc: P 20/22, none: R 18/20
    assert q["macro_f1_wm811k_mix"] < balanced - 0.05
    assert q["macro_f1_wm811k_mix_prior"] == 1.0  # the prior tips the two maps back to none
    svm = SimpleNamespace(classes_=classes, registry_name="svm-rbf", prior_refusal="Platt-scaled")
    assert class_mix_quality(y, proba, classes, svm)["macro_f1_wm811k_mix_prior"] is None
    assert class_mix_quality(y[:40], proba[:40], classes, model) == {}  # not every class present


def test_decision_guide_names_the_best_method_for_a_mostly_normal_stream():
    from waferscope.benchmark.report import _decision_tree

    def point(name, quality, mix=None, mix_prior=None):
        return {"method": name, "quality": quality, "throughput": 100.0, "latency": None, "size": None,
                "mix": mix, "mix_prior": mix_prior}

    html = _decision_tree("classification", [point("a", 0.9, 0.70, 0.80), point("b", 0.8, 0.75, None)])
    assert "Mostly normal wafers" in html and "<b>a</b> with <code>--prior wm811k</code> (macro F1 0.800" in html
    html = _decision_tree("classification", [point("a", 0.9, 0.70, 0.60), point("b", 0.8, 0.75, None)])
    assert "<b>b</b> (macro F1 0.750" in html
    assert "Mostly normal" not in _decision_tree("classification", [point("a", 0.9)])
