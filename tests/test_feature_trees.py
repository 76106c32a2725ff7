"""Shape features, the feature sets, the tree walk, the ``gbm`` classifier and the ``pattern_contrast`` detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError, DataError, RunDirError
from waferscope.features.handcrafted import extract_features, feature_names
from waferscope.features.shape import FEATURE_NAMES, N_FEATURES, longest_circular_run, shape_features
from waferscope.models.trees import flatten_trees, tree_scores


def _disc(n: int = 41) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return np.where(np.hypot(yy, xx) <= n / 2, 1, 0).astype(np.uint8)


def _named(wafer) -> dict:
    return dict(zip(FEATURE_NAMES, shape_features(wafer)))


def test_shape_features_of_simple_patterns():
    assert N_FEATURES == len(FEATURE_NAMES) == 46
    empty = _named(_disc())
    assert all(v == 0 for v in empty.values())

    ring = _disc()
    yy, xx = np.mgrid[:41, :41] - 20
    ring[(np.hypot(yy, xx) > 17) & (ring > 0)] = 2          # a full edge ring
    f = _named(ring)
    assert f["outer_hot_run"] == 1.0 and f["outer_hot_share"] == 1.0 and f["inner_hot_share"] == 0
    assert f["ring10_9"] > 0.9 and f["ring10_0"] == 0

    arc = _disc()
    arc[(np.hypot(yy, xx) > 17) & (arc > 0) & (xx > 12)] = 2  # one arc of the edge: Edge-Loc
    g = _named(arc)
    assert 0 < g["outer_hot_run"] < 0.5 and g["largest_edge_share"] > 0.9

    line = _disc()
    line[20, 4:37] = 2                                       # a straight scratch through the centre
    h = _named(line)
    assert h["longest_length"] > 0.6 and h["long_clusters"] == 1 and h["longest_thinness"] < 0.05
    assert h["largest_r_min"] < 0.05 and h["largest_angular_span"] > 0.4


def test_shape_features_do_not_touch_the_input_and_handle_tiny_maps():
    m = _disc()
    m[5, 20] = 2
    before = m.copy()
    shape_features(m)
    np.testing.assert_array_equal(m, before)
    assert shape_features(np.array([[2, 1], [1, 2]], np.uint8)).shape == (46,)
    assert np.isfinite(shape_features(np.full((1, 7), 2, np.uint8))).all()


def test_longest_circular_run_wraps_around():
    assert longest_circular_run(np.array([1, 0, 0, 1, 1], bool)) == 3
    assert longest_circular_run(np.zeros(4, bool)) == 0
    assert longest_circular_run(np.ones(4, bool)) == 4
    assert longest_circular_run(np.array([1, 1, 0, 1, 0, 1, 1, 1, 0], bool)) == 3


def test_cluster_axes_match_principal_axes_per_cluster():
    from scipy import ndimage

    from waferscope.features.pattern_stats import cluster_axes, principal_axes

    fail = np.random.default_rng(3).random((60, 50)) < 0.35  # many clusters, of 1 to dozens of dies
    labels, n = ndimage.label(fail, structure=np.ones((3, 3), bool))
    minor, major = cluster_axes(labels, n)
    expected = np.array([principal_axes(*np.nonzero(labels == k + 1)) for k in range(n)])
    assert n > 50 and (expected[:, 1] > 0).sum() > 20
    np.testing.assert_allclose(minor, expected[:, 0], atol=1e-9)
    np.testing.assert_allclose(major, expected[:, 1], atol=1e-9)


def test_feature_sets():
    maps = generate(n=12, seed=5).maps
    for name, width in (("wm811k", 59), ("extended", 120), ("pattern", 61)):
        x = extract_features(maps, n_jobs=1, feature_set=name)
        assert x.shape == (12, width) == (12, len(feature_names(name))) and np.isfinite(x).all()
    ext = extract_features(maps, n_jobs=1, feature_set="extended")
    # `extended` is the compiled implementation of the same definitions: equal up to rounding (the
    # local fail rate: float32 box filters in the reference)
    np.testing.assert_allclose(ext[:, :59], extract_features(maps, n_jobs=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ext[:, 59:], extract_features(maps, n_jobs=1, feature_set="pattern"),
                               rtol=1e-9, atol=1e-6)
    with pytest.raises(ValueError, match="unknown feature set"):
        extract_features(maps, feature_set="radon")


@pytest.mark.parametrize("n_classes", [2, 4])
def test_tree_walk_matches_scikit_learn(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    x[rng.random(x.shape) < 0.05] = np.nan                  # missing values follow the trained direction
    y = (x[:, 0] > 0).astype(int) + (n_classes > 2) * 2 * (np.nan_to_num(x[:, 1]) > 0.3)
    model = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=7, random_state=0).fit(x, y)
    raw = tree_scores(flatten_trees(model), x)
    proba = np.exp(raw - raw.max(1, keepdims=True))
    np.testing.assert_allclose(proba / proba.sum(1, keepdims=True), model.predict_proba(x), atol=1e-10)


def test_gbm_fit_predict_save_load(tmp_path):
    train, test = generate(n=270, seed=31), generate(n=90, seed=32)
    clf = registry.create("gbm", "classifier", max_iter=40, n_jobs=1, progress=False).fit(train)
    proba = clf.predict_proba(test)
    assert proba.shape == (90, 9) and np.allclose(proba.sum(1), 1)
    accuracy = (np.asarray(clf.classes_)[proba.argmax(1)] == test.labels.astype(str)).mean()
    assert accuracy > 0.7                                   # the synthetic patterns are easy for the features
    again = load_run(clf.save(tmp_path / "run"), kind="classifier")
    np.testing.assert_array_equal(again.predict_proba(test), proba)
    assert not list((tmp_path / "run").glob("*.pkl"))
    assert clf.n_parameters() > 0


def test_gbm_refuses_a_run_of_another_feature_set(tmp_path):
    clf = registry.create("gbm", "classifier", max_iter=5, n_jobs=1, progress=False).fit(generate(n=45, seed=3))
    run = clf.save(tmp_path / "run")
    doc = json.loads((run / "model.json").read_text())
    doc["params"]["feature_set"] = "wm811k"
    (run / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="features"):
        load_run(run, kind="classifier")
    with pytest.raises(ConfigError, match="feature_set"):
        registry.create("gbm", "classifier", feature_set="nope", progress=False).fit(generate(n=18, seed=3))


def test_pattern_contrast_fit_score_save_load(tmp_path):
    train = generate(n=60, seed=41, classes=["none"])
    test = generate(n=90, seed=42)
    det = registry.create("pattern_contrast", "detector", n_synthetic=450, max_iter=60, n_jobs=1,
                          progress=False).fit(train)
    res = det.score(test)
    assert res.scores.shape == (90,) and np.isfinite(res.scores).all()
    assert roc_auc_score(~test.is_normal, res.scores) > 0.9
    for m, a in zip(test.maps, res.maps):
        assert a.shape == m.shape and a.dtype == np.float32 and (a[m == 0] == 0).all()
    again = load_run(det.save(tmp_path / "run"), kind="detector").score(test)
    np.testing.assert_array_equal(again.scores, res.scores)
    from safetensors.numpy import load_file, save_file

    weights = load_file(tmp_path / "run" / "weights.safetensors")
    del weights["ring_baseline"]
    save_file(weights, tmp_path / "run" / "weights.safetensors")
    with pytest.raises(RunDirError, match="pattern_contrast state is damaged: no ring_baseline"):
        load_run(tmp_path / "run", kind="detector")
    refit = registry.create("pattern_contrast", "detector", n_synthetic=450, max_iter=60, n_jobs=1, progress=False)
    np.testing.assert_array_equal(refit.fit(train).score(test).scores, res.scores)   # seeded


def test_pattern_contrast_scores_the_same_in_worker_processes():
    """A large set is scored in chunks by joblib workers (features, trees and maps); same output, same order."""
    det = registry.create("pattern_contrast", "detector", n_synthetic=90, max_iter=20, n_jobs=1,
                          progress=False).fit(generate(n=30, seed=41, classes=["none"]))
    test = generate(n=520, seed=43)  # two chunks of 256 and a rest
    serial = det.score(test)
    det.n_jobs = 2
    parallel = det.score(test)
    np.testing.assert_array_equal(parallel.scores, serial.scores)
    assert len(parallel.maps) == 520
    for a, b in zip(parallel.maps, serial.maps):
        np.testing.assert_array_equal(a, b)


def test_pattern_contrast_errors():
    det = registry.create("pattern_contrast", "detector", n_synthetic=90, progress=False)
    with pytest.raises(DataError, match="no normal samples"):
        det.fit(generate(n=20, seed=3, classes=["Center"]))
    images = WaferDataset.from_maps([np.zeros((20, 20, 3), np.uint8)] * 3, ["good"] * 3, kind="image")
    with pytest.raises(DataError, match="pattern_contrast models die-state wafer maps, not images"):
        det.fit(images)
    with pytest.raises(ConfigError, match="patterns must be"):
        registry.create("pattern_contrast", "detector", n_synthetic=90, patterns="Center|Blob", progress=False).fit(
            generate(n=10, seed=3, classes=["none"]))
    with pytest.raises(ConfigError, match="n_synthetic"):
        registry.create("pattern_contrast", "detector", n_synthetic=3, progress=False).fit(
            generate(n=10, seed=3, classes=["none"]))


def test_damaged_trees_are_refused_and_the_walk_matches_numpy(tmp_path):
    from safetensors.numpy import load_file, save_file

    train, test = generate(n=90, seed=31), generate(n=40, seed=32)
    clf = registry.create("gbm", "classifier", max_iter=5, n_jobs=1, progress=False).fit(train)
    x = clf.features(test)
    x[::5, 3] = np.nan  # missing values go where training sent them
    # the compiled walk against a plain one, node by node
    t = clf.trees_
    expect = np.tile(t["baseline"], (len(x), 1))
    for i, row in enumerate(x):
        for root, k in zip(t["roots"], t["tree_class"]):
            node = root
            while not t["is_leaf"][node]:
                v = row[t["feature"][node]]
                left = t["missing_left"][node] if np.isnan(v) else v <= t["threshold"][node]
                node = t["left"][node] if left else t["right"][node]
            expect[i, k] += t["value"][node]
    np.testing.assert_allclose(clf.decision_function(x), expect, rtol=0, atol=1e-12)
    run = clf.save(tmp_path / "run")
    weights = load_file(run / "weights.safetensors")
    weights["left"] = weights["left"] + 10_000_000
    save_file(weights, run / "weights.safetensors")
    with pytest.raises(RunDirError, match="damaged: tree left index out of range"):
        load_run(run, kind="classifier")
    inner = np.flatnonzero(~weights["is_leaf"])
    weights["left"] = weights["left"] - 10_000_000
    weights["right"][inner[-1]] = inner[0]  # a cycle: the walk would never end
    save_file(weights, run / "weights.safetensors")
    with pytest.raises(RunDirError, match="damaged: tree child index not after its parent"):
        load_run(run, kind="classifier")
    del weights["roots"]
    save_file(weights, run / "weights.safetensors")
    with pytest.raises(RunDirError, match="missing tree arrays: roots"):
        load_run(run, kind="classifier")


def test_forest_walk_matches_scikit_learn():
    from sklearn.ensemble import ExtraTreesClassifier

    from waferscope.models.classifiers.extra_trees import flatten_forest, forest_proba

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0.3)
    forest = ExtraTreesClassifier(n_estimators=20, class_weight="balanced", random_state=0).fit(x, y)
    x_new = rng.normal(size=(700, 6))                         # > one chunk, unseen rows
    np.testing.assert_allclose(forest_proba(flatten_forest(forest), x_new), forest.predict_proba(x_new),
                               atol=1e-6)
