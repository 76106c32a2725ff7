"""Explanations: Grad-CAM mechanics, denoising, localisation scores, atlas, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, DataError
from waferscope.explain import build_atlas, denoise, denoising_table, explain, localisation_table, plot_atlas
from waferscope.explain.denoise import denoise_components, denoise_gradcam, denoise_median, die_scores
from waferscope.explain.gradcam import GradCAM, find_target_layer
from waferscope.explain.localization import energy_in_mask, pointing_hit


class EvidenceNet(nn.Module):
    """A fixed network whose class-1 logit is the total of channel 0; channel 1 is a distractor.
    The evidence for class 1 sits where channel 0 is non-zero (the top-left quadrant)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2)[:, :, None, None])

    def forward(self, x):
        a = self.conv(x)
        evidence = a[:, 0].sum((1, 2))
        return torch.stack([-evidence, evidence], 1)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_gradcam_points_at_the_evidence(method):
    x = torch.zeros(3, 2, 8, 8)
    x[:, 0, :4, :4] = torch.rand(3, 4, 4) + 0.5
    x[:, 1, 4:, 4:] = 5.0  # a strong activation the class-1 logit ignores
    cams, logits = GradCAM(EvidenceNet(), method=method)(x, targets=[1, 1, 1])
    assert cams.shape == (3, 8, 8) and logits.shape == (3, 2)
    assert cams.max() == pytest.approx(1.0)
    inside = cams[:, :4, :4].sum() / cams.sum()
    assert inside > 0.9


def test_target_layer_choice_and_errors():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=4, padding=1),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Flatten(), nn.LazyLinear(2))
    x = torch.zeros(2, 1, 16, 16)
    net(x)
    assert find_target_layer(net, x) == "1"  # 4×4; the 2×2 layer after it is too coarse
    net.explain_layer = "0"  # a network may declare the layer to explain (cnn_fine does)
    assert find_target_layer(net, x) == "0"
    net.explain_layer = "missing"  # a declared name that is not there falls back to the rule
    assert find_target_layer(net, x) == "1"
    with pytest.raises(ConfigError, match="no Conv2d"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), x)
    with pytest.raises(ConfigError, match="target layer 'nope'"):
        GradCAM(net, target_layer="nope")(x)
    with pytest.raises(ConfigError, match="unknown explanation method"):
        GradCAM(net, method="saliency")


