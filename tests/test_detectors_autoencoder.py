"""The autoencoder detector: learns normal wafers, persists exactly, scores at input resolution."""

from __future__ import annotations

import numpy as np

from waferscope.base import load_run
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.models.detectors.autoencoder.detector import AutoencoderDetector


def test_fit_score_save_load(tmp_path):
    train = generate(60, seed=1, classes=["none"])
    test = WaferDataset.concat([generate(12, seed=2, classes=["none"]), generate(12, seed=3, classes=["Near-full"]),
                                generate(12, seed=4, classes=["Edge-Ring"])])
    det = AutoencoderDetector(input_size=32, epochs=6, progress=False, seed=0).fit(train)
    res = det.score(test)
    assert [m.shape for m in res.maps] == [m.shape for m in test.maps]
    normal, anomalous = res.scores[:12], res.scores[12:]
    assert np.mean(anomalous[:, None] > normal[None, :]) > 0.8  # AUROC on obvious defects
    for m, a in zip(test.maps, res.maps):
        assert np.all(a[m == 0] == 0)  # nothing off the wafer
    det.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="detector")
    np.testing.assert_allclose(again.score(test).scores, res.scores, rtol=1e-5, atol=1e-7)


def test_same_seed_same_scores():
    train = generate(30, seed=1, classes=["none"])
    test = generate(9, seed=2)
    a = AutoencoderDetector(input_size=32, epochs=2, progress=False).fit(train).score(test).scores
    b = AutoencoderDetector(input_size=32, epochs=2, progress=False).fit(train).score(test).scores
    np.testing.assert_array_equal(a, b)
