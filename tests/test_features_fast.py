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


# ---- the compiled 120 `extended` features (waferscope.features.fast) ------------------------------

def _fab_maps():
    """The shared sample plus fab-like maps (large grids, margins, clean backgrounds)."""
    return _maps() + [np.asarray(m) for m in generate(24, seed=12, profile="fab").maps]


def test_compiled_extended_features_equal_the_definition():
    from waferscope.features.fast import extended_batch, pattern_batch

    maps = _fab_maps()
    fast = extended_batch(maps)
    np.testing.assert_array_equal(pattern_batch(maps), fast[:, 59:])  # the pattern set: the same pass, no Radon
    reference = np.stack([hc.extended_features(m) for m in maps])
    names = hc.feature_names("extended")
    # the local fail rate is a ratio of counts here, float32 box filters in the reference
    local = [names.index("stats_local_max"), names.index("stats_local_excess")]
    np.testing.assert_allclose(fast[:, local], reference[:, local], rtol=0, atol=1e-6)
    rest = np.setdiff1d(np.arange(len(names)), local)
    close = np.isclose(fast[:, rest], reference[:, rest], rtol=1e-9, atol=1e-12)
    # Lengths tied up to rounding (two clusters exactly as long) may pick the other cluster's thinness:
    # allowed on at most one map in fifty, in that one column, nowhere else.
    differs = np.argwhere(~close)
    assert {names[rest[j]] for _, j in differs} <= {"longest_thinness"}, differs
    assert len(differs) <= len(maps) // 50


def test_compiled_features_on_large_grids_equal_the_definition():
    """Grids of 250 dies across and more (a fab's): random fails, fails in the corners (where the Radon
    footprints reach past the padded grid's edge) and an edge ring."""
    from skimage.transform import radon

    from waferscope.evaluate.robustness import clean_wafers
    from waferscope.features import fast

    rng = np.random.default_rng(4)
    maps = clean_wafers(1, 250, 250, rng=rng, rate=0.03) + clean_wafers(1, 260, 231, rng=rng, rate=0.2)
    corners = rng.choice(np.array([1, 2], np.uint8), size=(250, 250), p=[0.9, 0.1])
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = 2
    ring = maps[0].copy()  # one large connected region: an edge ring (its hull, boxes, moments)
    yy, xx = np.mgrid[:250, :250]
    ring[(ring > 0) & (np.hypot(yy - 124.5, xx - 124.5) > 100)] = 2
    maps += [corners, ring]
    for m in maps:  # the sinogram itself, against scikit-image's
        tables = fast.shape_tables(*m.shape)
        pad_r, pad_c, size, cos_a, sin_a = tables[9:14]
        pushed = fast._radon(m, pad_r, pad_c, size, cos_a, sin_a, float(size // 2))[:, :size].T
        theta = np.linspace(0.0, 180.0, max(m.shape), endpoint=False)
        np.testing.assert_allclose(pushed, radon((m == 2).astype(float), theta=theta, circle=False), rtol=0, atol=1e-9)
    got = fast.extended_batch(maps)
    want = np.stack([hc.extended_features(m) for m in maps])
    names = hc.feature_names("extended")
    local = [names.index("stats_local_max"), names.index("stats_local_excess")]  # count ratio vs float32 filters
    np.testing.assert_allclose(got[:, local], want[:, local], rtol=0, atol=1e-6)
    rest = np.setdiff1d(np.arange(len(names)), local)
    np.testing.assert_allclose(got[:, rest], want[:, rest], rtol=1e-9, atol=1e-12)


def test_shape_tables_cache_is_bounded_by_bytes(monkeypatch):
    from waferscope.features import fast

    monkeypatch.setattr(fast, "SHAPE_CACHE_BYTES", 3 * 2**19)  # 1.5 MB: the tables of 60..140 across take 2
    monkeypatch.setattr(fast, "_shape_cache", type(fast._shape_cache)())
    monkeypatch.setattr(fast, "_shape_cache_bytes", 0)
    sides = (60, 80, 100, 120, 140)
    for side in sides:
        fast.extended_features_fast(np.full((side, side), 2, np.uint8))
    held = sum(t.nbytes for tables in fast._shape_cache.values() for t in tables if isinstance(t, np.ndarray))
    assert held == fast._shape_cache_bytes and 0 < held <= 3 * 2**19
    assert (140, 140) in fast._shape_cache and (60, 60) not in fast._shape_cache  # the oldest went first
    assert fast.shape_tables(140, 140) is fast._shape_cache[(140, 140)]


def test_threaded_features_and_tree_walk_equal_one_thread():
    from waferscope.models.trees import tree_scores

    maps = [np.asarray(m) for m in generate(600, seed=24).maps]
    one = hc.extract_features(maps, n_jobs=1, feature_set="extended")
    np.testing.assert_array_equal(hc.extract_features(maps, n_jobs=2, chunk_size=100, feature_set="extended"), one)
    clf = registry.create("gbm", "classifier", max_iter=5, n_jobs=1, progress=False).fit(generate(90, seed=25))
    x = np.tile(one, (4, 1))  # 2,400 rows: two blocks of rows
    np.testing.assert_array_equal(tree_scores(clf.trees_, x, n_jobs=2), tree_scores(clf.trees_, x, n_jobs=1))


# ---- the canonical view on the native grid (gbm's orient="canonical") ------------------------------

def test_canonical_map_is_the_same_for_every_view_and_margin():
    from waferscope.data.preprocess import canonical_map, dihedral

    maps = _maps()[:50] + [np.asarray(m) for m in generate(10, seed=14, profile="fab").maps]
    for m in maps:
        want = canonical_map(m)
        for k in range(8):
            view = np.ascontiguousarray(dihedral(m, k))
            for x in (view, np.pad(view, ((2, 0), (1, 3)))):
                got = canonical_map(x)
                assert got.shape == want.shape and np.array_equal(got, want), (m.shape, k)


def test_gbm_with_the_canonical_view_predicts_the_same_for_every_view():
    from waferscope.data.dataset import WaferDataset
    from waferscope.data.preprocess import dihedral

    clf = registry.create("gbm", "classifier", max_iter=10, n_jobs=1, progress=False).fit(generate(90, seed=26))
    assert clf.orient == "canonical"
    test = generate(30, seed=27)
    want = clf.predict_proba(test)
    for k in (1, 2, 5):
        turned = WaferDataset.from_maps([np.ascontiguousarray(dihedral(np.asarray(m), k)) for m in test.maps])
        np.testing.assert_array_equal(clf.predict_proba(turned), want)


def test_a_gbm_run_saved_before_orient_existed_reads_maps_as_given(tmp_path):
    clf = registry.create("gbm", "classifier", max_iter=3, n_jobs=1, progress=False).fit(generate(60, seed=28))
    clf.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    del doc["params"]["orient"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    assert load_run(tmp_path / "run").orient == "none"
