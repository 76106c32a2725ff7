"""Backbones keep torchvision's key names and parameter counts; checkpoints load from local files."""

from __future__ import annotations

import pytest
import torch

from waferscope import registry
from waferscope.errors import ConfigError
from waferscope.models.backbones import FeatureExtractor, create_backbone, save_checkpoint


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512), ("resnet50", 25_557_032), ("wide_resnet50_2", 68_883_240),
    ("convnext_tiny", 28_589_128)])
def test_parameter_counts_match_torchvision(name, expected):
    assert n_params(create_backbone(name)) == expected


def test_resnet18_key_names():
    keys = set(create_backbone("resnet18").state_dict())
    for k in ["conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
              "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias",
              "fc.weight", "fc.bias"]:
        assert k in keys
    assert "layer1.0.downsample.0.weight" not in keys  # resnet18's first stage keeps its width


def test_wide_resnet50_2_key_names_and_shapes():
    sd = create_backbone("wide_resnet50_2").state_dict()
    assert sd["layer1.0.conv2.weight"].shape == (128, 128, 3, 3)  # width_per_group 128
    assert sd["layer1.0.conv3.weight"].shape == (256, 128, 1, 1)
    assert sd["layer4.2.bn3.weight"].shape == (2048,)
    assert sd["fc.weight"].shape == (1000, 2048)


def test_convnext_tiny_key_names():
    sd = create_backbone("convnext_tiny").state_dict()
    assert sd["features.0.0.weight"].shape == (96, 3, 4, 4)
    assert sd["features.1.0.block.0.weight"].shape == (96, 1, 7, 7)
    assert sd["features.1.0.block.3.weight"].shape == (384, 96)
    assert sd["features.1.0.layer_scale"].shape == (96, 1, 1)
    assert sd["features.2.1.weight"].shape == (192, 96, 2, 2)
    assert sd["features.5.8.block.5.bias"].shape == (384,)
    assert sd["classifier.2.weight"].shape == (1000, 768)


def test_options_keep_key_names():
    default = create_backbone("resnet18").state_dict()
    small = create_backbone("resnet18", width=0.5, small_input=True).state_dict()
    assert list(default) == list(small)
    assert small["conv1.weight"].shape == (32, 3, 3, 3)


def test_default_construction_is_torchvision_stem():
    m = create_backbone("resnet18")
    assert m.conv1.kernel_size == (7, 7) and m.conv1.stride == (2, 2)


def test_checkpoint_round_trip_pth_and_safetensors(tmp_path):
    torch.manual_seed(0)
    src = create_backbone("resnet18", width=0.25, num_classes=10)
    torch.save(src.state_dict(), tmp_path / "r.pth")
    save_checkpoint(src, tmp_path / "r.safetensors")
    x = torch.randn(2, 3, 32, 32)
    src.eval()
    for f in ("r.pth", "r.safetensors"):
        dst = create_backbone("resnet18", pretrained=tmp_path / f, width=0.25, num_classes=10).eval()
        assert torch.equal(src(x), dst(x))


def test_checkpoint_head_dropped_when_classes_differ(tmp_path):
    src = create_backbone("resnet18", width=0.25, num_classes=10)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "r.pth")
    dst = create_backbone("resnet18", pretrained=tmp_path / "r.pth", width=0.25, num_classes=3)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_checkpoint_errors(tmp_path):
    src = create_backbone("resnet18", width=0.25)
    sd = src.state_dict()
    torch.save({k: v for k, v in sd.items() if k != "layer1.0.conv1.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="lacks 1 key.*layer1.0.conv1.weight"):
        create_backbone("resnet18", pretrained=tmp_path / "missing.pth", width=0.25)
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match="extra.weight"):
        create_backbone("resnet18", pretrained=tmp_path / "extra.pth", width=0.25)
    torch.save(sd, tmp_path / "quarter.pth")
    with pytest.raises(ConfigError, match="shape mismatch"):
        create_backbone("resnet18", pretrained=tmp_path / "quarter.pth", width=0.5)
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        create_backbone("resnet18", pretrained=tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="downloaded"):
        create_backbone("resnet18", pretrained="imagenet")


def test_feature_extractor_shapes_and_frozen():
    fe = FeatureExtractor(create_backbone("wafer_resnet18", small_input=True), ("layer2", "layer3"))
    feats = fe(torch.zeros(2, 3, 64, 64))
    assert list(feats) == ["layer2", "layer3"]
    assert feats["layer2"].shape == (2, 64, 16, 16) and feats["layer3"].shape == (2, 128, 8, 8)
    fe.train()
    assert not fe.backbone.training
    assert not any(p.requires_grad for p in fe.parameters())


def test_feature_extractor_convnext_aliases_and_bad_layer():
    fe = FeatureExtractor(create_backbone("convnext_tiny"), ("stage1", "stage2"))
    assert fe.feature_info(64) == {"stage1": (96, 16, 16), "stage2": (192, 8, 8)}
    with pytest.raises(ConfigError, match="no layer"):
        FeatureExtractor(create_backbone("resnet18"), ("layer9",))


def test_pdn_output_sizes():
    assert create_backbone("pdn_small")(torch.zeros(1, 3, 64, 64)).shape == (1, 384, 16, 16)
    assert create_backbone("pdn_medium", width=0.25)(torch.zeros(1, 3, 64, 64)).shape == (1, 384, 16, 16)
    assert create_backbone("pdn_small", padding=False)(torch.zeros(1, 3, 64, 64)).shape == (1, 384, 8, 8)


def test_registry_lists_backbones():
    names = registry.available("backbone")
    for n in ("resnet18", "resnet34", "resnet50", "wide_resnet50_2", "convnext_tiny", "convnext_small",
              "convnext_base", "wafer_resnet18", "wafer_convnext", "pdn_small", "pdn_medium"):
        assert n in names


def test_two_extractors_on_one_backbone_and_plain_calls():
    net = create_backbone("resnet18", width=0.25).eval()
    shallow = FeatureExtractor(net, ("layer1",))
    deep = FeatureExtractor(net, ("layer2", "layer3"))
    x = torch.zeros(1, 3, 64, 64)
    assert list(deep(x)) == ["layer2", "layer3"]  # shallow's hook must not cut deep's pass short
    assert list(shallow(x)) == ["layer1"]
    assert net(x).shape == (1, 1000)  # the backbone itself still runs to the end
