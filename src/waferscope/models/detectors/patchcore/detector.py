"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

fit: a frozen backbone embeds every normal wafer into locally aware patch features
(:class:`~.torch_model.PatchEmbedding`); a random subset of patch positions per wafer is kept when
the set is large (``max_train_patches``), then a greedy k-center coreset of those patches
(``coreset_ratio``, capped at ``max_memory_mb``) becomes the memory bank.

score: each test patch's distance to its nearest memory row is its anomaly value (the map); the
wafer's score is the largest patch distance re-weighted by eq. 7 with ``num_neighbors`` neighbours.

Persistence: the memory bank and the used part of the backbone (up to the deepest feature layer)
go into ``weights.safetensors``, so a run reloads without the original checkpoint file.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from waferscope.errors import ConfigError, RunDirError
from waferscope.models.backbones import FeatureExtractor, create_backbone
from waferscope.models.detectors.kind_defaults import KindDefaults
from waferscope.models.detectors.common import (TorchDetector, batch_slices, dataset_to_input,
                                                maps_to_input_resolution, progress, training_normals,
                                                wafer_valid_masks)
from waferscope.models.detectors.patchcore.coreset import coreset_size, k_center_greedy
from waferscope.models.detectors.patchcore.torch_model import (PatchEmbedding, nearest_memory,
                                                               reweighted_image_score)
from waferscope.registry import register
from waferscope.base import DetectionResult, Interval

# Wafers converted to network input at a time (input for 100k wafers at 64 px would be ~5 GB).
_CHUNK = 2048