def _wafer_with_blob(fail_noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = np.ones((30, 30), np.uint8)
    w[rng.random((30, 30)) < fail_noise] = 2
    w[10:15, 10:15] = 2
    mask = np.zeros((30, 30), bool)
    mask[10:15, 10:15] = True
    return w, mask


def test_denoisers_and_die_scores():
    w, mask = _wafer_with_blob()
    heat = np.zeros((30, 30))
    heat[9:16, 9:16] = 1.0
    cam = die_scores(denoise_gradcam(w, heat), mask)
    assert cam["recall"] == 1.0 and cam["precision"] > 0.9
    raw = die_scores(w, mask)
    assert raw["precision"] < cam["precision"]
    assert die_scores(denoise_components(w), mask)["recall"] == 1.0
    med = denoise_median(w)
    assert set(np.unique(med)) <= {1, 2} and (med[mask] == 2).mean() > 0.5
    # denoising never invents fails or touches the die layout
    for d in (denoise_gradcam(w, heat), denoise_median(w), denoise_components(w)):
        assert np.all((d == 2) <= (w == 2) | (w == 2)) and np.array_equal(d > 0, w > 0)
    with pytest.raises(ConfigError, match="quantile"):
        denoise_gradcam(w, heat + np.random.default_rng(0).random((30, 30)), threshold=1.5)


def test_localisation_scores():
    _, mask = _wafer_with_blob()
    heat = np.zeros((30, 30))
    heat[10:15, 10:15] = 1
    assert energy_in_mask(heat, mask) == 1.0 and pointing_hit(heat, mask)
    heat2 = np.zeros((30, 30))
    heat2[25, 25] = 1
    assert energy_in_mask(heat2, mask) == 0.0 and not pointing_hit(heat2, mask)


@pytest.mark.parametrize("shape", [(30, 41), (48, 48), (70, 55)])
def test_die_grid_heat_is_the_mean_of_the_pixels_that_showed_each_die(shape):
    """to_die_grid inverts the nearest resize the network saw: a per-die heat map resized to 48 px and
    brought back is unchanged wherever every die was shown (grids up to 48 dies), and a die left
    out of a wider grid takes the pixel nearest to it."""
    from waferscope.data.preprocess import resize_map
    from waferscope.explain.gradcam import to_die_grid

    heat = np.random.default_rng(0).random(shape).astype(np.float32)
    back = to_die_grid(resize_map(heat, 48), shape)
    assert back.shape == shape
    rows_shown = np.isin(np.arange(shape[0]), resize_map(np.arange(shape[0])[:, None], (48, 1))[:, 0])
    cols_shown = np.isin(np.arange(shape[1]), resize_map(np.arange(shape[1])[None, :], (1, 48))[0])
    both = rows_shown[:, None] & cols_shown[None, :]
    np.testing.assert_allclose(back[both], heat[both], rtol=1e-6)  # every die shown: exactly its heat
    assert both.all() == (max(shape) <= 48)
    if not both.all():
        assert np.isin(back, heat).all()  # every die shows some pixel's own value: nothing blurred


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from waferscope.data.synthetic import generate
    from waferscope.models.classifiers.cnn import CompactCNNClassifier

    torch.set_num_threads(1)
    train = generate(n=90, seed=3, classes=["Center", "Edge-Ring", "none"])
    clf = CompactCNNClassifier(epochs=1, input_size=32, width=4, progress=False, val_fraction=0).fit(train)
    run = tmp_path_factory.mktemp("runs") / "cnn"
    clf.save(run)
    return clf, run


def test_explain_dataset_end_to_end(tiny_classifier):
    from waferscope.data.synthetic import generate

    clf, _ = tiny_classifier
    data = generate(n=12, seed=4, classes=["Center", "Edge-Ring", "none"])
    exp = explain(clf, data, method="gradcam++", progress=False)
    assert len(exp.heat) == 12 and exp.proba.shape == (12, len(clf.classes_))
    for m, h in zip(data.maps, exp.heat):
        assert h.shape == m.shape and np.all(h[m == 0] == 0) and h.max() <= 1.0 + 1e-6
    table = localisation_table(exp.heat, data)
    assert {"energy_in_mask", "fail_energy_in_mask", "pointing_hit"} <= set(table.columns)
    assert table["energy_in_mask"].between(0, 1).all()
    dn = denoise(data, exp)
    assert len(dn) == 12 and all(np.array_equal(a > 0, b > 0) for a, b in zip(dn.maps, data.maps))
    comp = denoising_table(data, exp)
    assert set(comp["method"]) == {"raw", "gradcam", "median", "components"}
    assert "none" not in set(comp["class"])


def test_explain_rejects_non_cnn_and_empty(tiny_classifier):
    clf, _ = tiny_classifier

    class NotACNN:
        classes_ = ["a"]

    with pytest.raises(ConfigError, match="not a neural network"):
        explain(NotACNN(), WaferDataset.from_maps([np.ones((5, 5), np.uint8)]))
    with pytest.raises(DataError, match="empty"):
        explain(clf, WaferDataset.from_maps([]))
    with pytest.raises(DataError, match="masks"):
        localisation_table([np.zeros((5, 5))], WaferDataset.from_maps([np.ones((5, 5), np.uint8)]))


def test_atlas(tmp_path):
    from waferscope.data.synthetic import generate

    data = generate(n=40, seed=5, classes=["Center", "Edge-Ring"])
    atlas = build_atlas(data, size=24)
    centre = atlas.classes.index("Center")
    ring = atlas.classes.index("Edge-Ring")
    mid = slice(9, 15)
    # Center fails concentrate in the middle; Edge-Ring fails do not
    assert atlas.fail_share[centre][mid, mid].mean() > atlas.fail_share[ring][mid, mid].mean()
    plot_atlas(atlas, tmp_path / "atlas.png")
    assert (tmp_path / "atlas.png").stat().st_size > 1000
    frame = atlas.to_frame()
    assert len(frame) == 2 * 24 * 24 and frame["fail_share"].between(0, 1).all()
    with pytest.raises(DataError, match="labelled"):
        build_atlas(WaferDataset.from_maps([np.ones((5, 5), np.uint8)]))


def test_cli_explain_and_atlas(tiny_classifier, tmp_path):
    from waferscope.cli.main import app

    _, run = tiny_classifier
    runner = CliRunner()
    out = tmp_path / "exp"
    res = runner.invoke(app, ["explain", "--run", str(run), "--data", "synthetic:n=10,seed=6", "--out", str(out),
                              "--denoise", "--max-pictures", "3"])
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("*.png"))) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wafers"] == 10 and "denoising_f1" in summary
    assert (out / "localisation.csv").exists() and (out / "denoised.parquet").exists()
    assert summary["model"] == str(run)
    res = runner.invoke(app, ["atlas", "--data", "synthetic:n=30,seed=7", "--out", str(tmp_path / "atlas")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "atlas" / "atlas.png").exists() and (tmp_path / "atlas" / "atlas.csv").exists()


def test_gradcam_works_on_a_frozen_layer():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for p in net[0].parameters():
        p.requires_grad_(False)  # a frozen encoder, as in the ae_latent classifier
    cams, _ = GradCAM(net, target_layer="0")(torch.rand(2, 1, 8, 8))
    assert cams.shape == (2, 8, 8) and np.isfinite(cams).all()


def test_cli_explain_defaults_to_the_bundled_model_trained_to_localise(tmp_path):
    from waferscope.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["explain", "--data", "synthetic:n=4,seed=6", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["model"] == "bundled (cnn_gradcam)"
    res = runner.invoke(app, ["explain", "--bundled", "cnn_distilled", "--data", "synthetic:n=4,seed=6",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["model"] == "bundled (cnn_distilled)"


def test_cli_explain_refuses_an_unknown_bundled_name_or_both_sources(tmp_path, capsys):
    from clitools import invoke

    code, _, err = invoke(capsys, "explain", "--bundled", "tiny", "--data", "synthetic:n=4,seed=6",
                          "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown bundled classifier 'tiny'" in err
    code, _, err = invoke(capsys, "explain", "--bundled", "cnn_gradcam", "--run", str(tmp_path), "--data",
                          "synthetic:n=4,seed=6", "--out", str(tmp_path / "b"))
    assert code == 2 and "not both" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
