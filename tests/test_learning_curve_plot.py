"""The learning-curve scripts: plot_learning_curve.py on fake caches, eval_classifiers.py --train-fraction checks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from waferscope.data.classes import CLASSES

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "plot_learning_curve.py"


def _load():
    spec = importlib.util.spec_from_file_location("plot_learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_curve_png_from_cached_folds(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for work, n_real, error in (("small", 100, 0.4), ("large", 400, 0.1)):
        (tmp_path / work).mkdir()
        for k in range(5):
            y = rng.choice(list(CLASSES), 40)
            pred = np.where(rng.random(40) < error, rng.choice(list(CLASSES), 40), y)
            (tmp_path / work / f"gbm_fold{k}.json").write_text(json.dumps(
                {"n_train": n_real + 50, "synthetic": 50, "y_true": y.tolist(), "y_pred": pred.tolist()}))
    out = tmp_path / "lc.png"
    assert _load().main(["--method", "gbm", "--work", str(tmp_path / "large"), str(tmp_path / "small"),
                         "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "100" and lines[1].split()[0] == "400"  # sorted by training maps
    assert float(lines[1].split()[-1]) > float(lines[0].split()[-1])  # fewer errors, higher macro-F1


def test_a_folder_without_cached_folds_is_named(tmp_path):
    import pytest

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: no cached folds for 'gbm'"):
        _load().main(["--method", "gbm", "--work", str(tmp_path / "empty"), "--out", str(tmp_path / "lc.png")])
    assert not (tmp_path / "lc.png").exists()


def test_eval_classifiers_refuses_a_bad_or_mismatched_train_fraction(tmp_path):
    import subprocess
    import sys

    script = str(SCRIPT.parent / "eval_classifiers.py")
    bad = subprocess.run([sys.executable, script, "--train-fraction", "1.5", "--work", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--train-fraction must be in (0, 1], got 1.5" in bad.stderr
    (tmp_path / "gbm_fold0.json").write_text(json.dumps({"train_fraction": 0.5}))
    mismatch = subprocess.run([sys.executable, script, "--methods", "gbm", "--folds", "0", "--train-fraction", "0.25",
                               "--work", str(tmp_path)], capture_output=True, text=True)
    assert mismatch.returncode == 1
    assert "gbm_fold0.json: cached with --train-fraction 0.5, not 0.25; use another --work" in mismatch.stderr
    assert "Traceback" not in mismatch.stderr
