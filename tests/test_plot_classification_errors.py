"""scripts/plot_classification_errors.py on fake fold caches over synthetic maps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from waferscope.data import load

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "plot_classification_errors.py"
DATA = "synthetic:n=40,seed=3"


def _load():
    spec = importlib.util.spec_from_file_location("plot_classification_errors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_folds(work: Path, labels: np.ndarray, pred: np.ndarray, folds=range(2)) -> None:
    work.mkdir(exist_ok=True)
    for k in folds:
        index = np.arange(k, len(labels), 2)
        (work / f"gbm_fold{k}.json").write_text(json.dumps({"test_index": index.tolist(),
                                                             "y_pred": pred[index].tolist()}))


def test_counts_and_draws_the_most_frequent_confusions(tmp_path, capsys):
    labels = load(DATA).labels.astype(str)
    pred = labels.copy()
    first, second = np.unique(labels)[:2]
    swap = np.flatnonzero(labels == first)[:3]  # three maps of one class called the other
    pred[swap] = second
    _write_folds(tmp_path / "work", labels, pred)
    out = tmp_path / "errors.png"
    assert _load().main(["--data", DATA, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "gbm: 3 errors on 40 maps" in printed and f"{first} -> {second}: 3" in printed


def test_a_missing_fold_is_named_and_nothing_is_written(tmp_path):
    labels = load(DATA).labels.astype(str)
    _write_folds(tmp_path / "work", labels, labels, folds=[0])
    with pytest.raises(SystemExit, match="gbm has not been run on every fold"):
        _load().main(["--data", DATA, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "e.png")])
    assert not (tmp_path / "e.png").exists()


def test_a_method_without_errors_says_so(tmp_path):
    labels = load(DATA).labels.astype(str)
    _write_folds(tmp_path / "work", labels, labels)
    with pytest.raises(SystemExit, match="made no errors"):
        _load().main(["--data", DATA, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "e.png")])
    assert not (tmp_path / "e.png").exists()


def test_unreadable_data_is_one_error_naming_the_file(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*missing\.npz"):
        _load().main(["--data", str(tmp_path / "missing.npz"), "--work", str(tmp_path), "--out", str(tmp_path / "e.png")])
    assert not (tmp_path / "e.png").exists()
