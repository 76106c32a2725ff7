"""`waferscope evaluate detector | pattern-loo` and :mod:`waferscope.evaluate.detection` on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from clitools import invoke
from waferscope.data.synthetic import generate
from waferscope.evaluate import detection as ev


@pytest.fixture(scope="module")
def tiny_dev():
    return generate(90, seed=5)  # 10 normals, 80 defects: the shape of the dev set, small


def test_dev_split_halves_the_normals_and_tests_on_the_rest(tiny_dev):
    train, test = ev.dev_split(tiny_dev, seed=0)
    assert train.is_normal.all() and len(train) == tiny_dev.is_normal.sum() // 2
    assert len(train) + len(test) == len(tiny_dev)
    again, _ = ev.dev_split(tiny_dev, seed=0)
    assert list(train.ids) == list(again.ids)


def test_evaluate_detector_returns_one_deterministic_row(tiny_dev):
    proto = ev.Protocol(pixel_train_n=30, pixel_test_n=45)
    first = ev.evaluate_detector("pattern_stats", {}, proto, dev=tiny_dev)
    second = ev.evaluate_detector("pattern_stats", {}, proto, dev=tiny_dev)
    assert first["real_dev"] == second["real_dev"] and first["synthetic"] == second["synthetic"]
    assert 0.0 <= first["real_dev"]["image_auroc"] <= 1.0
    assert "pixel_auroc" in first["synthetic"]
    assert set(first["real_dev_auroc_per_class"]) == set(np.unique(tiny_dev.labels[~tiny_dev.is_normal]))


def test_named_protocols_keep_the_documented_seeds():
    assert ev.PROTOCOLS["patchcore"].synthetic_normals == 2000 and ev.PROTOCOLS["patchcore"].pixel_test_seed == 1
    assert ev.PROTOCOLS["kd"].pixel_fit == "same"
    assert all(proto in ev.PROTOCOLS for _, _, proto in ev.CONFIGS.values())


@pytest.mark.parametrize("args, message", [
    ([], "--detector NAME or --config NAME"),
    (["--detector", "pattern_stats", "--config", "patchcore-fast"], "--detector NAME or --config NAME"),
    (["--detector", "nope"], "unknown detector"),
    (["--config", "nope"], "unknown --config"),
    (["--detector", "pattern_stats", "--protocol", "nope"], "unknown protocol"),
    (["--detector", "pattern_stats", "--set", "novalue"], "--set expects key=value"),
])
def test_bad_detector_options_give_one_error_and_write_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "rows.jsonl"
    code, _, err = invoke(capsys, "evaluate", "detector", *args, "--json", out)
    assert code == 2
    assert err.strip().startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_pattern_loo_rejects_a_detector_without_patterns(capsys, tmp_path):
    code, _, err = invoke(capsys, "evaluate", "pattern-loo", "--detector", "pattern_stats", "--json", tmp_path / "t.json")
    assert code == 2 and "no `patterns` parameter" in err
    assert not (tmp_path / "t.json").exists()


def test_explanations_rejects_run_and_bundled_together(capsys, tmp_path):
    out = tmp_path / "docs"
    code, _, err = invoke(capsys, "evaluate", "explanations", "--run", tmp_path, "--bundled", "fast", "--out", out)
    assert code == 2 and "give --run or --bundled, not both" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_evaluate_explanations_on_a_few_maps(tmp_path):
    from waferscope.evaluate.explanations import evaluate_explanations, summary_text
    from waferscope.models.classifiers import DEFAULT_FOR_EXPLANATIONS, load_default

    result = evaluate_explanations(load_default(DEFAULT_FOR_EXPLANATIONS), n=40, seed=11, out_dir=tmp_path,
                                   progress=False)
    assert {"localisation", "denoising_f1", "classification_on_denoised"} <= set(result)
    assert (tmp_path / "img" / "explain_gradcam_examples.png").is_file()
    assert "classification on denoised maps" in summary_text(result)
