"""Reverse-distillation detectors.

``reverse_distillation`` (ResNet-18 teacher: by default the wafer one on wafer maps, the
formula-driven one on images) and ``reverse_distillation_convnext`` (wafer ConvNeXt teacher, wafer
maps only; ConvNeXt-block bottleneck/decoder and per-channel feature standardisation are options,
measured in docs/detection_kd.md).

Training follows the paper (Adam, lr 0.005, betas (0.5, 0.999)); the anomaly map is the sum over the
three scales of 1 − cos, upsampled, Gaussian-smoothed (σ = 4 px per 256 px, the paper's σ = 4), and
the image score its maximum over the wafer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from waferscope.base import Interval, Options
from waferscope.errors import ConfigError
from waferscope.models.detectors.common import (TorchDetector, batch_slices, dataset_to_input, fit_loop,
                                                require_wafer_maps, seed_everything, training_normals)
from waferscope.models.detectors.kind_defaults import KindDefaults
from waferscope.models.detectors.reverse_distillation.loss import reverse_distillation_loss
from waferscope.models.detectors.reverse_distillation.torch_model import (FEATURE_NORMS, STYLES,
                                                                          ReverseDistillationModel)
from waferscope.models.detectors.stfpm.detector import (FastInferenceMixin, backbone_kwargs, build_backbone,
                                                        feature_pyramid)
from waferscope.registry import register


@register("reverse_distillation", kind="detector")
class ReverseDistillationDetector(KindDefaults, FastInferenceMixin, TorchDetector):
    """Reverse Distillation (Deng & Li 2022): a decoder student rebuilds a frozen encoder's features.

    Parameters
    ----------
    backbone
        ``"auto"``: by the data kind fitted, ``wafer_resnet18`` for wafer maps, ``formula_resnet18``
        for images (:func:`~waferscope.models.backbones.resolve_backbone`).
    pretrained
        ``"auto"`` (the weights shipped for the backbone), None (random init), ``"wafer"``,
        ``"formula"`` or a local torchvision checkpoint path.
    layers
    style
    n_blocks
    feature_norm
    input_size
        None: 64 for wafer maps, 128 for images.
    epochs, batch_size
    lr
    betas
    weight_decay
    augment, smoothing_sigma, predict_batch_size, jit, seed, progress

    Attributes
    ----------
    backbone_kwargs_, loss_history_, model_, resolved_
    threshold_, threshold_info_
    """

    _docstrings = {  # shared with RD-ConvNeXt
        "backbone": "Name of a registered backbone network (the frozen teacher).",
        "style": '``"resnet"`` (basic-block bottleneck and decoder) or ``"convnext"`` (LayerNorm ConvNeXt blocks).',
        "n_blocks": "Blocks per decoder stage.",
        "feature_norm": '``"none"``, ``"layernorm"`` or ``"channel"``: how teacher and student features are '
                        "normalised before comparing.",
        "betas": "Adam's betas.",
    }

    _label = "reverse-distillation"

    # None = by the kind of data fitted (KindDefaults); docs/detection.md, "Backbone detectors on images"
    _kind_defaults = {"input_size": {"wafer": 64, "image": 128}}
    # Rank among the image detectors by image AUROC on magnetic tile with the defaults (0.718;
    # docs/detection.md): after PatchCore, ReConPatch and texture_contrast.
    image_rank = 7

    _parameter_constraints = {
        "input_size": [Interval(int, 1), None], "style": [Options(*STYLES)], "feature_norm": [Options(*FEATURE_NORMS)], "n_blocks": [Interval(int, 1)]}

    def __init__(self, backbone: str = "auto", pretrained: str | None = "auto",
                 layers: Sequence[str] = ("layer1", "layer2", "layer3"), style: str = "resnet",
                 n_blocks: int = 2, feature_norm: str = "none", input_size: int | None = None, epochs: int = 6,
                 batch_size: int = 16, lr: float = 0.005, betas: Sequence[float] = (0.5, 0.999),
                 weight_decay: float = 0.0, augment: bool = True, smoothing_sigma: float = 4.0,
                 predict_batch_size: int = 256, jit: bool = True, seed: int = 0, progress: bool = True):
        self.backbone = backbone
        self.pretrained = pretrained
        self.layers = layers
        self.style = style
        self.n_blocks = n_blocks
        self.feature_norm = feature_norm
        self.input_size = input_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = betas
        self.weight_decay = weight_decay
        self.augment = augment
        self.smoothing_sigma = smoothing_sigma
        self.predict_batch_size = predict_batch_size
        self.jit = jit
        self.seed = seed
        self.progress = progress

    def _build(self, kwargs: dict, load_teacher: bool) -> ReverseDistillationModel:
        if self.style not in STYLES:
            raise ConfigError(f"unknown style {self.style!r}; choose one of {', '.join(STYLES)}")
        if self.feature_norm not in FEATURE_NORMS:
            raise ConfigError(f"unknown feature_norm {self.feature_norm!r}; choose one of {', '.join(FEATURE_NORMS)}")
        if len(self.layers) != 3:
            raise ConfigError(f"reverse distillation needs 3 encoder layers, got {list(self.layers)}")
        encoder = feature_pyramid(build_backbone(self._p("backbone"), self._p("pretrained"), kwargs, load=load_teacher),
                                  self.layers, frozen=True)
        info = encoder.extractor.feature_info(self.network_input_size())
        channels = [info[name][0] for name in self.layers]
        return ReverseDistillationModel(encoder, channels, self.style, int(self.n_blocks), self.feature_norm)

    def fit(self, dataset, **kwargs) -> "ReverseDistillationDetector":
        """Fit the bottleneck and decoder on the normal samples of ``dataset``; return ``self``."""
        normals = training_normals(dataset)
        self._resolve(normals.kind)
        seed_everything(self.seed)
        arch = backbone_kwargs(self._p("backbone"), self._p("pretrained"))
        model = self._build(arch, load_teacher=True)
        inputs = dataset_to_input(normals, self.network_input_size())
        if self.feature_norm == "channel":  # per-channel statistics of the teacher on the training normals
            with torch.no_grad():
                feats = [model.encode(torch.from_numpy(inputs[sl])) for sl in batch_slices(len(inputs), 256)]
            model.feature_norm.calibrate(feats)
        params = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)

        def step(x: torch.Tensor) -> torch.Tensor:
            return reverse_distillation_loss(*model.features(x))

        self.loss_history_ = fit_loop(params, step, inputs, epochs=int(self.epochs), batch_size=int(self.batch_size),
                                      lr=self.lr, seed=self.seed, augment=self.augment, optimizer=opt,
                                      desc=f"fit {self.registry_name}", progress=bool(self.progress), modules=[model])
        self.backbone_kwargs_ = arch
        self.model_ = model.eval()
        self._fast_model = None
        return self



@register("reverse_distillation_convnext", kind="detector")
class ReverseDistillationConvNeXtDetector(ReverseDistillationDetector):
    """RD with a ConvNeXt teacher (stages 1–3 at strides 4/8/16, like ResNet's layer1–3).

    Defaults are the best of the measured variants (docs/detection_kd.md): raw stage outputs, a
    BatchNorm/basic-block bottleneck and decoder, the paper's Adam settings. ``style="convnext"``
    (LayerNorm ConvNeXt-block bottleneck/decoder) and ``feature_norm="channel"`` measured worse.

    Wafer maps only: no ConvNeXt ships with image weights, and on device images it scored at chance
    with the wafer ConvNeXt and with a random one (docs/detection.md, "Backbone detectors on images");
    given images, fit and score raise one DataError naming the detectors that take them.

    Parameters
    ----------
    backbone
        ``"auto"``: ``wafer_convnext`` (:func:`~waferscope.models.backbones.resolve_backbone`).
    pretrained, layers, style, n_blocks, feature_norm
    input_size, epochs, batch_size, lr, betas, weight_decay
    augment, smoothing_sigma, predict_batch_size, jit, seed, progress

    Attributes
    ----------
    backbone_kwargs_, loss_history_, model_, resolved_
    threshold_, threshold_info_
    """

    _backbone_family = "convnext"
    _kind_defaults = {}
    _tags = {"input_kinds": ("wafer",)}

    def __init__(self, backbone: str = "auto", pretrained: str | None = "auto",
                 layers: Sequence[str] = ("stage1", "stage2", "stage3"), style: str = "resnet",
                 n_blocks: int = 2, feature_norm: str = "none", input_size: int = 64, epochs: int = 6,
                 batch_size: int = 16, lr: float = 0.005, betas: Sequence[float] = (0.5, 0.999),
                 weight_decay: float = 0.0, augment: bool = True, smoothing_sigma: float = 4.0,
                 predict_batch_size: int = 256, jit: bool = True, seed: int = 0, progress: bool = True):
        super().__init__(backbone, pretrained, layers, style, n_blocks, feature_norm, input_size, epochs,
                         batch_size, lr, betas, weight_decay, augment, smoothing_sigma, predict_batch_size, jit,
                         seed, progress)

    def fit(self, dataset, **kwargs) -> "ReverseDistillationConvNeXtDetector":
        """Fit on the normal wafer maps of ``dataset`` (images: a DataError); return ``self``."""
        require_wafer_maps(dataset, self.registry_name)
        return super().fit(dataset, **kwargs)

    def score(self, dataset):
        """Score wafer maps (images: a DataError naming the detectors that take them)."""
        require_wafer_maps(dataset, self.registry_name)
        return super().score(dataset)
