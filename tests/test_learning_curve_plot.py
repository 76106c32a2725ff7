"""scripts/plot_learning_curve.py on fake eval_classifiers caches."""

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
