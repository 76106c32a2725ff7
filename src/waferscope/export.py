"""Deployment: export a trained classifier or detector to ONNX (optionally INT8) and run it with onnxruntime.

The exported graph starts after the resize: its input ``maps`` is an (N, S, S) ``uint8`` batch of
die states (0 no die, 1 pass, 2 fail) at the model's input size S, so a deployment only needs the
nearest-neighbour resize (:func:`waferscope.data.preprocess.resize_maps`). A classifier trained with
``resample="area"`` / ``orient="canonical"`` takes what
:func:`waferscope.data.preprocess.prepare_maps` gives instead ((N, S, S, 3) ``uint8`` no-die/pass/fail
fractions in the canonical view; both recorded in the metadata). Inside the graph:

- classifiers: one-hot encoding (the model's ``encoding``) → network → softmax → ``probabilities``
  (N, n_classes) over the classes stored in the model's metadata;
- detectors: ``onehot3`` → the detector's ``_predict_batch`` (networks, memory-bank distances...) →
  bilinear upsampling to S×S, Gaussian smoothing, off-wafer pixels set to 0 → ``scores`` (N,) and
  ``anomaly_maps`` (N, S, S), exactly what :class:`~waferscope.models.detectors.common.TorchDetector` does.

A model can override the generic wrapping with an ``export_module()`` method returning an
``nn.Module`` from the encoded float input to the same outputs.

INT8 (``quantize(..., mode="static")``) quantizes the convolutions (weights per channel, activations
calibrated on real or synthetic maps) as QDQ nodes with onnxruntime.quantization; ``mode="dynamic"``
quantizes Conv/MatMul/Gemm weights and computes activation ranges on the fly.
docs/benchmark.md records the measured speed-up and the change in scores and accuracy.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from waferscope.base import DetectionResult, load_run
from waferscope.errors import ConfigError, RunDirError, WaferscopeError

META_KEY = "waferscope"
OPSET = 17
FIXED_BATCH = 16


class ExportError(WaferscopeError):
    """A model that cannot be exported (not a torch model, images instead of wafer maps...)."""


# ---- graph construction -----------------------------------------------------------------------
def _onehot(x, encoding: str):
    import torch

    if x.dim() == 4:  # area fractions (N, S, S, 3) uint8 × 1/255: onehot3 (or onehot without no-die)
        from waferscope.data.preprocess import AREA_LEVELS

        f = x.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / AREA_LEVELS)
        return f if encoding == "onehot3" else f[:, 1:]
    if encoding == "onehot3":
        return torch.stack([x == 0, x == 1, x == 2], dim=1).to(torch.float32)
    if encoding == "onehot":
        return torch.stack([x == 1, x == 2], dim=1).to(torch.float32)
    if encoding == "single":
        return (x.to(torch.float32) / 2.0)[:, None]
    raise ExportError(f"unknown encoding {encoding!r}")


def _rot90(x, k: int):
    """np.rot90(x, k, axes=(-2, -1)) from transposes and flips (ONNX has no rot90)."""
    if k == 1:
        return x.transpose(-2, -1).flip(-2)
    if k == 2:
        return x.flip(-2).flip(-1)
    if k == 3:
        return x.transpose(-2, -1).flip(-1)
    return x


def input_size(est) -> int:
    """Return the estimator's integer ``input_size`` (as resolved at fit); an ExportError when it has none."""
    # a detector whose input size depends on the data kind resolved it at fit (network_input_size)
    size = est.network_input_size() if hasattr(est, "network_input_size") else est.get_params().get("input_size")
    if not isinstance(size, int):
        raise ExportError(f"{type(est).__name__} has no integer input_size")
    return size


def _module(est):
    from torch import nn

    # What cannot export is said first (a tree or SVM model has no input size either, which would
    # otherwise be the error it got): the model's declared tags say whether it exports.
    if not est.get_tags().onnx:
        raise ExportError(f"{est.registry_name}: only torch {est.registry_kind}s export to ONNX")
    custom = est.export_module()
    if est.registry_kind == "classifier" and not isinstance(custom or getattr(est, "network_", None), nn.Module):
        raise ExportError(f"{est.registry_name}: only torch classifiers (with a network_) export to ONNX")
    size = input_size(est)
    if est.registry_kind == "classifier":
        return _classifier_graph(est, custom), ["probabilities"], size
    return _detector_graph(est, custom, size), ["scores", "anomaly_maps"], size


