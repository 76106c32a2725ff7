"""STFPM detector: fit on normal maps, score → image scores and anomaly maps at input resolution.

Defaults: the teacher by data kind (``backbone="auto"``): on wafer maps the shipped wafer-domain
ResNet-18 (``wafer_resnet18``, half width, small-input stem) at 64×64 input (layer1–3 maps of 16/8/4
cells), on images the shipped formula-driven ResNet-18 at 128 px; layers 1–3, product fusion
(paper), SGD(lr 0.4, momentum 0.9, wd 1e-4) as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import torch

from waferscope.base import Interval, Options
from waferscope.errors import ConfigError
from waferscope.models.backbones import SHIPPED_DOMAINS, FeatureExtractor, create_backbone, wafer_weights_info
from waferscope.models.detectors.common import (TorchDetector, dataset_to_input, fit_loop, require_wafer_maps,
                                                seed_everything, training_normals)
from waferscope.models.detectors.kind_defaults import KindDefaults
from waferscope.models.detectors.stfpm.anomaly_map import FUSIONS
from waferscope.models.detectors.stfpm.loss import stfpm_loss
from waferscope.models.detectors.stfpm.torch_model import STFPMModel
from waferscope.registry import register


def backbone_kwargs(name: str, pretrained) -> dict:
    """Return the construction kwargs of a backbone (those recorded beside shipped weights, if used)."""
    shipped = pretrained is True or (isinstance(pretrained, str) and pretrained in SHIPPED_DOMAINS)
    return dict(wafer_weights_info(name).get("kwargs", {})) if shipped else {}


def build_backbone(name: str, pretrained, kwargs: dict | None = None, load: bool = True) -> torch.nn.Module:
    """Return the backbone, with its pretrained weights when ``load`` (a reloaded run restores them itself)."""
    kwargs = backbone_kwargs(name, pretrained) if kwargs is None else kwargs
    if load and pretrained not in (None, False, "", "none"):
        return create_backbone(name, pretrained=pretrained, **kwargs)
    return create_backbone(name, **kwargs)


def feature_pyramid(backbone: torch.nn.Module, layers: Sequence[str], frozen: bool) -> torch.nn.Module:
    """Return a module returning the list of the named layers' maps."""

    class Pyramid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.extractor = FeatureExtractor(backbone, layers=list(layers), frozen=frozen)

        def forward(self, x):
            return list(self.extractor(x).values())

    return Pyramid()


def frozen_for_inference(model: torch.nn.Module, input_size: int) -> torch.jit.ScriptModule:
    """Trace, freeze and optimise a fitted network for CPU inference.

    Freezing folds every BatchNorm into its convolution and fuses conv+ReLU (measured 1.2–1.6× faster
    on 2 cores, identical maps to ~1e-6). The traced copy is a cache: it is never saved.
    """
    import warnings

    example = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


class FastInferenceMixin:
    """What the KD detectors share.

    ``_predict_batch`` through a traced, frozen copy of ``model_`` when ``jit`` is set, and
    persistence of ``model_`` with the architecture it was built from (stored under
    ``_arch_key``; ``_build(arch, load_teacher=False)`` rebuilds it for loading) and, for a
    :class:`KindDefaults` detector, with what its data-kind defaults resolved to.
    """

    _fast_model = None
    _arch_key = "backbone_kwargs"
    _label = "detector"

    def _state(self):
        extras = {self._arch_key: getattr(self, self._arch_key + "_"), "loss_history": self.loss_history_}
        if isinstance(self, KindDefaults):
            extras["resolved"] = self.resolved_
        return state_tensors(self.model_), extras

    def _load_state(self, tensors, extras) -> None:
        if isinstance(self, KindDefaults):
            self._restore_resolved(extras)
        arch = dict(extras.get(self._arch_key, {}))
        setattr(self, self._arch_key + "_", arch)
        self.loss_history_ = list(extras.get("loss_history", []))
        model = self._build(arch, load_teacher=False)
        load_tensors(model, tensors, self._label)
        self.model_ = model.eval()
        self._fast_model = None

    def _network(self):
        if not getattr(self, "jit", False):
            return self.model_
        if self._fast_model is None:
            self._fast_model = frozen_for_inference(self.model_, self.network_input_size())
        return self._fast_model

    def _predict_batch(self, x: torch.Tensor):
        return None, self._network()(x)


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return detached copies of a module's state tensors."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``model``; a RunDirError naming ``where`` when they do not fit."""
    from waferscope.errors import RunDirError

    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RunDirError(f"weights do not fit this {where} configuration ({str(exc).splitlines()[0][:200]})") from None


