"""Knowledge-distillation detectors: STFPM, Reverse Distillation (ResNet and ConvNeXt), EfficientAD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import _jsonable, load_run
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError
from waferscope.models.detectors.efficientad.anomaly_map import map_quantiles, quantile_normalise
from waferscope.models.detectors.efficientad.loss import hard_feature_loss
from waferscope.models.detectors.reverse_distillation.loss import cosine_distance_map, reverse_distillation_loss
from waferscope.models.detectors.stfpm.anomaly_map import fuse_maps
from waferscope.models.detectors.stfpm.loss import stfpm_loss

# Tiny, fast configurations: random-init teachers (no shipped weights needed), 16/32-px input, 1 epoch.
TINY = {
    "stfpm": dict(pretrained=None, input_size=16, epochs=1, batch_size=8, predict_batch_size=64),
    "reverse_distillation": dict(pretrained=None, input_size=32, epochs=1, batch_size=8, predict_batch_size=64),
    "reverse_distillation_convnext": dict(pretrained=None, input_size=32, epochs=1, batch_size=8, predict_batch_size=64),
    "efficientad": dict(pretrained=None, input_size=16, epochs=1, batch_size=8, predict_batch_size=64),
}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return generate(12, seed=5, classes=["none"]), generate(9, seed=6)


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return {name: registry.create(name, kind="detector", progress=False, **kw).fit(train) for name, kw in TINY.items()}


@pytest.mark.parametrize("name", list(TINY))
def test_fit_score_shapes_and_maps_at_input_resolution(fitted, data, name):
    _, test = data
    res = fitted[name].score(test)
    assert res.scores.shape == (len(test),) and np.all(np.isfinite(res.scores))
    for m, wafer in zip(res.maps, test.maps):
        assert m.shape == wafer.shape and m.dtype == np.float32
        assert np.all(m[wafer == 0] == 0)  # no anomaly off the wafer


@pytest.mark.parametrize("name", list(TINY))
def test_save_load_round_trip_identical_scores(fitted, data, tmp_path, name):
    _, test = data
    det = fitted[name]
    det.save(tmp_path / name)
    again = load_run(tmp_path / name, kind="detector")
    assert type(again) is type(det) and _jsonable(again.get_params()) == _jsonable(det.get_params())
    np.testing.assert_array_equal(again.score(test).scores, det.score(test).scores)


def test_same_seed_same_scores(data):
    train, test = data
    a = registry.create("stfpm", kind="detector", progress=False, **TINY["stfpm"]).fit(train).score(test).scores
    b = registry.create("stfpm", kind="detector", progress=False, **TINY["stfpm"]).fit(train).score(test).scores
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["stfpm", "reverse_distillation", "efficientad"])
def test_loss_decreases_over_a_few_steps(data, name):
    train, _ = data
    kw = dict(TINY[name], epochs=6)
    if name == "stfpm":
        kw.update(optimizer="adam", lr=1e-3)
    det = registry.create(name, kind="detector", progress=False, **kw).fit(train)
    assert det.loss_history_[-1] < det.loss_history_[0]


def test_rd_cosine_distance_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 8, 3, 3, generator=g)
    b = torch.randn(2, 8, 3, 3, generator=g)
    assert torch.allclose(cosine_distance_map(a, a), torch.zeros(2, 3, 3), atol=1e-6)
    assert torch.allclose(cosine_distance_map(a, -a), torch.full((2, 3, 3), 2.0), atol=1e-6)
    d = cosine_distance_map(a, b)
    assert d.shape == (2, 3, 3) and d.min() >= 0 and d.max() <= 2
    scale = torch.rand(2, 1, 3, 3, generator=g) + 0.1  # per-position positive scaling changes nothing
    assert torch.allclose(cosine_distance_map(a * scale, b), d, atol=1e-5)
    # per position (paper), not one cosine over the flattened map: one bad position moves the loss
    b2 = a.clone()
    b2[0, :, 1, 1] = -b2[0, :, 1, 1]
    loss = reverse_distillation_loss([a], [b2])
    assert torch.isclose(loss, torch.tensor(2.0 / 18), atol=1e-5)
    assert torch.isclose(reverse_distillation_loss([a, a], [b2, b2]), 2 * loss)


def test_stfpm_loss_and_fusion():
    a = torch.randn(2, 4, 5, 5)
    assert stfpm_loss([a], [a]).item() == pytest.approx(0.0, abs=1e-6)
    assert stfpm_loss([a], [3 * a]).item() == pytest.approx(0.0, abs=1e-5)  # normalised features
    assert stfpm_loss([a], [-a]).item() == pytest.approx(2.0, abs=1e-5)
    m1, m2 = torch.full((1, 2, 2), 2.0), torch.full((1, 2, 2), 3.0)
    assert fuse_maps([m1, m2], "product").max() == 6.0
    assert fuse_maps([m1, m2], "mean").max() == 2.5
    assert fuse_maps([m1, m2], "max").max() == 3.0


def test_efficientad_quantile_normalisation():
    values = torch.arange(1000, dtype=torch.float32).view(10, 10, 10)
    q_a, q_b = map_quantiles(values, 0.9, 0.995)
    assert q_a == pytest.approx(np.quantile(np.arange(1000), 0.9))
    assert q_b == pytest.approx(np.quantile(np.arange(1000), 0.995))
    normed = quantile_normalise(torch.tensor([q_a, q_b]), q_a, q_b)
    assert torch.allclose(normed, torch.tensor([0.0, 0.1]), atol=1e-6)


def test_efficientad_quantiles_fitted_on_validation_normals(fitted):
    q = fitted["efficientad"].model_.quantiles
    assert q[1] > q[0] and q[3] > q[2]


def test_hard_feature_loss_keeps_only_the_hardest_elements():
    t = torch.zeros(1, 1, 10, 100)
    s = torch.zeros(1, 1, 10, 100)
    s.view(-1)[:5] = 10.0  # the 5 largest errors (top 0.5 %)
    assert hard_feature_loss(t, s, 0.999).item() == pytest.approx(100.0)
    assert hard_feature_loss(t, s, 0.0).item() == pytest.approx(5 * 100 / 1000)


def test_bad_configuration_is_a_config_error(data):
    train, _ = data
    with pytest.raises(ConfigError):
        registry.create("stfpm", kind="detector", progress=False, fusion="median", **TINY["stfpm"]).fit(train)
    with pytest.raises(ConfigError):
        registry.create("reverse_distillation", kind="detector", progress=False, style="vit",
                        **TINY["reverse_distillation"]).fit(train)
    with pytest.raises(ConfigError):
        registry.create("efficientad", kind="detector", progress=False, penalty="imagenet",
                        **TINY["efficientad"]).fit(train)


def test_traced_inference_matches_eager(fitted, data):
    _, test = data
    det = fitted["reverse_distillation"]
    eager = registry.create("reverse_distillation", kind="detector", progress=False,
                            **dict(TINY["reverse_distillation"], jit=False))
    eager.model_, eager.loss_history_, eager.backbone_kwargs_ = det.model_, det.loss_history_, det.backbone_kwargs_
    np.testing.assert_allclose(eager.score(test).scores, det.score(test).scores, rtol=1e-4, atol=1e-5)