def _classifier_graph(est, custom):
    """Return the module an exported classifier runs: one-hot input → probabilities (averaged over views with tta)."""
    import torch
    from torch import nn

    encoding = getattr(est, "encoding", "onehot3")
    net = custom or getattr(est, "network_", None)
    # The plain network_, not a model's own fast inference copy (whose input may differ, e.g. the
    # KD student's die-state stem): onnxruntime folds Conv-BN and fuses the one-hot itself.
    views = 8 if getattr(est, "tta", False) else 1  # test-time augmentation: the 8 rotations/flips

    class ClassifierGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def one_view(self, x):
            out = self.net(x)
            return out if custom is not None else torch.softmax(out.float(), dim=1)

        def forward(self, maps):
            x = _onehot(maps, encoding)  # (N, C, S, S): the views below turn the last two axes
            if views == 1:
                return self.one_view(x)
            total = 0
            for k in range(8):  # as preprocess.dihedral: rot90 k % 4 times, then flip if k ≥ 4
                view = _rot90(x, k % 4)
                total = total + self.one_view(torch.flip(view, dims=(-1,)) if k >= 4 else view)
            return total / 8.0

    return ClassifierGraph().eval()


def _detector_graph(est, custom, size: int):
    """Return the module an exported detector runs: die states → (scores, post-processed anomaly maps)."""
    import torch
    from torch import nn

    if getattr(est, "jit", False):
        # Trace the eager network, not the detector's own TorchScript copy (which cannot be traced
        # again); a shallow copy shares the fitted weights and leaves the caller's detector as it was.
        import copy

        est = copy.copy(est)
        est.jit = False
        est._fast_model = None
    from waferscope.models.detectors.common import gaussian_blur

    sigma = float(getattr(est, "smoothing_sigma", 0.0)) * size / 256.0
    holder = nn.ModuleList([m for m in vars(est).values() if isinstance(m, nn.Module)])

    class DetectorGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = holder  # registers the detector's networks so eval()/export see them

        def forward(self, maps):
            x = _onehot(maps, "onehot3")
            if custom is not None:
                return custom(x)
            scores, raw = est._predict_batch(x)
            raw = raw.float()
            if raw.ndim == 4:
                raw = raw[:, 0]
            if tuple(raw.shape[-2:]) != (size, size):
                raw = torch.nn.functional.interpolate(raw[:, None], size=(size, size), mode="bilinear",
                                                      align_corners=False)[:, 0]
            amap = gaussian_blur(raw, sigma) if sigma > 0 else raw
            valid = maps != 0
            amap = amap * valid.to(amap.dtype)
            if scores is None:  # the detector's own image-score rule (masked max, top-k mean...)
                scores = est._image_scores_t(amap, valid)
            return scores.float(), amap

    return DetectorGraph().eval()


def metadata(est) -> dict:
    """Return the metadata to store in an exported graph (kind, name, input size, encoding, classes, version)."""
    from waferscope import __version__

    doc = {"kind": est.registry_kind, "name": est.registry_name, "size": input_size(est),
           "encoding": getattr(est, "encoding", "onehot3"), "waferscope_version": __version__}
    for name, plain in (("resample", "nearest"), ("orient", "none")):
        if getattr(est, name, plain) != plain:  # older readers never see the keys of plain models
            doc[name] = getattr(est, name)
    if est.registry_kind == "classifier":
        doc["classes"] = [str(c) for c in est.classes_]
    return doc


def probe_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Round wafers with random fails: inputs to check an exported graph against torch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    on = np.hypot(yy, xx) < size / 2 - 0.5
    fails = rng.random((n, size, size)) < rng.uniform(0.02, 0.3, (n, 1, 1))
    return np.where(on, np.where(fails, 2, 1), 0).astype(np.uint8)


def graph_input(meta_or_est, maps) -> np.ndarray:
    """Map (any grid) → the graph's uint8 input.

    The model's resample and orientation (``metadata`` keys or estimator attributes;
    plain models: the nearest resize).
    """
    from waferscope.data.preprocess import prepare_maps

    get = meta_or_est.get if isinstance(meta_or_est, dict) else (lambda k, d: getattr(meta_or_est, k, d))
    size = int(meta_or_est["size"]) if isinstance(meta_or_est, dict) else input_size(meta_or_est)
    return prepare_maps(list(maps), size, get("resample", "nearest"), get("orient", "none"))


