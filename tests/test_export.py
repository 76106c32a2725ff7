"""ONNX export: the graph (uint8 maps → one-hot → network → outputs) reproduces PyTorch, INT8 runs,
and bad input gives one clear error. Fixture models are tiny networks defined here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from waferscope import registry
from waferscope.base import Classifier
from waferscope.data.dataset import WaferDataset
from waferscope.data.preprocess import encode, resize_maps
from waferscope.errors import ConfigError, RunDirError
from waferscope.models.detectors.common import TorchDetector

SIZE = 16


def _net(out_ch: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, out_ch))


@registry.register("export-test-cnn", kind="classifier")
class TinyCNN(Classifier):
    _tags = {"onnx": True}  # a torch network_: exports like the package's CNNs

    def __init__(self, input_size: int = SIZE, encoding: str = "onehot3"):
        self.input_size = input_size
        self.encoding = encoding

    def fit(self, dataset, **kwargs):
        self.classes_ = sorted(set(dataset.labels.astype(str)))
        self.network_ = _net(len(self.classes_)).eval()
        return self

    def predict_proba(self, dataset):
        x = torch.from_numpy(encode(resize_maps(dataset.maps, self.input_size), self.encoding))
        with torch.no_grad():
            return torch.softmax(self.network_(x), 1).numpy()

    def _state(self):
        return {f"network.{k}": v for k, v in self.network_.state_dict().items()}, {"classes": self.classes_}

    def _load_state(self, tensors, extras):
        self.classes_ = extras["classes"]
        self.network_ = _net(len(self.classes_))
        self.network_.load_state_dict({k[8:]: v for k, v in tensors.items()})
        self.network_.eval()


@registry.register("export-test-detector", kind="detector")
class TinyDetector(TorchDetector):
    """Feature distance to the mean normal feature map; ``python_batch`` uses the batch size as a
    Python number (as some real detectors do), which a dynamic-batch trace cannot follow."""

    def __init__(self, input_size: int = SIZE, smoothing_sigma: float = 8.0, python_batch: bool = False):
        self.input_size = input_size
        self.smoothing_sigma = smoothing_sigma
        self.python_batch = python_batch
        self.progress = False

    def fit(self, dataset, **kwargs):
        from waferscope.models.detectors.common import dataset_to_input

        self.features_ = nn.Sequential(*list(_net(4).children())[:4]).eval()
        with torch.no_grad():
            self.mean_ = self.features_(torch.from_numpy(dataset_to_input(dataset.normal(), self.input_size))).mean(0)
        return self

    def _predict_batch(self, x):
        f = self.features_(x)
        if self.python_batch:
            rows = torch.arange(len(x))  # a Python int: a constant in the traced graph
            f = f[rows]
        return None, ((f - self.mean_) ** 2).sum(1)

    def _state(self):
        return {}, {}


def wafers(n: int, seed: int) -> WaferDataset:
    rng = np.random.default_rng(seed)
    maps, labels = [], []
    for i in range(n):
        h, w = rng.integers(20, 30, 2)
        yy, xx = np.mgrid[:h, :w]
        on = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 < 1
        label = ("none", "Center", "Edge-Ring")[i % 3]
        p = 0.03 + 0.5 * (label == "Center") * (np.hypot(yy - h / 2, xx - w / 2) < 4)
        maps.append(np.where(on, np.where(rng.random((h, w)) < p, 2, 1), 0).astype(np.uint8))
        labels.append(label)
    return WaferDataset.from_maps(maps, labels)


def test_classifier_onnx_matches_torch(tmp_path):
    from waferscope.export import OnnxModel, export_onnx

    data = wafers(40, 0)
    est = TinyCNN().fit(data)
    model = OnnxModel(export_onnx(est, tmp_path / "cnn.onnx"), batch_size=7)
    assert model.kind == "classifier" and model.classes_ == est.classes_ and model.size == SIZE
    np.testing.assert_allclose(model.predict_proba(data), est.predict_proba(data), atol=1e-4)
    assert (model.predict(data) == est.predict(data)).all()
    assert model.meta["batch"] is None  # a dynamic batch axis


@pytest.mark.parametrize("python_batch, fixed", [(False, None), (True, 16)])
def test_detector_onnx_matches_torch(tmp_path, python_batch, fixed):
    from waferscope.export import OnnxModel, export_onnx

    data = wafers(37, 1)
    est = TinyDetector(python_batch=python_batch).fit(data)
    model = OnnxModel(export_onnx(est, tmp_path / "det.onnx"))
    assert model.meta["batch"] == fixed
    want, got = est.score(data), model.score(data)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    for a, b in zip(got.maps, want.maps):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_cli_export_run_dir_fp32_and_int8(tmp_path):
    from typer.testing import CliRunner

    from waferscope.cli.main import app
    from waferscope.export import OnnxModel

    data = wafers(30, 2)
    est = TinyCNN().fit(data)
    run = est.save(tmp_path / "run")
    np.savez(tmp_path / "calib.npz", maps_flat=np.concatenate([m.ravel() for m in data.maps]),
             shapes=np.array([m.shape for m in data.maps]), labels=data.labels.astype(str))
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--run", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    for mode in ("static", "dynamic"):
        out = tmp_path / f"m_{mode}.onnx"
        res = runner.invoke(app, ["export", "--run", str(run), "--int8", "--int8-mode", mode,
                                  "--calibration", str(tmp_path / "calib.npz"), "--out", str(out)])
        assert res.exit_code == 0, res.output
        q = OnnxModel(out)
        assert q.meta["int8"] == mode
        proba = q.predict_proba(data)
        np.testing.assert_allclose(proba.sum(1), 1, atol=1e-3)
        # INT8 moves probabilities a little, not a lot (measured on real models: docs/benchmark.md).
        assert np.abs(proba - est.predict_proba(data)).max() < 0.1


def test_cli_export_bundled_by_name(tmp_path, capsys):
    """`--bundled NAME` exports a shipped model without knowing where the package keeps it."""
    from clitools import invoke
    from waferscope.export import OnnxModel
    from waferscope.models.classifiers import load_default

    out = tmp_path / "default.onnx"
    code, _, err = invoke(capsys, "export", "--bundled", "cnn_distilled", "--out", out)
    assert code == 0, err
    data = wafers(12, 4)
    np.testing.assert_allclose(OnnxModel(out).predict_proba(data),
                               load_default("cnn_distilled").predict_proba(data), atol=1e-4)
    for args, message in [(["--bundled", "fast"], "unknown bundled model 'fast'"),
                          (["--bundled", "gbm"], "only torch classifiers"),
                          ([], "give --run RUN or --bundled NAME"),
                          (["--bundled", "gbm", "--run", tmp_path], "give --run RUN or --bundled NAME")]:
        code, _, err = invoke(capsys, "export", *args, "--out", tmp_path / "x.onnx")
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_export_errors(tmp_path):
    from waferscope.export import ExportError, OnnxModel, export_onnx, export_run

    with pytest.raises(RunDirError, match="not a run directory"):
        export_run(tmp_path / "nothing", tmp_path / "x.onnx")
    est = TinyCNN().fit(wafers(9, 3))
    with pytest.raises(ConfigError, match="supported: onnx"):
        export_run(est.save(tmp_path / "run"), tmp_path / "x.onnx", fmt="tflite")
    del est.network_
    with pytest.raises(ExportError, match="only torch classifiers"):
        export_onnx(est, tmp_path / "x.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="bad.onnx"):
        OnnxModel(tmp_path / "bad.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_in_graph_rotations_match_the_augmentation():
    """Test-time augmentation inside the graph uses transposes/flips (ONNX has no rot90); they must
    be preprocess.dihedral's 8 views."""
    from waferscope.data.preprocess import dihedral
    from waferscope.export import _rot90

    x = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    for k in range(8):
        view = _rot90(torch.from_numpy(x), k % 4)
        view = torch.flip(view, dims=(-1,)) if k >= 4 else view
        np.testing.assert_array_equal(view.numpy(), dihedral(x, k, axes=(1, 2)))


