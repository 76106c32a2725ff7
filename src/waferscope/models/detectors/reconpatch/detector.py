"""ReConPatch (Hyun et al., WACV 2024).

"ReConPatch: Contrastive Patch Representation Learning for Industrial Anomaly Detection", WACV 2024.

PatchCore with one extra step: before the memory bank is built, a linear representation layer (with
a linear projection head used only for training) is trained on the normal patch features with the
relaxed contrastive loss, using pairwise + contextual similarities from an EMA target network as
pseudo-labels (:mod:`.loss`). The memory bank and the test patches then live in the representation
layer's output space (``representation_dim``); scoring is PatchCore's (nearest memory row per patch,
eq. 7 image score).

Which defaults come from the paper and which are ours is listed in docs/detection_patchcore.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from waferscope.base import Interval
from waferscope.errors import ConfigError, RunDirError
from waferscope.models.detectors.patchcore.detector import PatchCoreDetector
from waferscope.models.detectors.reconpatch.torch_model import ModulationNetwork, train_modulation
from waferscope.registry import register


@register("reconpatch", kind="detector")
class ReConPatchDetector(PatchCoreDetector):
    """PatchCore on contrastively modulated patch features.

    Parameters
    ----------
    representation_dim, projection_dim
        Output of the linear representation layer (memory-bank space) and of the projection head.
    sigma, alpha, k_contextual, margin, ema_momentum
        Gaussian-kernel width of the pairwise similarity, weight α of pairwise vs contextual
        similarity, neighbourhood size k of the contextual similarity, margin m of the relaxed
        contrastive loss, momentum of the EMA target network.
    epochs, lr, weight_decay, contrastive_batch_size, steps_per_epoch, contrastive_patches
        Training schedule (AdamW); each step draws ``contrastive_batch_size`` patches from a seeded
        random subset of ``contrastive_patches`` candidate patches.
    backbone
        Name of a registered backbone (the frozen feature extractor), as PatchCore's (``"auto"``: by
        the data kind fitted, as PatchCore's).
    pretrained
    backbone_kwargs
        Keyword arguments of the backbone's constructor (``width``, ``small_input`` for ResNets).
    layers
    input_size
        None: 64 for wafer maps, 128 for images, as PatchCore's.
    patch_size
        Neighbourhood of the local average of the features (PatchCore's 3).
    embedding_dim
        Channel-pooled patch-feature size (the modulation network's input).
    coreset_ratio
        Memory bank = greedy coreset of this share of the candidate patches (None: 10 % for wafer
        maps, 1 % for images, as PatchCore's).
    max_memory_mb
        Never more memory-bank rows than fit in this many MB (float32).
    coreset_projection_dim
        Dimensions of the seeded Gaussian projection the greedy selection measures distances in.
    max_train_patches
        Candidate patches before the coreset (a seeded subset of positions per wafer beyond it).
    num_neighbors
        b of PatchCore's eq. 7 (1: no re-weighting, the score is the largest patch distance).
    predict_batch_size, smoothing_sigma, seed, progress

    Attributes
    ----------
    resolved_
    fit_info_
    grid_
    loss_history_
    memory_bank_
        The coreset of modulated normal patch features (rows × ``representation_dim``).
    memory_sq_norm_
    model_
    modulation_
        The trained representation network applied to patch features.
    threshold_, threshold_info_
    """

    # Rank among the image detectors by image AUROC on magnetic tile with the defaults (0.752;
    # docs/detection.md): after PatchCore, before texture_contrast.
    image_rank = 5

    _parameter_constraints = {
        "representation_dim": [Interval(int, 1)], "projection_dim": [Interval(int, 1)],
        "sigma": [Interval(float, 0, None, closed="neither")], "alpha": [Interval(float, 0, 1)],
        "k_contextual": [Interval(int, 1)], "margin": [Interval(float, 0)], "ema_momentum": [Interval(float, 0, 1)],
        "contrastive_batch_size": [Interval(int, 1)], "steps_per_epoch": [Interval(int, 1), None],
        "contrastive_patches": [Interval(int, 1)]}

    def __init__(self, backbone: str = "auto", pretrained: str | None = "auto",
                 backbone_kwargs: dict | None = None, layers: Sequence[str] = ("layer2", "layer3"),
                 input_size: int | None = None, patch_size: int = 3, embedding_dim: int = 128,
                 coreset_ratio: float | None = None, max_memory_mb: float = 200.0, coreset_projection_dim: int = 128,
                 max_train_patches: int = 400_000, num_neighbors: int = 9, predict_batch_size: int = 64,
                 smoothing_sigma: float = 4.0, seed: int = 0, progress: bool = True,
                 representation_dim: int = 128, projection_dim: int = 64, sigma: float = 1.0,
                 alpha: float = 0.5, k_contextual: int = 5, margin: float = 1.0, ema_momentum: float = 0.99,
                 epochs: int = 5, lr: float = 1e-3, weight_decay: float = 1e-2,
                 contrastive_batch_size: int = 256, steps_per_epoch: int | None = 100,
                 contrastive_patches: int = 50_000):
        super().__init__(backbone=backbone, pretrained=pretrained, backbone_kwargs=backbone_kwargs, layers=layers,
                         input_size=input_size, patch_size=patch_size, embedding_dim=embedding_dim,
                         coreset_ratio=coreset_ratio, max_memory_mb=max_memory_mb,
                         coreset_projection_dim=coreset_projection_dim, max_train_patches=max_train_patches,
                         num_neighbors=num_neighbors, predict_batch_size=predict_batch_size, smoothing_sigma=smoothing_sigma,
                         seed=seed, progress=progress)
        self.representation_dim = representation_dim
        self.projection_dim = projection_dim
        self.sigma = sigma
        self.alpha = alpha
        self.k_contextual = k_contextual
        self.margin = margin
        self.ema_momentum = ema_momentum
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.contrastive_batch_size = contrastive_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.contrastive_patches = contrastive_patches

    def _check_params(self) -> None:
        super()._check_params()
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= float(self.ema_momentum) < 1.0:
            raise ConfigError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if float(self.sigma) <= 0 or float(self.margin) <= 0:
            raise ConfigError("sigma and margin must be positive")

    def _fit_transform(self, patches: torch.Tensor) -> torch.Tensor:
        rng = np.random.default_rng(int(self.seed) + 1)
        n_train = int(min(len(patches), self.contrastive_patches))
        train = patches[torch.from_numpy(np.sort(rng.choice(len(patches), n_train, replace=False)))]
        self.modulation_, self.loss_history_ = train_modulation(
            train, int(self.representation_dim), int(self.projection_dim), epochs=int(self.epochs),
            batch_size=int(self.contrastive_batch_size), lr=float(self.lr), weight_decay=float(self.weight_decay),
            sigma=float(self.sigma), alpha=float(self.alpha), k_contextual=int(self.k_contextual),
            margin=float(self.margin), ema_momentum=float(self.ema_momentum),
            steps_per_epoch=self.steps_per_epoch, seed=int(self.seed), progress=bool(self.progress))
        with torch.inference_mode():
            return torch.cat([self._transform(patches[i:i + 65536]) for i in range(0, len(patches), 65536)])

    def _transform(self, patches: torch.Tensor) -> torch.Tensor:
        return self.modulation_.representation(patches)

    def _state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors, extras = super()._state()
        tensors.update({f"modulation.{k}": v for k, v in self.modulation_.state_dict().items()})
        extras["loss_history"] = list(self.loss_history_)
        return tensors, extras

    def _load_state(self, tensors: dict[str, Any], extras: dict[str, Any]) -> None:
        super()._load_state(tensors, extras)
        state = {k[len("modulation."):]: v for k, v in tensors.items() if k.startswith("modulation.")}
        if not state:
            raise RunDirError("weights.safetensors has no modulation layers: not a reconpatch run")
        self.modulation_ = ModulationNetwork(int(self.embedding_dim), int(self.representation_dim),
                                             int(self.projection_dim))
        self.modulation_.load_state_dict(state)
        self.modulation_.eval().requires_grad_(False)
        self.loss_history_ = list(extras.get("loss_history", []))

    def _eval_modules(self) -> list[torch.nn.Module]:
        return [self.model_, self.modulation_]
