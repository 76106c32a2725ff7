"""The backbone detectors' data-kind defaults (``backbone="auto"``, ``pretrained="auto"``, ``input_size=None``):
resolved by the kind of data fitted, explicit values win, the resolution is saved with the run and
used on reload, and the wafer-map path is the former default exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imagetools import image_sets
from waferscope import registry
from waferscope.base import load_run
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError, DataError, RunDirError
from waferscope.models.backbones import AUTO_BACKBONES, resolve_backbone


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_resolve_backbone_by_kind_and_explicit_values_win():
    assert resolve_backbone("auto", "auto", "wafer") == ("wafer_resnet18", "wafer")
    assert resolve_backbone("auto", "auto", "image") == ("formula_resnet18", "formula")
    assert resolve_backbone("auto", "auto", "wafer", family="convnext") == ("wafer_convnext", "wafer")
    # pretrained="auto" follows the named backbone's shipped weights, or none (random init)
    assert resolve_backbone("wafer_resnet18", "auto", "image") == ("wafer_resnet18", "wafer")
    assert resolve_backbone("resnet18", "auto", "image") == ("resnet18", None)
    # explicit choices are returned unchanged, whatever the data
    assert resolve_backbone("auto", None, "image") == ("formula_resnet18", None)
    assert resolve_backbone("resnet18", "/x/r18.pth", "wafer") == ("resnet18", "/x/r18.pth")
    assert "image" not in AUTO_BACKBONES["convnext"]
    with pytest.raises(ConfigError, match="no convnext backbone for image data"):
        resolve_backbone("auto", "auto", "image", family="convnext")


def test_wafer_maps_default_is_the_former_default_exactly():
    train = generate(16, seed=1, size=(24, 24), classes=["none"])
    test = generate(6, seed=2)
    auto = registry.create("patchcore", "detector", progress=False).fit(train)
    assert auto.resolved_ == {"kind": "wafer", "backbone": "wafer_resnet18", "pretrained": "wafer",
                              "input_size": 64, "coreset_ratio": 0.1}
    old = registry.create("patchcore", "detector", backbone="wafer_resnet18", pretrained="wafer", input_size=64,
                          coreset_ratio=0.1, progress=False).fit(train)
    np.testing.assert_array_equal(auto.score(test).scores, old.score(test).scores)
    assert auto.threshold_ == old.threshold_


def test_images_get_the_formula_backbone_and_explicit_values_win(tmp_path):
    train, test = image_sets(n_train=8, n_test=3)
    det = registry.create("patchcore", "detector", progress=False).fit(train)
    assert det.resolved_ == {"kind": "image", "backbone": "formula_resnet18", "pretrained": "formula",
                             "input_size": 128, "coreset_ratio": 0.01}
    assert det.get_params()["backbone"] == "auto" and det.get_params()["input_size"] is None  # params stay as given
    from waferscope.models.backbones import create_backbone

    torch.testing.assert_close(det.model_.extractor.backbone.conv1.weight,
                               create_backbone("formula_resnet18", pretrained="formula").conv1.weight)
    # explicit values win on images: another backbone (no shipped weights: random init), another size
    mine = registry.create("patchcore", "detector", backbone="resnet18", input_size=32, coreset_ratio=0.5,
                           progress=False).fit(train)
    assert mine.resolved_ == {"kind": "image", "backbone": "resnet18", "pretrained": None, "input_size": 32,
                              "coreset_ratio": 0.5}
    assert mine.score(test).maps[0].shape == (30, 44)


@pytest.mark.parametrize("name", ["patchcore", "reverse_distillation"])
def test_reload_uses_the_saved_resolution(name, tmp_path):
    train, test = image_sets(n_train=8, n_test=3)
    kw = {"epochs": 1} if name != "patchcore" else {}
    det = registry.create(name, "detector", progress=False, **kw).fit(train)
    det.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert doc["params"]["backbone"] == "auto" and doc["extras"]["resolved"]["backbone"] == "formula_resnet18"
    back = load_run(tmp_path / "run")
    assert back.resolved_ == det.resolved_ and back.network_input_size() == 128
    np.testing.assert_allclose(back.score(test).scores, det.score(test).scores, rtol=1e-5)
    # a run whose resolution is missing cannot be guessed: one clear error
    del doc["extras"]["resolved"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="does not say what backbone, pretrained, input_size"):
        load_run(tmp_path / "run")


def test_a_run_saved_before_the_auto_defaults_still_loads(tmp_path):
    """Runs written before had every value explicit in their params and no ``resolved`` extras."""
    train = generate(12, seed=1, size=(24, 24), classes=["none"])
    det = registry.create("reverse_distillation", "detector", backbone="wafer_resnet18", pretrained="wafer",
                          input_size=32, epochs=1, progress=False).fit(train)
    det.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    del doc["extras"]["resolved"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    back = load_run(tmp_path / "run")
    assert back.resolved_ == {"backbone": "wafer_resnet18", "pretrained": "wafer", "input_size": 32}
    test = generate(4, seed=2)
    np.testing.assert_allclose(back.score(test).scores, det.score(test).scores, rtol=1e-5)


@pytest.mark.parametrize("name", ["reverse_distillation_convnext", "stfpm"])
def test_detectors_below_the_image_baseline_refuse_images_naming_the_image_detectors(name):
    train, test = image_sets(n_train=4, n_test=2)
    with pytest.raises(DataError, match=f"{name}.*not images.*texture_padim.*patchcore"):
        registry.create(name, "detector", progress=False).fit(train)
    from waferscope.models.detectors.common import image_detectors

    assert name not in image_detectors()
    assert {"patchcore", "reconpatch", "reverse_distillation"} <= set(image_detectors())
