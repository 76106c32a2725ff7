"""The torchvision checkpoint path, end to end: a state dict with torchvision's key names (random
weights; the backbones of waferscope.models.backbones follow torchvision's names, tests/test_backbones.py)
saved with torch.save to a file, then PatchCore built with ``pretrained=<that file>`` on images.

Proves what docs/detection.md promises a user who brings ImageNet weights: the file is read (no
download), every non-head tensor lands in the backbone (the patch features are those of the saved
weights, not of a random init), and the detector fits, scores and reloads from its run directory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.dataset import WaferDataset
from waferscope.models.backbones import create_backbone


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(60, 200, (40, 56), dtype=np.uint8) for _ in range(n)]


def _run(name, layers, tmp_path, input_size=32):
    torch.manual_seed(123)
    net = create_backbone(name)  # random weights, torchvision's layout and key names
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)  # what `torch.save(torchvision.models.X(weights=...).state_dict())` writes
    train = WaferDataset.from_maps(_images(6, 0), ["good"] * 6, kind="image", name="train")
    test = WaferDataset.from_maps(_images(3, 1), ["good", "x", "x"], kind="image", name="test")
    params = dict(backbone=name, pretrained=str(path), layers=layers, input_size=input_size, embedding_dim=16,
                  coreset_ratio=0.5, predict_batch_size=4, progress=False)
    det = registry.create("patchcore", "detector", **params).fit(train)
    # the backbone holds the saved tensors, not a fresh random init of another seed
    used = det.model_.extractor.backbone.state_dict()
    saved = torch.load(path, weights_only=True)
    for key in list(saved)[:50]:
        if not key.startswith(("fc.", "classifier.")):
            assert torch.equal(used[key], saved[key]), key
    res = det.score(test)
    assert np.isfinite(res.scores).all() and [m.shape for m in res.maps] == [(40, 56)] * 3
    det.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="detector").score(test)
    np.testing.assert_allclose(again.scores, res.scores, rtol=0, atol=1e-5)
    # a different checkpoint gives different features (the file is really what the detector uses)
    torch.manual_seed(7)
    other = tmp_path / "other.pth"
    torch.save(create_backbone(name).state_dict(), other)
    det2 = registry.create("patchcore", "detector", **dict(params, pretrained=str(other))).fit(train)
    assert not np.allclose(det2.score(test).scores, res.scores)


def test_patchcore_with_a_torchvision_resnet18_checkpoint(tmp_path):
    _run("resnet18", ("layer2", "layer3"), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name,layers", [("wide_resnet50_2", ("layer2", "layer3")),
                                         ("convnext_tiny", ("features.3", "features.5"))])
def test_patchcore_with_big_torchvision_checkpoints(name, layers, tmp_path):
    _run(name, layers, tmp_path)