def _torch_outputs(module, maps: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(torch.from_numpy(maps))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _estimator_outputs(est, maps: np.ndarray) -> list[np.ndarray]:
    from waferscope.data.dataset import WaferDataset

    ds = WaferDataset.from_maps(list(maps))
    if est.registry_kind == "classifier":
        return [np.asarray(est.predict_proba(ds))]
    res = est.score(ds)
    return [np.asarray(res.scores, dtype=np.float32), np.stack(res.maps).astype(np.float32)]


def _onnx_outputs(path, maps: np.ndarray, batch: int | None) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a failing probe is expected (dynamic batch); we report it ourselves
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _run_session(sess, maps, batch or len(maps), batch)


def _run_session(sess, maps: np.ndarray, chunk: int, fixed: int | None) -> list[np.ndarray]:
    parts = []
    for i in range(0, len(maps), chunk):
        part = maps[i:i + chunk]
        n = len(part)
        if fixed and n < fixed:  # a graph traced at a fixed batch: pad with empty (no-die) maps
            part = np.concatenate([part, np.zeros((fixed - n,) + part.shape[1:], dtype=part.dtype)])
        parts.append([o[:n] for o in sess.run(None, {"maps": np.ascontiguousarray(part)})])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _trace(module, outputs, size, path, batch: int | None, prepare=lambda maps: maps) -> None:
    import torch

    example = torch.from_numpy(np.ascontiguousarray(prepare(probe_maps(batch or 2, size, seed=1))))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=OPSET, input_names=["maps"],
                          output_names=outputs,
                          dynamic_axes=None if batch else {n: {0: "batch"} for n in ["maps", *outputs]})


