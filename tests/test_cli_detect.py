"""`waferscope detect train | evaluate | score` on tiny wafer and MVTec-layout image data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from clitools import call, invoke
from waferscope.data.synthetic import generate

FAST_AE = ["--model", "autoencoder", "--epochs", "2", "--set", "input_size=32", "--set", "progress=false"]


def run_cli(args, capsys):
    code, _, err = invoke(capsys, *args)
    return code, err


@pytest.fixture(scope="module")
def wafer_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "ae"
    assert call("detect", "train", "--data", "synthetic:n=54,seed=3", "--out", run, *FAST_AE) == 0
    return run


def test_train_writes_run_and_threshold(wafer_run):
    doc = json.loads((wafer_run / "model.json").read_text())
    assert doc["kind"] == "detector" and doc["name"] == "autoencoder"
    assert doc["extras"]["n_train"] == 6  # the 6 `none` maps of 54 (9 classes)
    # the threshold is the model's (model.json), no longer a threshold.json beside it
    assert "quantile" in doc["threshold"]["method"] and isinstance(doc["threshold"]["value"], float)
    assert not (wafer_run / "threshold.json").exists()


def test_score_decides_with_the_models_threshold_and_old_runs_still_load(wafer_run, tmp_path, capsys):
    """A run written the old way (threshold.json beside a model.json without "threshold") gives the
    same threshold, decisions and CSV as the same run written the new way."""
    import csv
    import shutil

    from waferscope.base import load_run

    old = tmp_path / "old"
    shutil.copytree(wafer_run, old)
    doc = json.loads((old / "model.json").read_text())
    thr = doc.pop("threshold")
    (old / "model.json").write_text(json.dumps(doc))
    (old / "threshold.json").write_text(json.dumps({"threshold": thr["value"], "method": thr["method"]}))
    new_det, old_det = load_run(wafer_run), load_run(old)
    assert old_det.threshold_ == new_det.threshold_ == thr["value"]
    assert old_det.threshold_info_["method"] == thr["method"]
    rows = {}
    for name, run in (("new", wafer_run), ("old", old)):
        code, err = run_cli(["detect", "score", "--run", run, "--data", "synthetic:n=18,seed=7",
                             "--out", tmp_path / f"{name}.csv"], capsys)
        assert code == 0, err
        assert f"above the run's threshold {thr['value']:.6g}" in err
        rows[name] = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
    assert rows["new"] == rows["old"]
    from waferscope.data.synthetic import generate

    want = new_det.predict(generate(18, seed=7))
    assert [r["anomalous"] for r in rows["new"]] == [str(int(d)) for d in want]
    # an old run trained with --threshold none has neither: no decisions, no column
    (old / "threshold.json").unlink()
    assert load_run(old).threshold_ is None


def test_evaluate_wafers_with_masks(wafer_run, tmp_path, capsys):
    code, err = run_cli(["detect", "evaluate", "--run", wafer_run, "--data", "synthetic:n=27,seed=5",
                         "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("image_auroc", "image_aupr", "f1", "precision", "recall", "threshold", "pixel_auroc", "aupro",
                "at_run_threshold"):
        assert key in m
    assert 0 <= m["image_auroc"] <= 1 and m["n_anomalous"] == 24
    assert (tmp_path / "ev" / "roc_pr.png").stat().st_size > 0
    assert (tmp_path / "ev" / "overlays.png").stat().st_size > 0


def test_score_writes_csv_and_maps(wafer_run, tmp_path, capsys):
    from waferscope.data.synthetic import generate

    ds = generate(5, seed=7)
    code, err = run_cli(["detect", "score", "--run", wafer_run, "--data", "synthetic:n=5,seed=7",
                         "--out", tmp_path / "s.csv", "--maps", tmp_path / "maps"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["id"] for r in rows] == list(ds.ids)
    assert set(rows[0]) == {"id", "label", "score", "anomalous", "map"}
    for r, m in zip(rows, ds.maps):
        a = np.load(tmp_path / "maps" / r["map"])
        assert a.shape == m.shape and a.dtype == np.float32


def test_train_without_normal_maps_fails_clearly(tmp_path, capsys):
    code, err = run_cli(["detect", "train", "--data", "synthetic:n=8,seed=0,classes=Loc", "--out", tmp_path / "r",
                         *FAST_AE], capsys)
    assert code == 2 and "no normal samples" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_run_of_another_kind_is_refused(wafer_run, tmp_path, capsys):
    doc = json.loads((wafer_run / "model.json").read_text())
    other = tmp_path / "clf"
    other.mkdir()
    doc["kind"], doc["name"] = "classifier", "cnn"
    (other / "model.json").write_text(json.dumps(doc))
    code, err = run_cli(["detect", "score", "--run", other, "--data", "synthetic:n=3,seed=0",
                         "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "not a detector" in err
    code, err = run_cli(["detect", "score", "--run", tmp_path / "missing", "--data", "synthetic:n=3,seed=0",
                         "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "not a run directory" in err
    assert not (tmp_path / "s.csv").exists()


def test_unknown_model_and_parameter(tmp_path, capsys):
    code, err = run_cli(["detect", "train", "--data", "synthetic:n=9,seed=0", "--out", tmp_path / "r",
                         "--model", "nope"], capsys)
    assert code == 2 and "unknown detector 'nope'" in err
    code, err = run_cli(["detect", "train", "--data", "synthetic:n=9,seed=0", "--out", tmp_path / "r",
                         "--model", "autoencoder", "--set", "wings=2"], capsys)
    assert code == 2 and "no parameter(s) wings" in err


def _write_mvtec(root, mask_size=None):
    rng = np.random.default_rng(0)

    def img(defect=False):
        a = (rng.random((24, 24)) * 40 + 100).astype(np.uint8)
        if defect:
            a[8:14, 8:14] = 250
        return a

    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        Image.fromarray(img()).save(root / "train/good" / f"{i:03d}.png")
    for i in range(2):
        Image.fromarray(img()).save(root / "test/good" / f"{i:03d}.png")
        Image.fromarray(img(True)).save(root / "test/spot" / f"{i:03d}.png")
        m = np.zeros(mask_size or (24, 24), np.uint8)
        m[8:14, 8:14] = 255
        Image.fromarray(m).save(root / "ground_truth/spot" / f"{i:03d}_mask.png")


def test_mvtec_images_train_and_evaluate(tmp_path, capsys):
    _write_mvtec(tmp_path / "cat")
    code, err = run_cli(["detect", "train", "--data", tmp_path / "cat", "--out", tmp_path / "run", *FAST_AE], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "model.json").read_text())["extras"]["n_train"] == 8  # train split only
    code, err = run_cli(["detect", "evaluate", "--run", tmp_path / "run", "--data", tmp_path / "cat",
                         "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n_normal"] == 2 and m["n_anomalous"] == 2 and "aupro" in m
    # a wafer-trained run refuses images
    code, err = run_cli(["detect", "score", "--run", tmp_path / "run", "--data", "synthetic:n=3,seed=0",
                         "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "trained on image data" in err


def test_mvtec_mask_of_wrong_size(tmp_path, capsys):
    _write_mvtec(tmp_path / "cat", mask_size=(20, 24))
    code, err = run_cli(["detect", "evaluate", "--data", tmp_path / "cat", "--out", tmp_path / "ev",
                         "--run", tmp_path / "nowhere"], capsys)
    assert code == 2 and "mask is 20×24 but its image is 24×24" in err


def test_default_bundled_detector_is_pattern_contrast_for_wafers(tmp_path, capsys):
    from waferscope.models.detectors import BUNDLED, load_default

    det = load_default()
    assert det.registry_name == "pattern_contrast"
    assert sum(p.stat().st_size for p in BUNDLED["pattern_contrast"].iterdir()) < 2_000_000
    code, err = run_cli(["detect", "score", "--data", "synthetic:n=18,seed=5", "--out", tmp_path / "s.csv"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 18
    expected = det.score(generate(n=18, seed=5)).scores
    assert np.allclose([float(r["score"]) for r in rows], expected, rtol=1e-5)
    # the old name is an alias with a deprecation note
    code, err = run_cli(["detect", "score", "--bundled", "accurate", "--data", "synthetic:n=4,seed=5",
                         "--out", tmp_path / "old.csv"], capsys)
    assert code == 0 and "'accurate' is now called 'pattern_contrast'" in err
    code, err = run_cli(["detect", "score", "--bundled", "pattern_contrast", "--run", tmp_path, "--data",
                         "synthetic:n=3,seed=0", "--out", tmp_path / "t.csv"], capsys)
    assert code == 2 and "not both" in err and not (tmp_path / "t.csv").exists()
    code, err = run_cli(["detect", "score", "--bundled", "tiny", "--data", "synthetic:n=3,seed=0",
                         "--out", tmp_path / "u.csv"], capsys)
    assert code == 2 and "unknown bundled detector" in err


def test_train_without_model_picks_the_image_detector_for_images(tmp_path, capsys):
    from waferscope.models.detectors.common import image_detectors

    _write_mvtec(tmp_path / "cat")
    code, err = run_cli(["detect", "train", "--data", tmp_path / "cat", "--out", tmp_path / "run",
                         "--threshold", "none", "--set", "input_size=24", "--set", "grid=12", "--set", "progress=false"],
                        capsys)  # grid 12: a small relative grid for a 24 px test
    assert code == 0, err
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert doc["name"] == image_detectors()[0] == "texture_knn"
    code, err = run_cli(["detect", "score", "--run", tmp_path / "run", "--data", "synthetic:n=3,seed=0",
                         "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "trained on image data" in err
