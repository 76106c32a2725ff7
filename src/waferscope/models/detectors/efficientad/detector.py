"""EfficientAD detector (``efficientad``).

PDN-S teacher distilled from the wafer backbone, PDN student, autoencoder, quantile-normalised map
average.

Differences from the paper, each forced by the wafer domain (see docs/detection_kd.md):

- teacher pre-training: the shipped PDN-S (``src/waferscope/weights/pdn_small.safetensors``, made by
  ``scripts/distill_pdn_teacher.py``) was distilled from the wafer ResNet-18's layer2+layer3 features
  on synthetic wafer maps, in place of WideResNet-101 features on ImageNet;
- penalty: the paper's ImageNet penalty ``mean S(P)²`` needs a set of *unrelated* images.
  ``penalty="noise"`` uses die-state noise images (each pixel an independent random state, no wafer outline,
  no defect pattern; the default: +2 points image AUROC on the dev maps); ``penalty="none"``
  disables the term;
- augmentation: colour jitter means nothing for die states, so every branch sees random dihedral
  rotations/flips instead;
- input 32×32 with the padded PDN (8×8 output grid, each cell seeing a 33-px patch).

Images (issue 29) are not wafer maps, and a teacher distilled from wafer-map features does not describe
grey-level texture (0.51 image AUROC on the magnetic tile set). For images:

- teacher: ``pretrained="auto"`` (the default) takes a PDN-S distilled from the shipped
  ``formula_resnet18`` on procedural grey textures (``weights/efficientad_teacher/pdn_small_formula``,
  ``scripts/distill_pdn_teacher.py --domain formula``; no real image, no download) for images and the
  wafer one for wafer maps. The choice by data kind lives here, not in ``models.backbones``, because the
  formula PDN is EfficientAD's own teacher, not a general backbone;
- input: the aspect-kept canvas (:func:`~waferscope.models.detectors.common.image_canvas`, grey, each
  image standardised by its own mean/std, reflect-padded), mapped by ``z / 4 + 0.5`` as the teacher was
  distilled, at ``image_size`` (the teacher's distillation size by default); maps are scored only inside
  the image box and cropped back to it;
- penalty: ``"noise"`` uses grey noise images (white noise blurred at a random scale, standardised the
  same way) in place of die-state noise.
"""

from __future__ import annotations

import torch

from importlib import resources
from pathlib import Path

import numpy as np

from waferscope.base import DetectionResult, Interval, Options
from waferscope.errors import ConfigError
from waferscope.models.backbones import create_backbone
from waferscope.models.detectors.common import (TorchDetector, batch_slices, canvas_maps_to_input, dataset_to_input,
                                                fit_loop, gaussian_blur, image_canvas, seed_everything,
                                                training_normals)
from waferscope.models.detectors.efficientad.anomaly_map import map_quantiles
from waferscope.models.detectors.efficientad.loss import (autoencoder_loss, hard_feature_loss, penalty_loss,
                                                          student_autoencoder_loss)
from waferscope.models.detectors.efficientad.torch_model import AutoEncoder, EfficientADModel
from waferscope.models.detectors.stfpm.detector import (FastInferenceMixin, backbone_kwargs, build_backbone,
                                                       frozen_for_inference)
from waferscope.registry import register

PENALTIES = ("none", "noise")


def formula_teacher_path() -> Path:
    """EfficientAD's PDN-S teacher for images (distilled from ``formula_resnet18``; may not exist)."""
    return Path(str(resources.files("waferscope") / "weights" / "efficientad_teacher" / "pdn_small_formula.safetensors"))


def formula_teacher_info() -> dict:
    """Return the JSON beside the image teacher: construction kwargs, input size, provenance ({} if none)."""
    import json

    path = formula_teacher_path().with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def image_input(canvas) -> np.ndarray:
    """(N, 3, S, S) network input of an image canvas: the per-image z-scores mapped by z / 4 + 0.5.

    The teacher was distilled on procedural images standardised and mapped the same way.
    """
    return np.repeat(canvas.x / 4.0 + 0.5, 3, axis=1).astype(np.float32)


def grey_noise_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) penalty images for the image path: white noise blurred at a random scale (0–3 px),
    each standardised and mapped as :func:`image_input` — textures no normal image has."""
    out = torch.empty(n, size, size)
    noise = torch.randn(n, size, size, generator=generator)
    for i, sigma in enumerate((3.0 * torch.rand(n, generator=generator)).tolist()):
        z = gaussian_blur(noise[i:i + 1], sigma)[0]
        out[i] = (z - z.mean()) / (z.std() + 1e-6)
    return (out / 4.0 + 0.5)[:, None].expand(n, 3, size, size).contiguous()


def noise_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) one-hot die-state noise: per image random state probabilities, per pixel a draw."""
    probs = torch.rand(n, 3, 1, 1, generator=generator).expand(n, 3, size, size).permute(0, 2, 3, 1).reshape(-1, 3)
    states = torch.multinomial(probs + 1e-3, 1, generator=generator).view(n, size, size)
    return torch.nn.functional.one_hot(states, 3).permute(0, 3, 1, 2).float()


