"""The formula-driven image backbone shipped in the package (``formula_resnet18``, pretrained="formula"):
it loads from the shipped file without pickle, keeps torchvision's key names, gives the documented
feature shapes, and the image detectors fit with it on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from imagetools import image_sets
from waferscope.errors import ConfigError
from waferscope.models.backbones import (FeatureExtractor, create_backbone, read_state_dict, shipped_backbones,
                                         wafer_weights_info, wafer_weights_path)


def test_shipped_file_loads_safely_with_torchvision_key_names(tmp_path):
    path = wafer_weights_path("formula_resnet18")
    assert path.is_file() and path.stat().st_size < 8e6  # a few MB in the package
    state = read_state_dict(path)  # safetensors: no pickled code runs
    # torchvision's resnet18 keys (the untrained 1000-way head is not shipped)
    reference = create_backbone("resnet18", width=0.5).state_dict()
    assert set(state) == {k for k in reference if not k.startswith("fc.")}
    assert all(state[k].shape == reference[k].shape for k in state)
    # the same tensors also load through torch.load(weights_only=True) once saved as .pth
    torch.save(state, tmp_path / "f.pth")
    again = torch.load(tmp_path / "f.pth", weights_only=True)
    assert all(torch.equal(again[k], state[k]) for k in state)
    net = create_backbone("formula_resnet18", pretrained="formula")
    own = net.state_dict()
    assert all(torch.equal(own[k], state[k].to(own[k].dtype)) for k in state)
    info = wafer_weights_info("formula_resnet18")
    assert info["domain"] == "formula" and info["training"]["steps"] > 0
    assert shipped_backbones("formula") == ["formula_resnet18"]
    assert "formula_resnet18" not in shipped_backbones("wafer")


def test_feature_shapes_and_input_standardisation():
    net = create_backbone("formula_resnet18", pretrained="formula")
    ext = FeatureExtractor(net, layers=("layer1", "layer2", "layer3"))
    assert ext.feature_info(128) == {"layer1": (32, 32, 32), "layer2": (64, 16, 16), "layer3": (128, 8, 8)}
    x = torch.rand(2, 1, 64, 64).expand(-1, 3, -1, -1)
    a, b = ext(x), ext(3.0 * x - 0.7)  # gain and offset do not change the features
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-3)
    # the weights are not the random initialisation
    torch.manual_seed(0)
    rand = create_backbone("formula_resnet18")
    assert not torch.allclose(rand.conv1.weight, net.conv1.weight)


def test_wrong_domain_is_a_clear_error():
    with pytest.raises(ConfigError, match="no formula-pretrained weights.*formula_resnet18"):
        create_backbone("wafer_resnet18", pretrained="formula")
    with pytest.raises(ConfigError, match="no wafer-pretrained weights.*wafer_resnet18"):
        create_backbone("formula_resnet18", pretrained="wafer")


def test_patchcore_and_texture_padim_fit_with_it(tmp_path):
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run

    train, test = image_sets(n_test=5)
    pc = registry.create("patchcore", "detector", backbone="formula_resnet18", pretrained="formula",
                         input_size=64, progress=False).fit(train)
    res = pc.score(test)
    assert res.maps[0].shape == (30, 44) and np.isfinite(res.scores).all()
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.8
    # texture_padim on the backbone's channels alone (PaDiM's features), then reloaded from its run
    tp = registry.create("texture_padim", "detector", input_size=32, grid=8, backbone="formula_resnet18",
                         pretrained="formula", backbone_input_size=64, backbone_channels=40, filter_bank=False,
                         calibration_folds=3, progress=False).fit(train)
    assert tp.mean_.shape == (64, 40) and len(tp.backbone_index_) == 40
    res = tp.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.8
    tp.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, rtol=1e-5)
    with pytest.raises(ConfigError, match="needs features"):
        registry.create("texture_padim", "detector", filter_bank=False, progress=False).fit(train)
    for bad in ({"backbone_layers": ()}, {"backbone_input_size": 4}, {"backbone_channels": -1}):
        with pytest.raises(ConfigError, match="backbone_layers must name at least one layer"):
            registry.create("texture_padim", "detector", backbone="formula_resnet18", progress=False,
                            **bad).fit(train)


def test_wafer_weights_on_images_get_one_piece_of_advice():
    """A backbone detector fitted on images with the wafer-map weights chosen explicitly is told what works for images."""
    import warnings

    from waferscope.errors import AdviceWarning

    train, _ = image_sets(n_test=5)
    # the wafer backbone named explicitly: its pretrained="auto" resolves to the wafer weights
    with pytest.warns(AdviceWarning, match="patchcore: fitted on images with the wafer-map backbone.*formula"):
        registry.create("patchcore", "detector", backbone="wafer_resnet18", input_size=32, progress=False).fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdviceWarning)  # the default (formula weights on images): no advice
        registry.create("patchcore", "detector", input_size=32, progress=False).fit(train)


def test_cli_shows_the_advice_as_a_note(capsys, tmp_path):
    from PIL import Image

    from clitools import invoke
    from imagetools import textures

    (tmp_path / "parts" / "train" / "good").mkdir(parents=True)
    for i, im in enumerate(textures(6, 0)[0]):
        Image.fromarray(im).save(tmp_path / "parts" / "train" / "good" / f"{i}.png")
    code, _, err = invoke(capsys, "detect", "train", "--data", str(tmp_path / "parts"), "--model", "patchcore",
                          "--set", "pretrained=wafer", "--set", "backbone=wafer_resnet18", "--set", "input_size=32", "--set", "progress=false", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "note: patchcore: fitted on images with the wafer-map backbone weights" in err
