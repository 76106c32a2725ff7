"""Issue #33 (a newcomer's first hour): outputs checked before the work, one `error:` line instead of
tracebacks, runs not overwritten silently, missing shared data explained, unlabelled known-good
wafers training a detector with --normal."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clitools import invoke
from conftest import _disc_map
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args", [
    ["classify", "predict", "--data", "synthetic:n=4,seed=0"],
    ["detect", "score", "--data", "synthetic:n=4,seed=0", "--bundled", "pattern_stats"],
    ["data", "generate", "--n", "3"],
    ["data", "show", "synthetic:n=4,seed=0"],
    ["export", "--bundled", "cnn_distilled"],
])
def test_out_that_is_an_existing_folder_fails_first(tmp_path, capsys, args):
    """Was a 44-line IsADirectoryError after all the work; now one line before any work."""
    folder = tmp_path / "preds"
    folder.mkdir()
    code, _, err = invoke(capsys, *args, "--out", folder)
    line = _one_error_line(code, err)
    assert str(folder) in line and "--out is an existing folder; give a file name" in line
    assert list(folder.iterdir()) == []


def test_out_under_a_file_fails_first(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, _, err = invoke(capsys, "classify", "evaluate", "--data", "synthetic:n=4,seed=0",
                          "--out", tmp_path / "f" / "ev")
    assert "is a file, so nothing can be written under it" in _one_error_line(code, err)


def test_lot_folds_with_too_few_lots(tmp_path, capsys):
    """Synthetic sets are one lot each: 2 lots for 5 lot-grouped folds (was sklearn's ValueError)."""
    for i, name in enumerate(("a", "b")):
        write_parquet(generate(n=18, seed=i), tmp_path / f"{name}.parquet")
    code, _, err = invoke(capsys, "evaluate", "classifiers", "gbm", "--dev", tmp_path / "a.parquet",
                          "--dev2", tmp_path / "b.parquet", "--synthetic", "0", "--work", tmp_path / "w")
    line = _one_error_line(code, err)
    assert "5-fold grouped splits need at least 5 groups (lots)" in line and "come from 2" in line


def test_classify_train_refuses_to_overwrite_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    code, _, err = invoke(capsys, "classify", "train", "--data", "synthetic:n=9,seed=0", "--model", "svm-linear",
                          "--out", run)
    assert "already holds a run; give --overwrite" in _one_error_line(code, err)
    assert (run / "model.json").read_text() == "{}"
    code, _, err = invoke(capsys, "classify", "train", "--data", "synthetic:n=18,seed=0", "--model", "svm-linear",
                          "--out", run, "--overwrite")
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["name"] == "svm-linear"


def test_library_save_refuses_to_overwrite(tmp_path):
    from waferscope import registry
    from waferscope.errors import RunDirError

    clf = registry.create("svm-linear", "classifier").fit(generate(n=18, seed=0))
    clf.save(tmp_path / "r")
    with pytest.raises(RunDirError, match="overwrite=True"):
        clf.save(tmp_path / "r")
    clf.save(tmp_path / "r", overwrite=True)


def test_predict_csv_names_label_and_model(tmp_path, capsys):
    ds = generate(n=6, seed=2)
    write_parquet(ds, tmp_path / "m.parquet")
    code, _, err = invoke(capsys, "classify", "predict", "--data", tmp_path / "m.parquet", "--out", tmp_path / "p.csv")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["label"] for r in rows] == list(ds.labels)
    assert {r["model"] for r in rows} == {"bundled (gbm)"}