@register("stfpm", kind="detector")
class STFPMDetector(KindDefaults, FastInferenceMixin, TorchDetector):
    """STFPM (Wang et al. 2021): a student regresses a frozen teacher's feature pyramid; the gap is the map.

    Parameters
    ----------
    backbone
        Name of a registered backbone network (the frozen teacher); ``"auto"``: by the data kind
        fitted, ``wafer_resnet18`` for wafer maps, ``formula_resnet18`` for images
        (:func:`~waferscope.models.backbones.resolve_backbone`).
    pretrained
        ``"auto"`` (the weights shipped for the backbone: wafer-domain or formula-driven), None
        (random init), ``"wafer"``, ``"formula"`` or a local torchvision checkpoint path.
    layers
    fusion
        ``"product"``, ``"mean"`` or ``"max"``: how the per-layer distance maps are combined.
    input_size
    epochs, batch_size
    optimizer
        ``"sgd"`` or ``"adam"``.
    lr
    momentum
        SGD momentum.
    weight_decay
    augment, smoothing_sigma, predict_batch_size, jit, seed, progress

    Attributes
    ----------
    backbone_kwargs_, loss_history_, model_, resolved_
    threshold_, threshold_info_
    """

    _label = "STFPM"
    # wafer maps only (below): nothing but the backbone depends on the data kind
    _kind_defaults = {}
    # Wafer maps only: on device images (magnetic tile) STFPM scored 0.677 image AUROC even on the formula
    # backbone, below a pixel z-score (0.698), and no setting screened on validation (epochs, 256 px,
    # layers, fusion, smoothing, aspect-kept input) lifted it (docs/detection.md); a detector that loses
    # to the trivial baseline is not offered for images. Images are refused naming those that take them.
    _tags = {"input_kinds": ("wafer",)}

    _parameter_constraints = {
        "fusion": [Options(*FUSIONS)], "optimizer": [Options("sgd", "adam")], "momentum": [Interval(float, 0, 1)]}

    def __init__(self, backbone: str = "auto", pretrained: str | None = "auto",
                 layers: Sequence[str] = ("layer1", "layer2", "layer3"), fusion: str = "product",
                 input_size: int = 64, epochs: int = 8, batch_size: int = 32, optimizer: str = "sgd",
                 lr: float = 0.4, momentum: float = 0.9, weight_decay: float = 1e-4, augment: bool = True,
                 smoothing_sigma: float = 0.0, predict_batch_size: int = 256, jit: bool = True, seed: int = 0,
                 progress: bool = True):
        self.backbone = backbone
        self.pretrained = pretrained
        self.layers = layers
        self.fusion = fusion
        self.input_size = input_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.smoothing_sigma = smoothing_sigma
        self.predict_batch_size = predict_batch_size
        self.jit = jit
        self.seed = seed
        self.progress = progress

    def _build(self, kwargs: dict, load_teacher: bool) -> STFPMModel:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        teacher = build_backbone(self._p("backbone"), self._p("pretrained"), kwargs, load=load_teacher)
        student = build_backbone(self._p("backbone"), None, kwargs)  # same architecture, random init
        return STFPMModel(feature_pyramid(teacher, self.layers, frozen=True),
                          feature_pyramid(student, self.layers, frozen=False), self.fusion)

    def score(self, dataset):
        """Score wafer maps (images: a DataError naming the detectors that take them)."""
        require_wafer_maps(dataset, self.registry_name)
        return super().score(dataset)

    def fit(self, dataset, **kwargs) -> "STFPMDetector":
        """Fit the student on the normal wafer maps of ``dataset`` (images: a DataError); return ``self``."""
        require_wafer_maps(dataset, self.registry_name)
        normals = training_normals(dataset)
        self._resolve(normals.kind)
        seed_everything(self.seed)
        arch = backbone_kwargs(self._p("backbone"), self._p("pretrained"))
        model = self._build(arch, load_teacher=True)
        inputs = dataset_to_input(normals, self.network_input_size())
        params = [p for p in model.student.parameters() if p.requires_grad]
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        elif self.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose sgd or adam")

        def step(x: torch.Tensor) -> torch.Tensor:
            return stfpm_loss(*model.features(x))

        self.loss_history_ = fit_loop(params, step, inputs, epochs=int(self.epochs), batch_size=int(self.batch_size),
                                      lr=self.lr, seed=self.seed, augment=self.augment, optimizer=opt,
                                      desc="fit stfpm", progress=bool(self.progress), modules=[model])
        self.backbone_kwargs_ = arch
        self.model_ = model.eval()
        self._fast_model = None
        return self

