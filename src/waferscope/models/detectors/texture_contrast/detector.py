"""``texture_contrast``: a discriminative detector trained on synthetic anomalies, needing no weights.

The image analogue of ``pattern_contrast`` and of DRAEM's discriminative half (Zavrtanik et al.,
ICCV 2021): normal training images get synthetic anomalies (:mod:`.synthesis`: Perlin-masked foreign
textures as DRAEM defines them, with offline texture sources as in NSA, and CutPaste scars), and a
classifier learns, per feature position, "normal texture" vs "synthetic anomaly". DRAEM's
segmentation network needs a GPU and ~700 epochs; here the per-position features are the fixed
filter bank of ``texture_knn`` (Gaussian derivatives + local energy, :mod:`..texture_knn.torch_model`)
with the image's own mean feature subtracted as context (an anomaly is a departure from the rest of
its image), and the classifier is scikit-learn's gradient-boosted trees (stored as arrays,
:mod:`waferscope.models.trees`). Optionally the nearest-normal-patch distance of ``texture_knn``
is one more feature (``knn_feature``).

Map: the per-position log-odds of "anomalous", upsampled and smoothed (σ = ``smoothing_sigma`` px per
256 px); image score: its maximum inside the image box (the reflect padding is never scored).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from waferscope.base import DetectionResult, Detector, Interval
from waferscope.errors import ConfigError, RunDirError
from waferscope.models.detectors.common import (batch_slices, canvas_maps_to_input, gaussian_blur, image_canvas,
                                                masked_max, progress, seed_everything, training_normals)
from waferscope.models.detectors.texture_contrast.synthesis import draem_anomaly, scar_anomaly
from waferscope.models.detectors.texture_knn.anomaly_map import distance_maps
from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.trees import fit_trees, load_trees, tree_scores
from waferscope.registry import register


@register("texture_contrast", kind="detector")
class TextureContrastDetector(Detector):
    """Gradient-boosted trees on filter-bank features: normal image patches vs synthetic anomalies.

    Parameters
    ----------
    input_size, sigmas, energy_window, stride
        Canvas size (longer side, aspect kept) and the filter bank (see ``texture_knn``).
    anomalies_per_image
        Augmented copies of each normal training image (each a DRAEM Perlin anomaly or a CutPaste scar).
    scar_fraction
        Share of the copies that get a scar instead of a Perlin anomaly.
    max_rows
        Training rows (feature positions) kept, half normal and half anomalous at most (seeded).
    knn_feature, memory_size
        Add each position's distance to its nearest normal training position (a memory of
        ``memory_size`` rows, as ``texture_knn``) as one more feature.
    max_iter, learning_rate, max_leaf_nodes, l2_regularization
        The trees (scikit-learn HistGradientBoostingClassifier, balanced classes, no early stopping).
    smoothing_sigma, predict_batch_size, seed, progress

    Attributes
    ----------
    input_kind_
    mean_
        Per-feature mean of the normal memory rows (``knn_feature``).
    memory_
        Standardised normal positions for the nearest-neighbour feature (None without ``knn_feature``).
    n_features_
        Features per position the trees read.
    n_train_
    scale_
        Per-feature standard deviation of those rows.
    threshold_, threshold_info_
    trees_
    """

    _tags = {"input_kinds": ("wafer", "image")}
    image_rank = 6  # 0.745 on magnetic tile (docs/detection.md): after ReConPatch

    _parameter_constraints = {
        "input_size": [Interval(int, 8)], "energy_window": [Interval(int, 1)], "stride": [Interval(int, 1)],
        "anomalies_per_image": [Interval(int, 0)], "scar_fraction": [Interval(float, 0, 1)],
        "max_rows": [Interval(int, 1)], "memory_size": [Interval(int, 1)]}

    def __init__(self, input_size: int = 128, sigmas: Sequence[float] = (1.0, 2.0, 4.0), energy_window: int = 7,
                 stride: int = 4, anomalies_per_image: int = 1, scar_fraction: float = 0.3, max_rows: int = 200_000,
                 knn_feature: bool = True, memory_size: int = 10000, max_iter: int = 200,
                 learning_rate: float = 0.1, max_leaf_nodes: int = 31, l2_regularization: float = 0.0,
                 smoothing_sigma: float = 4.0, predict_batch_size: int = 32, seed: int = 0, progress: bool = True):
        self.input_size = input_size
        self.sigmas = sigmas
        self.energy_window = energy_window
        self.stride = stride
        self.anomalies_per_image = anomalies_per_image
        self.scar_fraction = scar_fraction
        self.max_rows = max_rows
        self.knn_feature = knn_feature
        self.memory_size = memory_size
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.smoothing_sigma = smoothing_sigma
        self.predict_batch_size = predict_batch_size
        self.seed = seed
        self.progress = progress

    # ---- features -----------------------------------------------------------------------------
    def _check(self) -> None:
        if int(self.input_size) < 8 or int(self.stride) < 1 or int(self.anomalies_per_image) < 1:
            raise ConfigError("input_size must be ≥ 8, stride and anomalies_per_image ≥ 1")
        if not 0.0 <= float(self.scar_fraction) <= 1.0:
            raise ConfigError(f"scar_fraction must be in [0, 1], got {self.scar_fraction}")
        if not list(self.sigmas) or min(float(s) for s in self.sigmas) <= 0:
            raise ConfigError(f"sigmas must be positive, got {self.sigmas}")

    def _bank(self) -> FilterBank:
        return FilterBank(self.sigmas, int(self.energy_window), int(self.stride)).eval()

    def _cells(self, valid: np.ndarray) -> torch.Tensor:
        """(N, h, w) bool: feature cells mostly inside the image box."""
        return F.avg_pool2d(torch.from_numpy(valid).float()[:, None], int(self.stride))[:, 0] > 0.5

    def _position_features(self, x: np.ndarray, cells: torch.Tensor, desc: str) -> torch.Tensor:
        """(N, C', h, w): filter bank, the same minus the image's mean over its cells, (+ kNN distance)."""
        bank = self._bank()
        out = []
        slices = list(batch_slices(len(x), int(self.predict_batch_size)))
        with torch.inference_mode():
            for sl in progress(slices, desc=desc, enabled=bool(self.progress) and len(slices) > 4):
                f = bank(torch.from_numpy(np.ascontiguousarray(x[sl])))
                c = cells[sl][:, None].float()
                mean = (f * c).sum((2, 3), keepdim=True) / c.sum((2, 3), keepdim=True).clamp_min(1)
                parts = [f, f - mean]
                if getattr(self, "memory_", None) is not None:
                    z = (f - self.mean_[None, :, None, None]) / self.scale_[None, :, None, None]
                    parts.append(distance_maps(z, self.memory_)[:, None])
                out.append(torch.cat(parts, 1))
        return torch.cat(out) if out else torch.zeros(0)

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, dataset, **kwargs) -> "TextureContrastDetector":
        """Fit the trees on normal image positions against synthetic anomalies; return ``self``."""
        self._check()
        normals = training_normals(dataset)
        rng = seed_everything(int(self.seed))
        size = int(self.input_size)
        canvas = image_canvas(normals, size, "image")
        cells = self._cells(canvas.valid)
        self.memory_ = None
        if self.knn_feature:
            with torch.inference_mode():
                f = torch.cat([self._bank()(torch.from_numpy(canvas.x[sl]))
                               for sl in batch_slices(len(canvas.x), int(self.predict_batch_size))])
            rows = f.permute(0, 2, 3, 1)[cells]
            self.mean_ = rows.mean(0)
            self.scale_ = rows.std(0).clamp_min(1e-6)
            # the memory comes from every other image only (even indices): a training image's own
            # patches would be at distance 0 from the memory and teach the trees a false "normal"
            own = np.zeros(len(canvas.x), bool)
            own[::2] = True
            mem_rows = f[torch.from_numpy(own)].permute(0, 2, 3, 1)[cells[torch.from_numpy(own)]]
            keep = np.sort(rng.permutation(len(mem_rows))[: int(self.memory_size)])
            self.memory_ = ((mem_rows[torch.from_numpy(keep)] - self.mean_) / self.scale_).contiguous()
            train_sel = ~own if (~own).any() else own
        else:
            train_sel = np.ones(len(canvas.x), bool)
        xs = canvas.x[train_sel, 0]
        vs = canvas.valid[train_sel]
        aug, masks = [], []
        others = list(xs[rng.permutation(len(xs))[: min(len(xs), 64)]])
        for _ in range(int(self.anomalies_per_image)):
            for img, v in zip(xs, vs):
                if rng.random() < float(self.scar_fraction):
                    a, m = scar_anomaly(img, rng, v)
                else:
                    a, m = draem_anomaly(img, others, rng, v)
                aug.append(a)
                masks.append(m)
        aug_x = np.stack(aug)[:, None]
        mask_frac = F.avg_pool2d(torch.from_numpy(np.stack(masks)).float()[:, None], int(self.stride))[:, 0]
        clean_cells = cells[torch.from_numpy(train_sel)]
        aug_cells = clean_cells.repeat(int(self.anomalies_per_image), 1, 1)
        f_clean = self._position_features(xs[:, None], clean_cells, "texture_contrast normals")
        f_aug = self._position_features(aug_x, aug_cells, "texture_contrast anomalies")
        neg = torch.cat([f_clean.permute(0, 2, 3, 1)[clean_cells],
                         f_aug.permute(0, 2, 3, 1)[aug_cells & (mask_frac == 0)]]).numpy()
        pos = f_aug.permute(0, 2, 3, 1)[aug_cells & (mask_frac >= 0.5)].numpy()
        if len(pos) == 0 or len(neg) == 0:
            raise ConfigError("no synthetic anomaly covered a feature cell: images too small for the stride?")
        half = max(1, int(self.max_rows) // 2)
        pos = pos[np.sort(rng.permutation(len(pos))[:half])]
        neg = neg[np.sort(rng.permutation(len(neg))[:half])]
        x = np.concatenate([neg, pos]).astype(np.float64)
        y = np.r_[np.zeros(len(neg), np.int64), np.ones(len(pos), np.int64)]
        self.trees_ = fit_trees(x, y, int(self.max_iter), float(self.learning_rate), int(self.max_leaf_nodes),
                                float(self.l2_regularization), int(self.seed))
        self.n_features_ = x.shape[1]
        self.n_train_ = len(normals)
        self.input_kind_ = normals.kind  # `detect score` refuses the other kind (cli/detect._check_kind)
        return self

    # ---- score --------------------------------------------------------------------------------
    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every image."""
        self._check_fitted()
        size = int(self.input_size)
        canvas = image_canvas(dataset, size, "image")
        if len(dataset) == 0:
            return DetectionResult(scores=np.zeros(0), maps=[])
        cells = self._cells(canvas.valid)
        f = self._position_features(canvas.x, cells, "score texture_contrast")
        n, c, h, w = f.shape
        logit = tree_scores(self.trees_, f.permute(0, 2, 3, 1).reshape(-1, c).numpy())[:, 1]
        raw = torch.from_numpy(logit.astype(np.float32)).view(n, h, w)
        raw = torch.where(cells, raw, raw.new_tensor(float(logit.min())))
        maps = F.interpolate(raw[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        maps = gaussian_blur(maps, float(self.smoothing_sigma) * size / 256.0)
        scores = masked_max(maps, canvas.valid)
        # maps are shifted to ≥ 0 so that the zeros outside the valid area are the lowest value
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
        return DetectionResult(scores=scores, maps=canvas_maps_to_input(maps, canvas, dataset))

    def _state(self):
        tensors = dict(self.trees_)
        if self.memory_ is not None:
            tensors.update(memory=self.memory_, mean=self.mean_, scale=self.scale_)
        return tensors, {"n_features": self.n_features_, "n_train": self.n_train_, "input_kind": self.input_kind_}

    def _load_state(self, tensors, extras) -> None:
        self.n_features_ = int(extras.get("n_features", 0))
        self.trees_ = load_trees(tensors, self.n_features_, "texture_contrast")
        if self.knn_feature:
            if "memory" not in tensors:
                raise RunDirError("the saved texture_contrast state is damaged: no kNN memory")
            self.memory_, self.mean_, self.scale_ = tensors["memory"], tensors["mean"], tensors["scale"]
        else:
            self.memory_ = None
        self.n_train_ = int(extras.get("n_train", 0))
        self.input_kind_ = str(extras.get("input_kind", "image"))
