"""The compiled Radon and geometry features equal their scikit-image definitions bit for bit (the
bundled gbm's trees split on exact training values), training and prediction both use them, and a
stored temperature survives save → load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.paths import DEV_MAPS
from waferscope.data.synthetic import generate
from waferscope.errors import RunDirError
from waferscope.features import handcrafted as hc


def _maps():
    maps = [np.asarray(m) for m in generate(60, seed=11).maps]
    rng = np.random.default_rng(3)
    for h, w in ((1, 1), (2, 3), (3, 2), (5, 5), (9, 4), (4, 17), (31, 30)):
        maps.append(rng.choice(np.array([0, 1, 2], np.uint8), size=(h, w), p=[0.2, 0.5, 0.3]))
    maps += [np.full((6, 6), 2, np.uint8), np.ones((7, 5), np.uint8), np.zeros((4, 4), np.uint8)]
    if DEV_MAPS.exists():  # a sample of the real maps too, when the shared data is beside the repo
        from waferscope.data import load

        real = load(str(DEV_MAPS))
        maps += [np.asarray(real.maps[i]) for i in range(0, len(real), 97)]
    return maps


@pytest.mark.parametrize("fast, reference", [(hc.radon_features, hc.radon_features_reference),
                                             (hc.geometry_features, hc.geometry_features_reference)])
def test_fast_features_equal_the_reference_bit_for_bit(fast, reference):
    for m in _maps():
        before = m.copy()
        np.testing.assert_array_equal(fast(m), reference(m), err_msg=f"map of shape {m.shape}")
        np.testing.assert_array_equal(m, before)  # the caller's map is untouched


def test_training_and_prediction_use_the_fast_path(monkeypatch):
    def refuse(_):
        raise AssertionError("the slow reference was called")

    monkeypatch.setattr(hc, "radon_features_reference", refuse)
    monkeypatch.setattr(hc, "geometry_features_reference", refuse)
    train, test = generate(n=90, seed=21), generate(n=30, seed=22)
    clf = registry.create("gbm", "classifier", max_iter=5, n_jobs=1, progress=False).fit(train)
    assert clf.predict_proba(test).shape == (30, 9)
    # worker processes compute what this process does
    maps = list(generate(n=120, seed=23).maps)
    np.testing.assert_array_equal(hc.extract_features(maps, n_jobs=2, chunk_size=40, feature_set="extended"),
                                  hc.extract_features(maps, n_jobs=1, feature_set="extended"))


def test_temperature_is_fitted_saved_and_loaded(tmp_path):
    from scipy.special import softmax

    from waferscope.models.classifiers.prior import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits / 2.0, axis=1)])
    assert fit_temperature(softmax(logits, axis=1), labels) == pytest.approx(2.0, rel=0.1)

    train, test = generate(n=90, seed=31), generate(n=40, seed=32)
    clf = registry.create("gbm", "classifier", max_iter=10, n_jobs=1, progress=False).fit(train)
    raw = clf.predict_proba(test)
    calibrated = clf.set_temperature(1.7).predict_proba(test)
    np.testing.assert_allclose(calibrated, apply_temperature(raw, 1.7), atol=1e-12)
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))
    again = load_run(clf.save(tmp_path / "run"), kind="classifier")
    assert again.temperature_ == 1.7
    np.testing.assert_array_equal(again.predict_proba(test), calibrated)
    with pytest.raises(ValueError, match="positive"):
        clf.set_temperature(0)
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    doc["extras"]["temperature"] = -1
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="temperature"):
        load_run(tmp_path / "run", kind="classifier")
    del doc["extras"]["temperature"]  # a run saved before temperatures: uncalibrated
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    np.testing.assert_array_equal(load_run(tmp_path / "run", kind="classifier").predict_proba(test), raw)
