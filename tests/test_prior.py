"""Class-prior adaptation (models/classifiers/prior.py) and `classify predict|evaluate --prior`."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from clitools import invoke
from waferscope.errors import ConfigError
from waferscope.models.classifiers.prior import (WM811K_LABELLED_COUNTS, adjust_to_prior, apply_prior, estimate_prior,
                                                  model_prior, parse_prior)

CLASSES = ["Center", "Loc", "none"]


def test_parse_named_and_explicit_priors(tmp_path):
    assert parse_prior("balanced", CLASSES) is None
    assert parse_prior("estimate", CLASSES) == "estimate"
    np.testing.assert_allclose(parse_prior("Center=1, Loc=1,none=2", CLASSES), [0.25, 0.25, 0.5])
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"none": 8, "Center": 1, "Loc": 1}))
    np.testing.assert_allclose(parse_prior(str(path), CLASSES), [0.1, 0.1, 0.8])
    wm = parse_prior("wm811k", list(WM811K_LABELLED_COUNTS))
    assert wm.sum() == pytest.approx(1.0) and wm[0] == pytest.approx(147_431 / 172_950)


@pytest.mark.parametrize("spec, message", [
    ("Center=1,Loc=1", "no weight for none"),
    ("Center=1,Loc=1,none=1,Blob=2", "unknown class(es) Blob"),
    ("Center=1,Loc=x,none=1", "must be a number"),
    ("Center=-1,Loc=1,none=1", "non-negative"),
    ("Center=0,Loc=0,none=0", "not all zero"),
    ("uniform", "expected one of balanced, wm811k, estimate"),
    ("Center", "expected one of"),
])
def test_bad_prior_specs_name_the_problem(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_prior(spec, CLASSES)


def test_bad_prior_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_prior(str(tmp_path / "missing.json"), CLASSES)
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_prior(str(tmp_path / "list.json"), CLASSES)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="broken.json"):
        parse_prior(str(tmp_path / "broken.json"), CLASSES)
    with pytest.raises(ConfigError, match="has no class good"):  # the WM-811K mix only knows WM-811K names
        parse_prior("wm811k", ["good", "Loc"])


def test_adjust_is_bayes_rule():
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    base = np.full(3, 1 / 3)
    np.testing.assert_allclose(adjust_to_prior(proba, base, base), proba)
    target = np.array([0.1, 0.1, 0.8])
    out = adjust_to_prior(proba, base, target)
    np.testing.assert_allclose(out.sum(1), 1.0)
    expected = proba * target / (proba * target).sum(1, keepdims=True)
    np.testing.assert_allclose(out, expected)
    assert out[0].argmax() == 2  # 0.2 × 0.8 beats 0.5 × 0.1


def _posteriors(mix, n, seed):
    """Calibrated class-balanced posteriors of maps drawn in class mix ``mix`` (3 overlapping classes)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=mix)
    x = rng.normal(loc=np.array([-1.5, 0.0, 1.5])[y], scale=1.0)
    lik = np.exp(-0.5 * (x[:, None] - np.array([-1.5, 0.0, 1.5])) ** 2)
    return lik / lik.sum(1, keepdims=True), y


def test_em_recovers_the_class_mix_without_labels():
    mix = np.array([0.1, 0.2, 0.7])
    proba, y = _posteriors(mix, 20_000, seed=0)
    estimated, steps = estimate_prior(proba, np.full(3, 1 / 3))
    assert steps > 1
    np.testing.assert_allclose(estimated, mix, atol=0.03)
    # and the adjusted decisions are more often right than the balanced ones on this mix
    balanced = (proba.argmax(1) == y).mean()
    adjusted = (adjust_to_prior(proba, np.full(3, 1 / 3), estimated).argmax(1) == y).mean()
    assert adjusted > balanced + 0.02


def _refusing(name, **params):
    from waferscope.registry import create

    model = create(name, "classifier", **params)
    model.classes_ = CLASSES
    return model


def test_model_prior_refuses_models_without_a_known_mix():
    assert model_prior(_refusing("cnn")).tolist() == pytest.approx([1 / 3] * 3)  # class-weighted loss
    assert model_prior(_refusing("gbm")).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ConfigError, match="cnn cannot take a class prior: .*imbalance='none'"):
        model_prior(_refusing("cnn", imbalance="none"))
    with pytest.raises(ConfigError, match="svm-rbf cannot take a class prior: .*Platt"):
        model_prior(_refusing("svm-rbf"))
    with pytest.raises(ConfigError, match="multilabel_cnn cannot take a class prior"):
        model_prior(_refusing("multilabel_cnn"))
    proba = np.array([[0.2, 0.3, 0.5]])
    same, used = apply_prior(_refusing("svm-rbf"), proba, "balanced")
    assert same is proba and used is None


@pytest.fixture(scope="module")
def small_gbm(tmp_path_factory):
    from waferscope.data.synthetic import generate
    from waferscope.registry import create

    run = tmp_path_factory.mktemp("runs") / "gbm"
    create("gbm", "classifier", max_iter=20, n_jobs=1).fit(generate(90, seed=3)).save(run)
    return run


