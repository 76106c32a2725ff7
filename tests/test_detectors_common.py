"""Shared detector glue: input encoding, map post-processing at input resolution, the TorchDetector base."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError
from waferscope.models.detectors.common import (TorchDetector, dataset_to_input, fit_loop, gaussian_blur,
                                                 maps_to_input_resolution, masked_max, postprocess_maps,
                                                 training_normals, wafer_valid_masks)


def disc_wafer(h: int, w: int, fail: tuple[int, int] | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    m = (((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1).astype(np.uint8)
    if fail is not None:
        m[fail] = 2
    return m


def wafer_set() -> WaferDataset:
    maps = [disc_wafer(30, 30), disc_wafer(31, 27, (15, 13)), disc_wafer(30, 30, (15, 15))]
    return WaferDataset.from_maps(maps, ["none", "Loc", "Center"])


def test_dataset_to_input_wafers_onehot3():
    x = dataset_to_input(wafer_set(), 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x.sum(1), 1.0)  # one-hot: exactly one channel per pixel
    assert x[0, 2].sum() == 0 and x[1, 2].sum() > 0  # the fail channel


def test_dataset_to_input_images_grey_and_rgb():
    grey = WaferDataset.from_maps([np.full((50, 40), 255, np.uint8)], ["good"], kind="image")
    rgb = WaferDataset.from_maps([np.zeros((20, 20, 3), np.uint8)], ["good"], kind="image")
    xg, xr = dataset_to_input(grey, 16), dataset_to_input(rgb, 16)
    assert xg.shape == xr.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(xg, 1.0, atol=1e-6)
    assert wafer_valid_masks(grey, 16) is None


def test_training_normals():
    ds = wafer_set()
    assert len(training_normals(ds)) == 1
    with pytest.raises(DataError, match="no normal samples"):
        training_normals(ds.subset([1, 2]))


def test_maps_to_input_resolution_shapes_and_off_wafer_zero():
    ds = wafer_set()
    maps = torch.ones(3, 16, 16)
    out = maps_to_input_resolution(maps, ds)
    for m, a in zip(ds.maps, out):
        assert a.shape == m.shape and a.dtype == np.float32
        assert np.all(a[m == 0] == 0) and np.allclose(a[m != 0], 1.0)


def test_postprocess_masks_and_max_counts_only_on_wafer():
    ds = wafer_set()
    valid = wafer_valid_masks(ds, 32)
    raw = torch.zeros(3, 8, 8)
    raw[:, 0, 0] = 100.0  # a hot corner: off the wafer for a disc
    pm = postprocess_maps(raw, 32, sigma=0.0, valid=valid)
    assert pm.shape == (3, 32, 32)
    assert float(pm[:, 0, 0].abs().max()) == 0.0
    assert np.all(masked_max(pm, valid) < 100.0)


def test_gaussian_blur_preserves_mass_and_peak_position():
    x = torch.zeros(1, 33, 33)
    x[0, 16, 16] = 1.0
    y = gaussian_blur(x, 2.0)
    assert abs(float(y.sum()) - 1.0) < 1e-4
    assert int(y[0].argmax()) == 16 * 33 + 16


class _FailChannelDetector(TorchDetector):
    """Anomaly map = the fail channel; scores fall back to the masked map maximum."""

    def __init__(self, input_size: int = 32, smoothing_sigma: float = 0.0, progress: bool = False):
        self.input_size = input_size
        self.smoothing_sigma = smoothing_sigma
        self.progress = progress

    def fit(self, dataset, **kwargs):
        self.fitted_ = True
        return self

    def _predict_batch(self, x):
        return None, x[:, 2]


def test_torch_detector_score_at_input_resolution():
    ds = wafer_set()
    det = _FailChannelDetector().fit(ds)
    res = det.score(ds)
    assert res.scores.shape == (3,)
    assert res.scores[0] == 0 and res.scores[1] > 0.5 and res.scores[2] > 0.5
    assert [m.shape for m in res.maps] == [m.shape for m in ds.maps]
    assert int(np.argmax(res.maps[1])) == int(np.flatnonzero(ds.maps[1].ravel() == 2)[0])


def test_fit_loop_is_seeded():
    x = np.random.default_rng(0).random((16, 3, 8, 8)).astype(np.float32)

    def run():
        torch.manual_seed(0)
        lin = torch.nn.Conv2d(3, 3, 1)
        hist = fit_loop(lin.parameters(), lambda b: ((lin(b) - b) ** 2).mean(), x, epochs=3, batch_size=4,
                        lr=1e-2, seed=1, progress=False)
        return hist, lin.weight.detach().clone()

    (h1, w1), (h2, w2) = run(), run()
    assert h1 == h2 and torch.equal(w1, w2)
    assert h1[-1] < h1[0]


def test_masked_topk_mean():
    from waferscope.models.detectors.common import masked_topk_mean

    maps = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 1, 10)
    valid = np.ones((2, 1, 10), bool)
    valid[1, 0, 5:] = False  # the second map's top values are off the wafer
    out = masked_topk_mean(maps, valid, fraction=0.2)
    assert out[0] == pytest.approx((9 + 8) / 2)
    assert out[1] == pytest.approx(14.0)  # 20% of 5 valid pixels → the single best, 14