class PatchCoreModel(torch.nn.Module):
    """Backbone features → patch embeddings (B, D, h, w)."""

    def __init__(self, extractor: FeatureExtractor, layer_channels: Sequence[int], embedding_dim: int,
                 patch_size: int):
        super().__init__()
        self.extractor = extractor
        self.embed = PatchEmbedding(layer_channels, embedding_dim, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the patch embeddings of a batch."""
        feats = self.extractor(x)
        return self.embed(list(feats.values()))


@register("patchcore", kind="detector")
class PatchCoreDetector(KindDefaults, TorchDetector):
    """Memory-bank anomaly detector on locally aware patch features of a frozen CNN.

    Parameters
    ----------
    backbone, pretrained, backbone_kwargs
        Any registered backbone. ``"auto"`` (default): by the data fitted, ``wafer_resnet18`` with the
        shipped wafer-domain weights for wafer maps (on the real dev maps it beat random-init ResNet-18
        and WRN-50-2 and is faster, configs/seed004.yaml) and ``formula_resnet18`` with the shipped
        formula-driven weights for images (docs/detection.md); also ``resnet18``,
        ``wide_resnet50_2``... ``pretrained`` = ``"auto"`` (the weights shipped for the backbone, else
        random init), None (seeded random init), ``"wafer"``, ``"formula"`` or a local torchvision
        checkpoint path; ``backbone_kwargs`` go to the constructor (``width``, ``small_input`` for ResNets).
    layers, patch_size, embedding_dim
        Feature layers (paper: layer2+layer3), neighbourhood of the local average (paper: 3) and the
        channel-pooled patch-feature size.
    coreset_ratio, max_memory_mb, coreset_projection_dim
        Memory bank = greedy coreset of ``coreset_ratio`` × the candidate patches (paper: 1–10 %; None:
        10 % for wafer maps, 1 % for images, the setting measured there),
        never more rows than fit in ``max_memory_mb`` (float32); distances for the greedy selection are
        measured after a seeded Gaussian projection to ``coreset_projection_dim`` dims.
    max_train_patches
        Candidate patches before the coreset: when wafers × patches-per-wafer exceeds it, each wafer
        contributes a seeded random subset of ``max(1, max_train_patches // n_wafers)`` positions.
    num_neighbors
        The b of eq. 7 (paper: 9); 1 turns re-weighting off (score = largest patch distance).
    input_size
        None: 64 for wafer maps, 128 for images (the size the image backbones were measured at).
    predict_batch_size, smoothing_sigma, seed, progress

    Attributes
    ----------
    resolved_
    fit_info_
    grid_
    memory_bank_
        The coreset of normal patch features (rows × ``embedding_dim``).
    memory_sq_norm_
    model_, threshold_, threshold_info_
    """

    _docstrings = {  # shared with ReConPatch
        "fit_info_": "Figures of the fit (candidate patches, memory-bank rows and MB, seconds).",
        "grid_": "(h, w) of the patch-feature grid.",
        "memory_sq_norm_": "Squared norms of the memory-bank rows.",
    }

    # None = by the kind of data fitted (KindDefaults); docs/detection.md, "Backbone detectors on images"
    _kind_defaults = {"input_size": {"wafer": 64, "image": 128}, "coreset_ratio": {"wafer": 0.1, "image": 0.01}}
    # Rank among the image detectors (common.image_detectors), by image AUROC on the magnetic tile test
    # split with the defaults: 0.775, after texture_knn, texture_padim and the autoencoder (docs/detection.md).
    image_rank = 4

    _parameter_constraints = {
        "patch_size": [Interval(int, 1)], "embedding_dim": [Interval(int, 1)],
        "coreset_ratio": [Interval(float, 0, 1, closed="right"), None], "input_size": [Interval(int, 1), None],
        "max_memory_mb": [Interval(float, 0, None, closed="neither")], "coreset_projection_dim": [Interval(int, 1)],
        "max_train_patches": [Interval(int, 1)], "num_neighbors": [Interval(int, 1)]}

    def __init__(self, backbone: str = "auto", pretrained: str | None = "auto",
                 backbone_kwargs: dict | None = None, layers: Sequence[str] = ("layer2", "layer3"),
                 input_size: int | None = None, patch_size: int = 3, embedding_dim: int = 128,
                 coreset_ratio: float | None = None, max_memory_mb: float = 200.0, coreset_projection_dim: int = 128,
                 max_train_patches: int = 400_000, num_neighbors: int = 9, predict_batch_size: int = 64,
                 smoothing_sigma: float = 4.0, seed: int = 0, progress: bool = True):
        self.backbone = backbone
        self.pretrained = pretrained
        self.backbone_kwargs = backbone_kwargs
        self.layers = layers
        self.input_size = input_size
        self.patch_size = patch_size
        self.embedding_dim = embedding_dim
        self.coreset_ratio = coreset_ratio
        self.max_memory_mb = max_memory_mb
        self.coreset_projection_dim = coreset_projection_dim
        self.max_train_patches = max_train_patches
        self.num_neighbors = num_neighbors
        self.predict_batch_size = predict_batch_size
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        self.progress = progress

    # ---- model construction ----------------------------------------------------------------------
    def _build_model(self, load_weights: bool = True) -> PatchCoreModel:
        torch.manual_seed(int(self.seed))  # a random-init backbone is reproducible from the seed
        kwargs = dict(self.backbone_kwargs or {})
        net = create_backbone(self._p("backbone"), pretrained=self._p("pretrained") if load_weights else None, **kwargs)
        extractor = FeatureExtractor(net, layers=tuple(self.layers))
        info = extractor.feature_info(self.network_input_size())
        channels = [info[name][0] for name in self.layers]
        model = PatchCoreModel(extractor, channels, int(self.embedding_dim), int(self.patch_size))
        self.grid_ = tuple(info[self.layers[0]][1:])
        return model.eval()

    def _backbone_state(self) -> dict[str, torch.Tensor]:
        """Return the backbone tensors the feature layers depend on (everything before the deepest layer's successors)."""
        net = self.model_.extractor.backbone
        order = [name for name, _ in net.named_children()]
        deepest = max(order.index(layer.split(".")[0]) for layer in self.layers if layer.split(".")[0] in order)
        keep = tuple(order[:deepest + 1])
        return {f"backbone.{k}": v for k, v in net.state_dict().items() if k.split(".")[0] in keep}

    # ---- feature hooks (ReConPatch overrides these) ----------------------------------------------
    def _fit_transform(self, patches: torch.Tensor) -> torch.Tensor:
        """Learn any transform of the candidate patch features (N, D) and return them transformed."""
        return patches

    def _transform(self, patches: torch.Tensor) -> torch.Tensor:
        return patches

    # ---- fit -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not self.layers:
            raise ConfigError("patchcore needs at least one feature layer")
        if int(self.num_neighbors) < 1:
            raise ConfigError(f"num_neighbors must be ≥ 1, got {self.num_neighbors}")
        if int(self.max_train_patches) < 1:
            raise ConfigError(f"max_train_patches must be ≥ 1, got {self.max_train_patches}")

    def _iter_inputs(self, dataset, desc: str):
        size = self.network_input_size()
        chunks = list(batch_slices(len(dataset), _CHUNK))
        for sl in progress(chunks, desc=desc, enabled=bool(self.progress) and len(chunks) > 1):
            part = dataset.subset(np.arange(sl.start, sl.stop))
            yield sl, part, dataset_to_input(part, size)

    def fit(self, dataset, **kwargs) -> "PatchCoreDetector":
        """Build the memory bank from the normal samples of ``dataset``; return ``self``."""
        self._check_params()
        normals = training_normals(dataset)
        t0 = time.perf_counter()
        self._resolve(normals.kind)
        self.model_ = self._build_model()
        rng = np.random.default_rng(int(self.seed))
        n = len(normals)
        grid_patches = self.grid_[0] * self.grid_[1]
        per_wafer = int(min(grid_patches, max(1, int(self.max_train_patches) // n)))
        patches = torch.empty((n * per_wafer, int(self.embedding_dim)), dtype=torch.float32)
        with torch.inference_mode():
            for sl, _, inputs in self._iter_inputs(normals, "patchcore features"):
                for b in batch_slices(len(inputs), int(self.predict_batch_size)):
                    x = torch.from_numpy(np.ascontiguousarray(inputs[b]))
                    emb = self.model_(x).flatten(2).transpose(1, 2)  # (B, P, D)
                    if per_wafer < grid_patches:  # seeded random positions per wafer
                        pick = torch.from_numpy(rng.random((len(emb), grid_patches)).argsort(1)[:, :per_wafer])
                        emb = torch.gather(emb, 1, pick[..., None].expand(-1, -1, emb.shape[2]))
                    start = (sl.start + b.start) * per_wafer
                    patches[start:start + emb.shape[0] * per_wafer] = emb.reshape(-1, emb.shape[2])
        t_features = time.perf_counter() - t0
        patches = self._fit_transform(patches)
        dim = patches.shape[1]
        n_select = coreset_size(len(patches), dim, float(self._p("coreset_ratio")), self.max_memory_mb)
        t1 = time.perf_counter()
        if n_select < len(patches):
            idx = k_center_greedy(patches, n_select, int(self.coreset_projection_dim) or None, int(self.seed),
                                  progress=bool(self.progress))
            bank = patches[idx].clone()
        else:
            bank = patches.clone()
        self.memory_bank_ = bank.contiguous()
        self.memory_sq_norm_ = (bank * bank).sum(1)
        self.fit_info_ = {
            "n_train_wafers": n, "patches_per_wafer": per_wafer, "grid": list(self.grid_),
            "n_candidates": int(len(patches)), "memory_rows": int(len(bank)),
            "memory_mb": float(bank.numel() * 4 / 1e6), "seconds_features": round(t_features, 3),
            "seconds_coreset": round(time.perf_counter() - t1, 3),
        }
        return self

    # ---- score -----------------------------------------------------------------------------------
    def patch_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) input → (B, P, D) patch features in the memory bank's space."""
        emb = self.model_(x).flatten(2).transpose(1, 2)
        b, p, d = emb.shape
        return self._transform(emb.reshape(-1, d)).reshape(b, p, -1)

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.patch_embeddings(x)
        b, p, d = emb.shape
        dist, idx = nearest_memory(emb.reshape(-1, d), self.memory_bank_, k=1, memory_sq_norm=self.memory_sq_norm_)
        patch_scores, nearest = dist.reshape(b, p), idx.reshape(b, p)
        scores = reweighted_image_score(patch_scores, nearest, emb, self.memory_bank_, int(self.num_neighbors),
                                        self.memory_sq_norm_)
        return scores, patch_scores.reshape(b, *self.grid_)

    def _eval_modules(self) -> list[torch.nn.Module]:
        return [self.model_]

    def score(self, dataset) -> DetectionResult:
        """Scores and maps in chunks, so the network input of a large set never sits in memory at once."""
        self._check_fitted()
        scores = np.empty(len(dataset), dtype=np.float64)
        maps: list[np.ndarray] = []
        size = self.network_input_size()
        for sl, part, inputs in self._iter_inputs(dataset, "patchcore score"):
            s, m = self.score_input(inputs, wafer_valid_masks(part, size))
            scores[sl] = s
            maps.extend(maps_to_input_resolution(m, part))
        return DetectionResult(scores=scores, maps=maps)

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors = {"memory_bank": self.memory_bank_}
        tensors.update(self._backbone_state())
        return tensors, {"fit_info": self.fit_info_, "resolved": self.resolved_}

    def _load_state(self, tensors: dict[str, Any], extras: dict[str, Any]) -> None:
        if "memory_bank" not in tensors:
            raise RunDirError("weights.safetensors has no memory_bank: not a patchcore run")
        self._restore_resolved(extras)
        self.model_ = self._build_model(load_weights=False)
        net = self.model_.extractor.backbone
        state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        missing = [k for k in self._backbone_state() if k[len("backbone."):] not in state]
        if missing:
            raise RunDirError(f"weights.safetensors lacks backbone tensors ({', '.join(missing[:3])}...)")
        net.load_state_dict(state, strict=False)
        self.model_.eval()
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self.memory_sq_norm_ = (self.memory_bank_ * self.memory_bank_).sum(1)
        self.fit_info_ = dict(extras.get("fit_info", {}))