@register("efficientad", kind="detector")
class EfficientADDetector(FastInferenceMixin, TorchDetector):
    """EfficientAD (Batzner et al. 2024): a PDN student and an autoencoder regress a frozen PDN teacher.

    Parameters
    ----------
    backbone
        Registered PDN backbone the teacher is taken from.
    pretrained
        ``"auto"``: for images EfficientAD's PDN-S distilled from the formula backbone (``backbone`` must be
        ``pdn_small``), for wafer maps the shipped wafer PDN-S; otherwise as every backbone (``"wafer"``,
        a checkpoint path, None for random init).
    input_size
    image_size
        Side of the image canvas (aspect kept, reflect-padded) for images; None: the image teacher's
        distillation size.
    epochs, batch_size
    lr
    weight_decay
    hard_quantile
        Quantile above which a teacher–student feature distance counts in the hard-feature loss.
    penalty
        ``"noise"`` (penalise the student on die-state noise images) or ``"none"``.
    q_a
        Lower quantile of the map normalisation (the paper's 0.9).
    q_b
        Upper quantile of the map normalisation (the paper's 0.995).
    val_fraction
        Share of the normal maps held out to measure those quantiles.
    augment, smoothing_sigma, predict_batch_size, jit, seed, progress

    Attributes
    ----------
    input_kind_
        ``"wafer"`` or ``"image"``: the kind of data fitted on.
    loss_history_, model_
    net_size_
        The network input side the model was built for (``input_size`` or ``image_size``).
    teacher_kwargs_
        Construction kwargs of the teacher PDN, recorded so a saved run rebuilds it.
    threshold_, threshold_info_
    """

    _label = "EfficientAD"
    _arch_key = "teacher_kwargs"
    # The teacher network is a backbone (as STFPM's and RD's are): `teacher` names a classifier to
    # distil from elsewhere. Old names still accepted for one release (issue 30).
    renamed_params = {"teacher": "backbone", "validation_fraction": "val_fraction"}

    _parameter_constraints = {
        "penalty": [Options(*PENALTIES)], "hard_quantile": [Interval(float, 0, 1)],
        "q_a": [Interval(float, 0, 1)], "q_b": [Interval(float, 0, 1)]}

    def __init__(self, backbone: str = "pdn_small", pretrained: str | None = "auto", input_size: int = 32,
                 image_size: int | None = None, epochs: int = 10, batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-5,
                 hard_quantile: float = 0.999, penalty: str = "noise", q_a: float = 0.9, q_b: float = 0.995,
                 val_fraction: float = 0.1, augment: bool = True, smoothing_sigma: float = 0.0,
                 predict_batch_size: int = 128, jit: bool = True, seed: int = 0, progress: bool = True):
        self.backbone = backbone
        self.pretrained = pretrained
        self.input_size = input_size
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.hard_quantile = hard_quantile
        self.penalty = penalty
        self.q_a = q_a
        self.q_b = q_b
        self.val_fraction = val_fraction
        self.augment = augment
        self.smoothing_sigma = smoothing_sigma
        self.predict_batch_size = predict_batch_size
        self.jit = jit
        self.seed = seed
        self.progress = progress

    def _teacher_source(self, kind: str):
        """``pretrained`` resolved for data of ``kind``: ("auto" → the image teacher's file or "wafer")."""
        if self.pretrained != "auto":
            return self.pretrained
        if kind != "image":
            return "wafer"
        if self.backbone != "pdn_small" or not formula_teacher_path().is_file():
            raise ConfigError(f"efficientad: pretrained='auto' on images needs backbone='pdn_small' (its image "
                              f"teacher is a PDN-S distilled from formula_resnet18), got {self.backbone!r}; pass "
                              "pretrained=None or a checkpoint path for another backbone")
        return formula_teacher_path()

    def _teacher_kwargs(self, source) -> dict:
        if isinstance(source, Path) and source == formula_teacher_path():
            return dict(formula_teacher_info().get("kwargs", {}))
        return backbone_kwargs(self.backbone, source)

    def _build(self, kwargs: dict, load_teacher: bool, source=None, size: int | None = None) -> EfficientADModel:
        if self.penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {self.penalty!r}; choose one of {', '.join(PENALTIES)}")
        teacher = build_backbone(self.backbone, source if source is not None else self.pretrained, kwargs,
                                 load=load_teacher)
        size = int(size if size is not None else getattr(self, "net_size_", self.input_size))
        with torch.no_grad():
            out = teacher.eval()(torch.zeros(1, 3, size, size))
        channels, grid = out.shape[1], out.shape[-1]
        student_kwargs = dict(kwargs, out_channels=2 * channels)
        student = create_backbone(self.backbone, **student_kwargs)
        return EfficientADModel(teacher, student, AutoEncoder(size, grid, channels), channels)

    def _image_size(self) -> int:
        if self.image_size is not None:
            return int(self.image_size)
        return int(formula_teacher_info().get("input_size", 64))

    def _canvas(self, dataset):
        return image_canvas(dataset, int(self.net_size_), "image")

    def fit(self, dataset, **kwargs) -> "EfficientADDetector":
        """Fit the student and the autoencoder on the normal samples of ``dataset``; return ``self``."""
        normals = training_normals(dataset)
        rng = seed_everything(self.seed)
        kind = "image" if normals.kind == "image" else "wafer"
        source = self._teacher_source(kind)
        arch = self._teacher_kwargs(source)
        size = self._image_size() if kind == "image" else int(self.input_size)
        model = self._build(arch, load_teacher=True, source=source, size=size)
        inputs = image_input(image_canvas(normals, size, "image")) if kind == "image" else \
            dataset_to_input(normals, size)
        order = rng.permutation(len(inputs))
        n_val = int(round(len(inputs) * float(self.val_fraction))) if len(inputs) > 1 else 0
        val, train = inputs[order[:n_val]], inputs[order[n_val:]]
        if n_val == 0:
            val = train  # too few samples to hold any out: quantiles from the training maps
        with torch.no_grad():  # teacher channel statistics on the training normals (paper, Alg. 1)
            feats = torch.cat([model.teacher(torch.from_numpy(train[sl])) for sl in batch_slices(len(train), 256)])
            model.teacher_mean.copy_(feats.mean((0, 2, 3)).view(1, -1, 1, 1))
            model.teacher_std.copy_(feats.std((0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1))
        params = list(model.student.parameters()) + list(model.autoencoder.parameters())
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(int(self.seed))
        c = model.channels

        def step(x: torch.Tensor) -> torch.Tensor:
            t = model.teacher_features(x)
            s = model.student(x)
            a = model.autoencoder(x)
            loss = hard_feature_loss(t, s[:, :c], float(self.hard_quantile))
            if self.penalty == "noise":
                noise = (grey_noise_images if kind == "image" else noise_images)(len(x), x.shape[-1], gen)
                loss = loss + penalty_loss(model.student(noise)[:, :c])
            return loss + autoencoder_loss(t, a) + student_autoencoder_loss(a, s[:, c:])

        epochs = int(self.epochs)
        main = max(1, int(round(0.95 * epochs))) if epochs > 1 else epochs
        common = dict(batch_size=int(self.batch_size), lr=self.lr, augment=self.augment, optimizer=opt,
                      progress=bool(self.progress), modules=[model])
        history = fit_loop(params, step, train, epochs=main, seed=self.seed, desc="fit efficientad", **common)
        if epochs - main > 0:  # the paper's lr × 0.1 for the last 5 % of the steps
            for group in opt.param_groups:
                group["lr"] = self.lr * 0.1
            history += fit_loop(params, step, train, epochs=epochs - main, seed=self.seed + 1,
                                desc="fit efficientad (lr/10)", **common)
        self.loss_history_ = history
        model.eval()
        with torch.inference_mode():
            raw = [model.raw_maps(torch.from_numpy(val[sl])) for sl in batch_slices(len(val), 256)]
        st = torch.cat([r[0] for r in raw])
        ae = torch.cat([r[1] for r in raw])
        q = [*map_quantiles(st, self.q_a, self.q_b), *map_quantiles(ae, self.q_a, self.q_b)]
        model.quantiles.copy_(torch.tensor(q, dtype=torch.float32))
        self.teacher_kwargs_ = arch
        self.net_size_ = size
        self.input_kind_ = kind
        self.model_ = model.eval()
        self._fast_model = None
        return self

    def _network(self):
        if not getattr(self, "jit", False):
            return self.model_
        if self._fast_model is None:  # traced at the size the model was built for
            self._fast_model = frozen_for_inference(self.model_, int(self.net_size_))
        return self._fast_model

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every sample; images on their aspect-kept canvas."""
        if getattr(self, "input_kind_", "wafer") != "image" or dataset.kind != "image":
            return super().score(dataset)
        self._check_fitted()
        canvas = self._canvas(dataset)
        scores, maps = self.score_input(image_input(canvas), canvas.valid)
        return DetectionResult(scores=scores, maps=canvas_maps_to_input(maps, canvas, dataset))

    def _state(self):
        tensors, extras = super()._state()
        return tensors, dict(extras, net_size=int(self.net_size_), input_kind=self.input_kind_)

    def _load_state(self, tensors, extras) -> None:
        # runs saved before the image path existed were built at input_size for wafer maps
        self.net_size_ = int(extras.get("net_size", self.input_size))
        self.input_kind_ = str(extras.get("input_kind", "wafer"))
        super()._load_state(tensors, extras)