def test_cli_predict_with_a_prior(small_gbm, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, _, err = invoke(capsys, "classify", "predict", "--run", small_gbm, "--data", "synthetic:n=27,seed=5",
                          "--out", out, "--prior", "wm811k")
    assert code == 0, err
    assert "class mix (wm811k):" in err and "none 0.852" in err
    rows = list(csv.reader(out.open()))
    p_cols = [j for j, name in enumerate(rows[0]) if name.startswith("p_")]  # id, label, predicted, p_…, model
    probs = np.array([[float(r[j]) for j in p_cols] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    code, _, err = invoke(capsys, "classify", "predict", "--run", small_gbm, "--data", "synthetic:n=27,seed=5",
                          "--out", tmp_path / "q.csv")
    plain = np.array([[float(r[j]) for j in p_cols] for r in list(csv.reader((tmp_path / "q.csv").open()))[1:]])
    assert code == 0 and not np.allclose(plain, probs)
    assert "rough guess" not in err
    none = p_cols.index(rows[0].index("p_none"))
    assert (probs[:, none] >= plain[:, none] - 1e-6).all()  # an 85 % none mix raises every map's p(none)


def test_cli_evaluate_records_the_prior(small_gbm, tmp_path, capsys):
    code, _, err = invoke(capsys, "classify", "evaluate", "--run", small_gbm, "--data", "synthetic:n=27,seed=6",
                          "--out", tmp_path / "ev", "--prior", "estimate")
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["prior"] == "estimate"
    assert sum(report["prior_used"].values()) == pytest.approx(1.0, abs=1e-4)
    assert 0 <= report["macro_f1_wm811k_mix"] <= 1 and "WM-811K class mix" in err  # all 9 classes present


def test_class_mix_macro_f1_reweights_the_test_maps():
    from waferscope.metrics.classification import class_mix_macro_f1

    y = np.array(["a"] * 10 + ["b"] * 10)
    pred = y.copy()
    pred[0] = "b"  # one a → b error: costs b's precision little when b is common, a lot when it is rare
    common_b = class_mix_macro_f1(y, pred, {"a": 1, "b": 9})
    rare_b = class_mix_macro_f1(y, pred, {"a": 9, "b": 1})
    assert common_b > rare_b
    # a balanced mix weights nothing: the plain macro-F1
    from sklearn.metrics import f1_score

    assert class_mix_macro_f1(y, pred, {"a": 5, "b": 5}) == pytest.approx(f1_score(y, pred, average="macro"))
    assert class_mix_macro_f1(y[:10], pred[:10], {"a": 1, "b": 1}) is None  # b missing from the test set


def test_resolve_prior_fails_before_scoring():
    from waferscope.models.classifiers.prior import resolve_prior

    assert resolve_prior(_refusing("svm-rbf"), "balanced") is None  # nothing to apply
    with pytest.raises(ConfigError, match="Platt"):
        resolve_prior(_refusing("svm-rbf"), "estimate")
    with pytest.raises(ConfigError, match="no weight for none"):
        resolve_prior(SimpleNamespace(classes_=CLASSES), "Center=1,Loc=2")


def test_cli_bad_prior_is_one_line_and_writes_nothing(small_gbm, tmp_path, capsys):
    code, _, err = invoke(capsys, "classify", "predict", "--run", small_gbm, "--data", "synthetic:n=9,seed=5",
                          "--out", tmp_path / "p.csv", "--prior", "none=1")
    assert code == 2
    assert err.startswith("error:") and "no weight for Center" in err and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_cli_evaluate_multilabel_run_keeps_its_own_decision_and_refuses_a_prior(tmp_path, capsys):
    from waferscope.data.synthetic import generate
    from waferscope.registry import create

    run = tmp_path / "ml"
    create("multilabel_cnn", "classifier", epochs=1, input_size=32, progress=False).fit(
        generate(36, seed=1, mixed=True)).save(run)
    code, _, err = invoke(capsys, "classify", "evaluate", "--run", run, "--data", "synthetic:n=18,seed=2,mixed=1",
                          "--out", tmp_path / "ev")
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["prior_used"] is None
    code, _, err = invoke(capsys, "classify", "evaluate", "--run", run, "--data", "synthetic:n=18,seed=2,mixed=1",
                          "--out", tmp_path / "ev2", "--prior", "estimate")
    assert code == 2 and "multilabel_cnn" in err and not (tmp_path / "ev2").exists()


def test_cli_estimate_on_a_small_batch_says_it_is_a_rough_guess(small_gbm, tmp_path, capsys):
    code, _, err = invoke(capsys, "classify", "predict", "--run", small_gbm, "--data", "synthetic:n=18,seed=5",
                          "--out", tmp_path / "p.csv", "--prior", "estimate")
    assert code == 0 and "note: --prior estimate on 18 maps is a rough guess" in err
    assert "class mix (estimate):" in err and (tmp_path / "p.csv").is_file()