@pytest.mark.parametrize("args, option", [
    (["evaluate", "classifiers", "gbm", "cnn_fine"], "--dev FILE --dev2 FILE"),
    (["evaluate", "detector", "--detector", "pattern_contrast"], "--data SPEC"),
])
def test_shared_data_missing_says_what_is_needed(tmp_path, args, option):
    """A fresh clone has no ../shared: the error names the file, where it is looked for, the
    environment variable and the options to pass one's own."""
    env = {**os.environ, "WAFERSCOPE_SHARED_DATA": str(tmp_path), "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "waferscope.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert "wm811k_dev.npz" in line and "real labelled WM-811K maps" in line
    assert str(tmp_path / "wm811k" / "wm811k_dev.npz") in line
    assert "WAFERSCOPE_SHARED_DATA" in line and option in line


def test_unlabelled_known_good_wafers_train_with_normal(tmp_path, capsys):
    """A fab's known-good wafers carry no label: refused without --normal (with the hint), trained with it."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "good.npy", np.stack([_disc_map(26, 26, rng, fail_rate=0.03) for _ in range(12)]))
    args = ["detect", "train", "--data", tmp_path / "good.npy", "--model", "pattern_stats", "--out", tmp_path / "r"]
    code, _, err = invoke(capsys, *args)
    line = _one_error_line(code, err)
    assert "no normal samples" in line and "add --normal" in line
    code, _, err = invoke(capsys, *args, "--normal")
    assert code == 0, err
    assert "trained pattern_stats on 12 normal maps" in err
    assert json.loads((tmp_path / "r" / "model.json").read_text())["threshold"]["value"] is not None
    code, _, err = invoke(capsys, "detect", "score", "--run", tmp_path / "r", "--data", "synthetic:n=6,seed=1",
                          "--out", tmp_path / "s.csv")
    assert code == 0, err


def test_normal_refuses_labelled_defects(tmp_path, capsys):
    code, _, err = invoke(capsys, "detect", "train", "--data", "synthetic:n=9,seed=0", "--model", "pattern_stats",
                          "--out", tmp_path / "r", "--normal")
    assert "declared normal, but" in _one_error_line(code, err)


def test_explain_pictures_spread_over_classes():
    """A class-sorted folder: the first 24 rows are one class; the sample takes every class in turn."""
    from types import SimpleNamespace

    from waferscope.data.dataset import WaferDataset
    from waferscope.explain import picture_sample

    rng = np.random.default_rng(0)
    labels = ["Center"] * 30 + ["Donut"] * 5 + ["Loc"] * 2 + [""] * 3  # the unlabelled: by prediction
    ds = WaferDataset.from_maps([_disc_map(12, 12, rng) for _ in labels], labels)
    exp = SimpleNamespace(predicted=np.array(["Scratch"] * len(labels), dtype=object))
    idx = picture_sample(ds, exp, 12, seed=0)
    got = [labels[i] or "Scratch" for i in idx]
    assert len(idx) == 12 == len(set(idx))
    assert got.count("Loc") == 2 and got.count("Scratch") == 3 and got.count("Donut") == 3
    assert got.count("Center") == 4 and got == sorted(got, key=["Center", "Donut", "Loc", "Scratch"].index)
    assert picture_sample(ds, exp, 12, seed=0) == idx and picture_sample(ds, exp, 12, seed=1) != idx
    assert len(picture_sample(ds, exp, 100)) == len(labels)


def test_tree_fit_with_progress_grows_the_same_trees():
    """The boosting bar grows the model with warm_start in steps; the trees must be those of one call."""
    from waferscope.models.trees import fit_trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    one = fit_trees(x, y, 17, 0.1, 7, 1.0, 0)
    stepped = fit_trees(x, y, 17, 0.1, 7, 1.0, 0, progress=True)
    assert one.keys() == stepped.keys()
    for k in one:
        np.testing.assert_array_equal(one[k], stepped[k], err_msg=k)


def test_report_guide_says_what_rows_are_with_units():
    """The quick report recommended a cnn_fine trained on 1,350 synthetic maps with nothing saying it is
    not the bundled model, and printed a batch-1 latency as 'ms/wafer' beside a batch throughput."""
    from waferscope.benchmark.report import _decision_tree

    pts = [{"method": "cnn_fine", "model": "cnn_fine", "params": {"epochs": 25, "progress": False}, "n_train": 1350,
            "n_folds": 1, "quality": 0.663, "throughput": 377.0, "latency": 111.5, "size": 570_000.0,
            "mix": None, "mix_prior": None},
           {"method": "svm-rbf", "model": "svm-rbf", "params": {}, "n_train": 1350, "n_folds": 1, "quality": 0.70,
            "throughput": 50.0, "latency": 20.0, "size": 90_000.0, "mix": None, "mix_prior": None}]
    html = _decision_tree("classification", pts, 256, "synthetic (train: synthetic:n=1350,seed=1)")
    assert "377 wafers/s in batches of 256" in html and "111.5 ms latency for one wafer per call" in html
    assert "557 KB on disk" in html and "ms/wafer" not in html
    assert ("<code>cnn_fine</code> (epochs=25), trained here on 1,350 maps of synthetic (train: "
            "synthetic:n=1350,seed=1); <i>not</i> the bundled <code>cnn_distilled</code>") in html
    assert "svm-rbf</b>: <code>svm-rbf</code>, trained here on 1,350 maps" in html and "bundled <code>svm" not in html


@pytest.mark.parametrize("args, needed, looked_at", [
    (["evaluate", "retrieval"], "wm811k_dev.npz", ("wm811k", "wm811k_dev.npz")),
    (["evaluate", "detector", "--images", "--detector", "texture_padim"], "Magnetic Tile Defects",
     ("images", "magnetic_tile")),
])
def test_newer_evaluate_commands_say_what_data_they_need(tmp_path, args, needed, looked_at):
    """The retrieval and device-image protocols name their data, where it is looked for and --data."""
    env = {**os.environ, "WAFERSCOPE_SHARED_DATA": str(tmp_path), "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "waferscope.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert needed in line and str(tmp_path.joinpath(*looked_at)) in line
    assert "WAFERSCOPE_SHARED_DATA" in line and "--data" in line