def test_stfpm_with_its_traced_scoring_copy_exports(tmp_path):
    """STFPM scores through its own TorchScript copy; the exporter must trace the eager network."""
    import torch

    from waferscope import registry
    from waferscope.data.synthetic import generate
    from waferscope.export import OnnxModel, export_onnx

    torch.set_num_threads(1)
    det = registry.create("stfpm", "detector", pretrained=None, epochs=1, progress=False)
    det.fit(generate(n=40, seed=1, classes=["none"]))
    test = generate(n=6, seed=2)
    path = export_onnx(det, tmp_path / "stfpm.onnx")
    assert det.jit  # the caller's detector is untouched
    np.testing.assert_allclose(OnnxModel(path).score(test).scores, det.score(test).scores, atol=1e-4)


def test_bundled_autoencoder_exports_with_its_topk_score(tmp_path):
    """The default detector scores by the mean of the top 2 % of its map, not the maximum: the graph
    must carry that rule (a full sort when traced) and match the detector's own scores."""
    from waferscope.data.synthetic import generate
    from waferscope.export import OnnxModel, export_onnx
    from waferscope.models.detectors import load_default

    torch.set_num_threads(1)
    det = load_default("autoencoder")
    det.progress = False
    test = generate(n=24, seed=5)
    model = OnnxModel(export_onnx(det, tmp_path / "ae.onnx"))
    want, got = det.score(test), model.score(test)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    np.testing.assert_allclose(got.maps[3], want.maps[3], atol=1e-4)


@pytest.mark.parametrize("name, params", [
    ("reverse_distillation", dict(pretrained=None, epochs=1, n_blocks=1)),
    ("efficientad", dict(pretrained=None, epochs=1, input_size=32)),
    ("reconpatch", dict(epochs=1, max_train_patches=2_000)),
])
def test_more_detectors_export(tmp_path, name, params):
    """RD (its own TorchScript copy), EfficientAD (quantile-normalised maps of two branches) and
    ReConPatch (memory-bank kNN on modulated features) export through the generic graph."""
    from waferscope.data.synthetic import generate
    from waferscope.export import OnnxModel, export_onnx

    torch.set_num_threads(1)
    det = registry.create(name, "detector", progress=False, **params)
    det.fit(generate(n=40, seed=1, classes=["none"]))
    test = generate(n=19, seed=2)
    model = OnnxModel(export_onnx(det, tmp_path / f"{name}.onnx"))
    want, got = det.score(test), model.score(test)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=1e-4)
