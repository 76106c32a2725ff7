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

Wafer maps only. On device images (the magnetic tile set) it scored 0.506 image AUROC with the wafer
teacher on 32-px RGB squares, and 0.594 with a PDN-S teacher distilled from the formula backbone on the
64-px aspect-kept grey canvas — both below a pixel z-score against the mean normal image (0.698), so it
refuses images with the list of detectors that take them (docs/detection.md, "Autoencoder, EfficientAD
and texture_knn on images").
"""

from __future__ import annotations

import torch

from waferscope.base import Interval, Options
from waferscope.errors import ConfigError
from waferscope.models.backbones import create_backbone
from waferscope.models.detectors.common import (TorchDetector, batch_slices, dataset_to_input, fit_loop,
                                                require_wafer_maps, seed_everything, training_normals)
from waferscope.models.detectors.efficientad.anomaly_map import map_quantiles
from waferscope.models.detectors.efficientad.loss import (autoencoder_loss, hard_feature_loss, penalty_loss,
                                                          student_autoencoder_loss)
from waferscope.models.detectors.efficientad.torch_model import AutoEncoder, EfficientADModel
from waferscope.models.detectors.stfpm.detector import FastInferenceMixin, backbone_kwargs, build_backbone
from waferscope.registry import register

PENALTIES = ("none", "noise")


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
    input_size
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
    loss_history_, model_
    teacher_kwargs_
        Construction kwargs of the teacher PDN, recorded so a saved run rebuilds it.
    threshold_, threshold_info_
    """

    _label = "EfficientAD"
    # wafer maps only: below the pixel z-score baseline on device images with either teacher (module docstring)
    _tags = {"input_kinds": ("wafer",)}
    _arch_key = "teacher_kwargs"
    # The teacher network is a backbone (as STFPM's and RD's are): `teacher` names a classifier to
    # distil from elsewhere. Old names still accepted for one release (issue 30).
    renamed_params = {"teacher": "backbone", "validation_fraction": "val_fraction"}

    _parameter_constraints = {
        "penalty": [Options(*PENALTIES)], "hard_quantile": [Interval(float, 0, 1)],
        "q_a": [Interval(float, 0, 1)], "q_b": [Interval(float, 0, 1)]}

    def __init__(self, backbone: str = "pdn_small", pretrained: str | None = "wafer", input_size: int = 32,
                 epochs: int = 10, batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-5,
                 hard_quantile: float = 0.999, penalty: str = "noise", q_a: float = 0.9, q_b: float = 0.995,
                 val_fraction: float = 0.1, augment: bool = True, smoothing_sigma: float = 0.0,
                 predict_batch_size: int = 128, jit: bool = True, seed: int = 0, progress: bool = True):
        self.backbone = backbone
        self.pretrained = pretrained
        self.input_size = input_size
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

    def _build(self, kwargs: dict, load_teacher: bool) -> EfficientADModel:
        if self.penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {self.penalty!r}; choose one of {', '.join(PENALTIES)}")
        teacher = build_backbone(self.backbone, self.pretrained, kwargs, load=load_teacher)
        size = int(self.input_size)
        with torch.no_grad():
            out = teacher.eval()(torch.zeros(1, 3, size, size))
        channels, grid = out.shape[1], out.shape[-1]
        student_kwargs = dict(kwargs, out_channels=2 * channels)
        student = create_backbone(self.backbone, **student_kwargs)
        return EfficientADModel(teacher, student, AutoEncoder(size, grid, channels), channels)

    def fit(self, dataset, **kwargs) -> "EfficientADDetector":
        """Fit the student and the autoencoder on the normal samples of ``dataset``; return ``self``."""
        require_wafer_maps(dataset, "efficientad")
        normals = training_normals(dataset)
        rng = seed_everything(self.seed)
        arch = backbone_kwargs(self.backbone, self.pretrained)
        model = self._build(arch, load_teacher=True)
        inputs = dataset_to_input(normals, int(self.input_size))
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
                loss = loss + penalty_loss(model.student(noise_images(len(x), x.shape[-1], gen))[:, :c])
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
        self.model_ = model.eval()
        self._fast_model = None
        return self

    def score(self, dataset):
        """Return the anomaly score and map of every wafer map (images: a DataError naming the image detectors)."""
        require_wafer_maps(dataset, "efficientad")
        return super().score(dataset)
