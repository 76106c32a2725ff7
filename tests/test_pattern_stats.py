"""The pattern_stats detector: statistics of single maps, fit/score/save on synthetic wafers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.errors import DataError
from waferscope.features.pattern_stats import FEATURE_NAMES, pattern_features


def _disc(n: int = 31) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return np.where(np.hypot(yy, xx) <= n / 2, 1, 0).astype(np.uint8)


def test_features_of_a_centre_blob_and_a_line():
    f = dict(zip(FEATURE_NAMES, pattern_features(_disc())))
    assert f["fail_rate"] == 0 and f["largest_size"] == 0 and f["clusters"] == 0

    blob = _disc()
    blob[13:18, 13:18] = 2
    f = dict(zip(FEATURE_NAMES, pattern_features(blob)))
    assert f["ring_0"] > 0.5 and f["ring_4"] == 0          # all fails in the innermost ring
    assert f["largest_radius"] < 0.05 and f["clusters"] > 0
    assert f["largest_elongation"] == pytest.approx(0, abs=1e-6)

    line = _disc()
    line[15, 3:28] = 2
    g = dict(zip(FEATURE_NAMES, pattern_features(line)))
    assert g["largest_elongation"] > 1.5 and g["largest_length"] > 0.5
    assert g["largest_compactness"] > f["largest_compactness"]  # a line has far more boundary per die


def test_features_do_not_touch_the_input():
    m = _disc()
    m[5, 10] = 2
    before = m.copy()
    pattern_features(m)
    np.testing.assert_array_equal(m, before)


def test_fit_score_save_load(tmp_path):
    train = generate(n=120, seed=21, classes=["none"])
    test = generate(n=90, seed=22)
    det = registry.create("pattern_stats", "detector", progress=False).fit(train)
    res = det.score(test)
    assert res.scores.shape == (90,) and np.isfinite(res.scores).all()
    for m, a in zip(test.maps, res.maps):
        assert a.shape == m.shape and a.dtype == np.float32
        assert (a[m == 0] == 0).all() and (a >= 0).all()
    # the synthetic defect patterns stand out from normal maps
    assert roc_auc_score(~test.is_normal, res.scores) > 0.9
    again = load_run(det.save(tmp_path / "run"), kind="detector").score(test)
    np.testing.assert_array_equal(again.scores, res.scores)
    np.testing.assert_array_equal(again.maps[3], res.maps[3])
    # deterministic: a second fit gives the same numbers
    np.testing.assert_array_equal(registry.create("pattern_stats", "detector", progress=False).fit(train)
                                  .score(test).scores, res.scores)


def test_errors():
    det = registry.create("pattern_stats", "detector", progress=False)
    with pytest.raises(DataError, match="no normal samples"):
        det.fit(generate(n=20, seed=3, classes=["Center"]))
    with pytest.raises(DataError, match="at least 2 normal maps"):
        det.fit(WaferDataset.from_maps([_disc()], ["none"]))
    images = WaferDataset.from_maps([np.zeros((20, 20, 3), np.uint8)] * 3, ["good"] * 3, kind="image")
    with pytest.raises(DataError, match="not images"):
        det.fit(images)


def test_run_with_another_feature_list_is_refused(tmp_path):
    import json

    from waferscope.errors import RunDirError

    det = registry.create("pattern_stats", "detector", progress=False).fit(generate(n=60, seed=21, classes=["none"]))
    run = det.save(tmp_path / "run")
    doc = json.loads((run / "model.json").read_text())
    doc["extras"]["features"] = doc["extras"]["features"][:-1]
    (run / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="another feature list"):
        load_run(run, kind="detector")