def export_onnx(est, path: str | Path, tolerance: float = 1e-4) -> Path:
    """Write ``est`` as an ONNX graph (uint8 maps in; probabilities or scores+maps out), atomically.

    The graph is checked against torch on probe wafers at another batch size than the one traced.
    Models whose code turns the batch size into a Python number (traced as a constant) fail that
    check with a dynamic batch; they are exported at a fixed batch of ``FIXED_BATCH`` instead, and
    :class:`OnnxModel` pads the last batch (recorded as ``batch`` in the metadata).
    """
    import onnx
    import torch

    est._check_fitted()
    for m in (v for v in vars(est).values() if isinstance(v, torch.nn.Module)):
        m.eval()
    module, outputs, size = _module(est)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        probe = probe_maps(2 * FIXED_BATCH + 3, size, seed=2)
        prepare = (lambda maps: graph_input(est, maps)) if est.registry_kind == "classifier" else (lambda maps: maps)
        expected = _torch_outputs(module, prepare(probe))
        # The wrapped graph must reproduce the estimator's own predictions, not only itself.
        reference = _estimator_outputs(est, probe)
        own_err = max(float(np.abs(a - b).max()) for a, b in zip(expected, reference))
        if own_err > tolerance:
            raise ExportError(f"{est.registry_name}: the generic ONNX graph differs from the model's own "
                              f"predictions by {own_err:.3g} (its scoring is not _predict_batch + _image_scores_t); "
                              "the model needs an export_module()")
        problem = ""
        for batch in (None, FIXED_BATCH):
            try:
                _trace(module, outputs, size, tmp, batch, prepare)
                got = _onnx_outputs(tmp, prepare(probe), batch)
                err = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
                if err <= tolerance:
                    break
                problem = f"ONNX and torch outputs differ by {err:.3g} (batch {batch or 'dynamic'})"
            except Exception as exc:  # exporter or runtime failure on this batch layout
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            raise ExportError(f"{est.registry_name}: the exported graph does not reproduce the model ({problem})")
        model = onnx.load(tmp)
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(dict(metadata(est), batch=batch, parity_max_abs_error=err))
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class _Calibration:
    """onnxruntime CalibrationDataReader over resized uint8 maps, in small batches."""

    def __init__(self, maps: np.ndarray, batch: int = FIXED_BATCH):
        n = len(maps) - len(maps) % batch or len(maps)  # whole batches only (fixed-batch graphs)
        self.batches = iter([{"maps": np.ascontiguousarray(maps[i:i + batch])} for i in range(0, n, batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize(src: str | Path, dst: str | Path, mode: str = "static", calibration=None) -> Path:
    """INT8 copy of an exported model.

    ``static``: QDQ int8 weights and activations, ranges calibrated on ``calibration`` (a
    WaferDataset); ``dynamic``: int8 weights, activations quantized on the fly.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from waferscope.data.preprocess import resize_maps

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".onnx", dir=dst.parent if dst.parent.exists() else None)
    os.close(fd)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        elif mode == "static":
            if calibration is None or not len(calibration):
                raise ConfigError("static INT8 quantization needs calibration maps")
            maps = graph_input(meta, calibration.maps) if meta.get("kind") == "classifier" else \
                resize_maps(calibration.maps, int(meta["size"]))
            prepared = src
            try:  # shape inference + graph clean-up, as onnxruntime recommends before static quantization
                from onnxruntime.quantization.shape_inference import quant_pre_process

                prepared = Path(tmp + ".pre.onnx")
                quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            except Exception:  # an older onnxruntime or a graph it cannot pre-process: quantize as is
                prepared = src
            quantize_static(str(prepared), tmp, _Calibration(maps, meta.get("batch") or FIXED_BATCH), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            # convolutions only: they hold the compute; quantizing the distance and
                            # softmax arithmetic after them costs far more accuracy than it saves time
                            op_types_to_quantize=["Conv"])
            if prepared != src:
                prepared.unlink(missing_ok=True)
        else:
            raise ConfigError(f"unknown INT8 mode {mode!r}; choose static or dynamic")
        model = onnx.load(tmp)
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(dict(meta, int8=mode))
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def read_metadata(path: str | Path) -> dict:
    """Return the waferscope metadata of an exported ``.onnx`` file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError...
        raise ExportError(f"not an ONNX model ({type(exc).__name__})", path) from None
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ExportError("not a waferscope export (no waferscope metadata in the ONNX file)", path)
    return json.loads(props[META_KEY])


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "onnx", int8: str | None = None,
               calibration=None) -> Path:
    """Return the ``waferscope export`` command: a run directory → an ONNX file (INT8 with ``int8``)."""
    if fmt != "onnx":
        raise ConfigError(f"unknown export format {fmt!r}; supported: onnx")
    est = load_run(run_dir)
    try:
        if int8 is None:
            return export_onnx(est, out)
        with tempfile.TemporaryDirectory() as tmpdir:
            fp32 = export_onnx(est, Path(tmpdir) / "model.onnx")
            return quantize(fp32, out, int8, calibration)
    except ExportError as exc:
        raise RunDirError(exc.problem, run_dir) from None


# ---- inference --------------------------------------------------------------------------------
class OnnxModel:
    """An exported model run by onnxruntime, with the estimator's prediction methods.

    ``predict_proba`` / ``predict`` for classifiers, ``score`` (also ``predict``) for detectors.
    """

    def __init__(self, path: str | Path, threads: int | None = None, batch_size: int = 256):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError("no such ONNX file", self.path)
        self.meta = read_metadata(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.kind = self.meta["kind"]
        self.size = int(self.meta["size"])
        self.classes_ = self.meta.get("classes")
        self.batch_size = batch_size

    def run_maps(self, maps_u8: np.ndarray) -> list[np.ndarray]:
        """Run the graph on an (N, S, S) uint8 batch; outputs concatenated over internal batches."""
        fixed = self.meta.get("batch")
        return _run_session(self.session, np.asarray(maps_u8, dtype=np.uint8), fixed or self.batch_size, fixed)

    def _resized(self, dataset) -> np.ndarray:
        from waferscope.data.preprocess import resize_maps

        if dataset.kind != "wafer":
            raise ExportError("exported models take wafer maps (die states), not images")
        if self.kind == "classifier":
            return graph_input(self.meta, dataset.maps)
        return resize_maps(dataset.maps, self.size)

    def predict_proba(self, dataset) -> np.ndarray:
        """Return the class probabilities of every map from the exported classifier."""
        if self.kind != "classifier":
            raise ExportError(f"{self.path.name} holds a detector: use score()")
        return self.run_maps(self._resized(dataset))[0]

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every map from the exported detector."""
        from waferscope.models.detectors.common import maps_to_input_resolution

        if self.kind != "detector":
            raise ExportError(f"{self.path.name} holds a classifier: use predict_proba()")
        scores, maps = self.run_maps(self._resized(dataset))
        return DetectionResult(scores=scores.astype(np.float64), maps=maps_to_input_resolution(maps, dataset))

    def predict(self, dataset):
        """Return the predicted classes (a classifier) or the detection result (a detector)."""
        if self.kind == "detector":
            return self.score(dataset)
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(dataset).argmax(1)]
