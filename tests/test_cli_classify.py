"""`waferscope classify train | evaluate | predict`, including bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from clitools import call, invoke
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate

torch.set_num_threads(1)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    code, _, err = invoke(capsys, *args)
    return code, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One 1-epoch cnn run shared by the tests (trained through the CLI)."""
    run = tmp_path_factory.mktemp("runs") / "cnn"
    assert call("classify", "train", "--data", "synthetic:n=45,seed=1", "--data", "synthetic:n=27,seed=2",
                "--model", "cnn", "--out", run, "--epochs", "1", "--set", "input_size=32", "--set", "progress=false") == 0
    return run


def test_train_writes_a_run(trained_run):
    doc = json.loads((trained_run / "model.json").read_text())
    assert doc["kind"] == "classifier" and doc["name"] == "cnn"
    assert doc["params"]["epochs"] == 1 and doc["params"]["input_size"] == 32
    assert (trained_run / "weights.safetensors").stat().st_size > 1000


def test_evaluate_writes_metrics_and_confusion_matrix(trained_run, tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "classify", "evaluate", "--run", str(trained_run),
                        "--data", "synthetic:n=36,seed=9", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("macro_f1", "weighted_f1", "accuracy", "per_class", "confusion_matrix"):
        assert key in m
    assert set(m["per_class"]["Center"]) == {"precision", "recall", "f1", "support"}
    assert np.asarray(m["confusion_matrix"]).sum() == 36
    assert (tmp_path / "ev" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_writes_one_row_per_map(trained_run, tmp_path, monkeypatch, capsys):
    ds = generate(n=10, seed=4)
    path = tmp_path / "maps.parquet"
    write_parquet(ds, path)
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--run", str(trained_run),
                        "--data", str(path), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    # id, the true label (as detect score writes it), predicted, one p_ per class, the model that ran
    assert rows[0][:3] == ["id", "label", "predicted"] and len(rows[0]) == 3 + 9 + 1 and rows[0][-1] == "model"
    assert [r[0] for r in rows[1:]] == list(ds.ids)
    assert [r[1] for r in rows[1:]] == list(ds.labels)
    assert {r[-1] for r in rows[1:]} == {str(trained_run)}
    probs = np.array([[float(x) for x in r[3:-1]] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert all(r[2] == rows[0][3 + int(np.argmax(p))][2:] for r, p in zip(rows[1:], probs))


def test_unknown_training_class_names_are_listed(tmp_path, monkeypatch, capsys):
    ds = generate(n=12, seed=0)
    ds.labels[:2] = "Blob"
    ds.labels[2] = "Swirl"
    write_parquet(ds, tmp_path / "bad.parquet")
    code, err = run_cli(monkeypatch, capsys, "classify", "train", "--data", str(tmp_path / "bad.parquet"),
                        "--out", str(tmp_path / "run"), "--epochs", "1")
    assert code == 2
    assert "'Blob', 'Swirl'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_model_and_parameter_names(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "classify", "train", "--data", "synthetic:n=9,seed=0",
                        "--model", "nope", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown classifier 'nope'" in err
    code, err = run_cli(monkeypatch, capsys, "classify", "train", "--data", "synthetic:n=9,seed=0",
                        "--model", "svm-rbf", "--out", str(tmp_path / "r"), "--epochs", "3")
    assert code == 2 and "no --epochs" in err


def test_detector_or_missing_run_directory_is_refused(trained_run, tmp_path, monkeypatch, capsys):
    det = tmp_path / "det"
    det.mkdir()
    doc = json.loads((trained_run / "model.json").read_text())
    doc["kind"] = "detector"
    (det / "model.json").write_text(json.dumps(doc))
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--run", str(det),
                        "--data", "synthetic:n=3,seed=0", "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not a classifier" in err
    doc["kind"], doc["waferscope_run_format"] = "classifier", 999
    (det / "model.json").write_text(json.dumps(doc))
    code, err = run_cli(monkeypatch, capsys, "classify", "evaluate", "--run", str(det),
                        "--data", "synthetic:n=3,seed=0", "--out", str(tmp_path / "ev"))
    assert code == 2 and "run format 999" in err
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--run", str(tmp_path / "nothing"),
                        "--data", "synthetic:n=3,seed=0", "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not a run directory" in err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "ev").exists()


def test_bad_die_values_are_reported(trained_run, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, maps_flat=np.array([0, 1, 7, 1], dtype=np.uint8), shapes=np.array([[2, 2]]),
             labels=np.array(["none"]))
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--run", str(trained_run),
                        "--data", str(bad), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "die values" in err and "bad.npz" in err


def test_bundled_model_is_small_and_used_without_run(tmp_path, monkeypatch, capsys):
    from waferscope.data.classes import CLASSES
    from waferscope.models.classifiers import BUNDLED, DEFAULT_FOR_LABELS, load_default

    assert DEFAULT_FOR_LABELS == "gbm"  # labels come from the most accurate model, fast since its features compile
    assert sum(p.stat().st_size for p in BUNDLED["cnn_gradcam"].iterdir()) < 2_000_000
    clf = load_default("cnn_gradcam")
    assert clf.classes_ == list(CLASSES) and clf.registry_name == "cnn_fine" and clf.localise > 0
    ds = generate(n=45, seed=77)
    assert (clf.predict(ds) == ds.labels).mean() > 0.6  # synthetic maps it was not trained on
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--data", "synthetic:n=9,seed=5",
                        "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert len(rows) == 10 and rows[0][3:-1] == [f"p_{c}" for c in CLASSES] and rows[0][-1] == "model"
    # without --run or --bundled, predict's probabilities are gbm's, not the explanation network's
    expected = load_default("gbm").predict_proba(generate(n=9, seed=5))
    assert np.allclose(np.array([r[3:-1] for r in rows[1:]], dtype=float), expected, atol=1e-6)
    assert not np.allclose(expected, clf.predict_proba(generate(n=9, seed=5)), atol=1e-3)
    code, err = run_cli(monkeypatch, capsys, "classify", "evaluate", "--data", "synthetic:n=9,seed=5",
                        "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["run"] == "bundled (gbm)"


def test_accurate_bundled_model_and_bundled_option_errors(tmp_path, monkeypatch, capsys):
    from waferscope.data.classes import CLASSES
    from waferscope.errors import ConfigError
    from waferscope.models.classifiers import BUNDLED, load_default

    # the trees; its open-set scorer (open_set.*, ~2.9 MB) is capped by tests/test_open_set.py
    assert sum(p.stat().st_size for p in BUNDLED["gbm"].iterdir() if not p.name.startswith("open_set")) < 5_000_000
    clf = load_default("gbm")
    assert clf.registry_name == "gbm" and clf.classes_ == list(CLASSES)
    ds = generate(n=45, seed=77)
    assert (clf.predict(ds) == ds.labels).mean() > 0.7  # synthetic maps it was not trained on
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--bundled", "gbm",
                        "--data", "synthetic:n=9,seed=5", "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert len(list(csv.reader((tmp_path / "p.csv").open()))) == 10
    with pytest.raises(ConfigError, match="unknown bundled classifier"):
        load_default("tiny")
    code, err = run_cli(monkeypatch, capsys, "classify", "predict", "--bundled", "gbm", "--run", str(tmp_path),
                        "--data", "synthetic:n=9,seed=5", "--out", str(tmp_path / "q.csv"))
    assert code == 2 and "not both" in err and not (tmp_path / "q.csv").exists()


def test_distilled_bundled_model_is_cnn_fine_taught_by_gbm(tmp_path, monkeypatch, capsys):
    from waferscope.data.classes import CLASSES
    from waferscope.models.classifiers import BUNDLED, load_default

    assert sum(p.stat().st_size for p in BUNDLED["cnn_distilled"].iterdir()) < 1_000_000
    clf = load_default("cnn_distilled")
    assert clf.registry_name == "cnn_fine" and clf.classes_ == list(CLASSES)
    assert clf.distilled_from_ == "bundled:gbm"  # its teacher, the bundled gbm (named "accurate" before 2026-12-03)
    # since the issue-27 retrain (2026-12-06): area input in the canonical view, fab-profile transfer maps
    assert (clf.resample, clf.orient, clf.synthetic_profile) == ("area", "canonical", "fab")
    ds = generate(n=45, seed=77)
    assert (clf.predict(ds) == ds.labels).mean() > 0.7  # synthetic maps it was not trained on
    # the old name still works: a deprecation note, and outputs name the model by its new name
    code, err = run_cli(monkeypatch, capsys, "classify", "evaluate", "--bundled", "distilled",
                        "--data", "synthetic:n=18,seed=5", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert "'distilled' is now called 'cnn_distilled'" in err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["run"] == "bundled (cnn_distilled)"


def test_usage_errors_are_one_message_not_a_traceback(capsys):
    from clitools import invoke

    code, _, err = invoke(capsys, "classify", "train", "--data", "synthetic:n=9,seed=1", "--set", "epochs=1",
                          "seed=2", "--out", "unused")
    assert code == 2 and "unexpected extra argument" in err and "Traceback" not in err
    code, _, err = invoke(capsys, "classify", "predict", "--no-such-option")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_bad_parameter_value_is_one_error_line(tmp_path, capsys):
    code, out, err = invoke(capsys, "classify", "train", "--data", "synthetic:n=9,seed=0", "--model", "cnn",
                            "--set", "imbalance=foo", "--out", str(tmp_path / "r"))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "cnn" in lines[0] and "imbalance" in lines[0] and "'loss', 'sampler', 'none'" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "r").exists()
