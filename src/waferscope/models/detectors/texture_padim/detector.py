"""``texture_padim``: PaDiM's per-position Gaussian on fixed filter-bank features — no weights needed.

PaDiM (Defard et al., ICPR 2021) models the patch features at every position of aligned images with
a Gaussian (mean + covariance over the normal training images) and scores a test patch by its
Mahalanobis distance. Its features come from an ImageNet CNN; here they are the fixed Gaussian-
derivative filter bank with local energy of ``texture_knn`` (:mod:`..texture_knn.torch_model`).

Images are handled as images: features are computed on each image at its own aspect ratio
(longer side ``input_size``, standardised by its own mean/std, reflect-padded; see
:func:`~waferscope.models.detectors.common.image_canvas`); then the feature cells of the image's own
box are resampled to a ``grid``×``grid`` lattice of *relative* positions, where the Gaussians live.
That alignment is what makes a per-position model work on parts photographed in the same framing
(a tile, a die, a package): on the magnetic tile set it beat the position-free nearest-neighbour
scoring of ``texture_knn`` by ~0.18 image AUROC (docs/detection.md, "Device images").

Map: the Mahalanobis distance per cell as a z-score against that cell's held-out normal distances
(``calibration_folds``), stretched back onto the image box, smoothed (σ = ``smoothing_sigma`` px
per 256 px, PaDiM's σ = 4 at 224 px); image score: the maximum of the map inside the box.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from waferscope.base import DetectionResult, Detector, Interval
from waferscope.errors import ConfigError, DataError, RunDirError
from waferscope.models.detectors.common import (batch_slices, canvas_maps_to_input, image_canvas, masked_max,
                                                progress, training_normals)
from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps, to_grid
from waferscope.models.detectors.texture_padim.features import LARGE_FINE_SIGMAS, large_scale_channels
from waferscope.registry import register


@register("texture_padim", kind="detector")
class TexturePaDiMDetector(Detector):
    """Per-relative-position Gaussian of filter-bank features of normal images (Mahalanobis map).

    Parameters
    ----------
    input_size, sigmas, energy_window, stride
        Canvas size (longer side, aspect kept) and the filter bank (see ``texture_knn``).
    grid
        The lattice of relative positions (grid × grid Gaussians). Stride 2 / grid 64 (one cell per
        2 canvas px) replaced stride 4 / grid 32: small defects (hairline cracks, edge chips) get
        cells of their own size (chosen on a validation split of training normals plus synthetic
        anomalies, docs/detection.md "Third round").
    large_sigmas
        Coarse σ (canvas px) of extra large-scale channels: brightness and log texture energy
        smoothed at each σ, relative to the image's own level (:mod:`.features`), for defects that
        are broad bands of another texture or brightness. Empty: none.
    shrinkage
        Covariance regularisation: ``cov + shrinkage · mean(diag cov) · I`` per cell (PaDiM adds
        0.01·I); needed because the training images are few for C×C covariances.
    calibration_folds
        0: the map is the Mahalanobis distance itself. k ≥ 2: each cell's distance is turned into a
        z-score against that cell's own distribution of *held-out* distances of the training normals
        (k folds, each fold scored by the Gaussians of the other folds) — cells whose normal variation
        is poorly captured (the image edges, few effective samples) otherwise dominate the map
        maximum; learned from normals only. Default 5 (on the validation split it moved the map
        maximum into the synthetic defect for 79 % of images instead of 76 %, the rest unchanged).
    smoothing_sigma
        Map smoothing, px per 256 px of canvas.
    predict_batch_size
        Samples per forward pass when scoring (speed and memory only, not results).
    progress
        Progress bars on stderr.

    Attributes
    ----------
    cell_loc_
        Per-cell location of the held-out distances (``calibration_folds``; 0 otherwise).
    cell_scale_
        Per-cell scale of the held-out distances (1 without calibration).
    channel_mean_
        Per-channel mean of the normal features.
    channel_scale_
        Per-channel standard deviation of those features.
    input_kind_
        ``"wafer"`` or ``"image"``: the kind of data fitted on (the other kind is refused).
    mean_
        Per-cell mean of the standardised features (grid × grid Gaussians).
    n_train_
        Number of normal training samples.
    precision_
        Per-cell precision matrix (the Mahalanobis metric).
    threshold_
        Decision threshold: a score >= ``threshold_`` is anomalous
        (:meth:`~waferscope.base.Detector.calibrate`).
    threshold_info_
        How ``threshold_`` was learned (the rule and its figures).
    """

    _tags = {"input_kinds": ("wafer", "image")}
    image_rank = 1

    _parameter_constraints = {
        "input_size": [Interval(int, 8)], "energy_window": [Interval(int, 1)], "stride": [Interval(int, 1)],
        "grid": [Interval(int, 1)], "shrinkage": [Interval(float, 0)], "calibration_folds": [Interval(int, 0)]}

    def __init__(self, input_size: int = 128, sigmas: Sequence[float] = (1.0, 2.0, 4.0), energy_window: int = 7,
                 stride: int = 2, grid: int = 64, shrinkage: float = 0.01, large_sigmas: Sequence[float] = (),
                 calibration_folds: int = 5,
                 smoothing_sigma: float = 4.0, predict_batch_size: int = 32, progress: bool = True):
        self.input_size = input_size
        self.sigmas = sigmas
        self.energy_window = energy_window
        self.stride = stride
        self.grid = grid
        self.shrinkage = shrinkage
        self.large_sigmas = large_sigmas
        self.calibration_folds = calibration_folds
        self.smoothing_sigma = smoothing_sigma
        self.predict_batch_size = predict_batch_size
        self.progress = progress

    def _check(self) -> None:
        if int(self.input_size) < 8 or int(self.stride) < 1 or int(self.grid) < 1:
            raise ConfigError("input_size must be ≥ 8, stride and grid ≥ 1")
        if float(self.shrinkage) <= 0:
            raise ConfigError(f"shrinkage must be positive, got {self.shrinkage}")
        if not list(self.sigmas) or min(float(s) for s in self.sigmas) <= 0:
            raise ConfigError(f"sigmas must be positive, got {self.sigmas}")
        if list(self.large_sigmas) and min(float(s) for s in self.large_sigmas) <= 0:
            raise ConfigError(f"large_sigmas must be positive, got {self.large_sigmas}")
        if int(self.calibration_folds) == 1 or int(self.calibration_folds) < 0:
            raise ConfigError(f"calibration_folds must be 0 (off) or ≥ 2, got {self.calibration_folds}")

    def _grid_features(self, dataset, desc: str):
        canvas = image_canvas(dataset, int(self.input_size), "image")
        bank = FilterBank(self.sigmas, int(self.energy_window), int(self.stride)).eval()
        out = []
        slices = list(batch_slices(len(canvas.x), int(self.predict_batch_size)))
        with torch.inference_mode():
            for sl in progress(slices, desc=desc, enabled=bool(self.progress) and len(slices) > 4):
                x, boxes = torch.from_numpy(canvas.x[sl]), canvas.boxes[sl]
                f = to_grid(bank(x), boxes, int(self.stride), int(self.grid))
                if list(self.large_sigmas):
                    large = large_scale_channels(x, boxes, LARGE_FINE_SIGMAS, [float(s) for s in self.large_sigmas])
                    f = torch.cat([f, to_grid(large, boxes, 1, int(self.grid))], 1)
                out.append(f)
        return canvas, (torch.cat(out) if out else None)

    def fit(self, dataset, **kwargs) -> "TexturePaDiMDetector":
        """Fit the per-cell Gaussians on the normal images; return ``self``."""
        self._check()
        normals = training_normals(dataset)
        if len(normals) < 2:
            raise DataError(f"texture_padim needs at least 2 normal images for a covariance, got {len(normals)}",
                            dataset.name)
        _, feats = self._grid_features(normals, "texture_padim fit")
        # channels standardised over all cells first: the filter responses differ in scale by orders
        # of magnitude, and the ridge below is relative to the mean variance
        self.channel_mean_ = feats.mean((0, 2, 3))
        self.channel_scale_ = feats.std((0, 2, 3)).clamp_min(1e-6)
        feats = self._standardise(feats)
        self.mean_, self.precision_ = self._gaussians(feats)
        k = min(int(self.calibration_folds), len(normals) // 3)  # each fit needs ≥ 2 images
        if k >= 2:
            rng = np.random.default_rng(0)
            held = torch.empty(len(feats), *feats.shape[2:])
            for fold in np.array_split(rng.permutation(len(feats)), k):
                rest = np.setdiff1d(np.arange(len(feats)), fold)
                held[fold] = mahalanobis_maps(feats[fold], *self._gaussians(feats[rest])).sqrt()
            self.cell_loc_, self.cell_scale_ = held.mean(0), held.std(0).clamp_min(1e-6)
        else:
            self.cell_loc_, self.cell_scale_ = torch.zeros(feats.shape[2:]), torch.ones(feats.shape[2:])
        self.n_train_ = len(normals)
        self.input_kind_ = normals.kind  # `detect score` refuses the other kind (cli/detect._check_kind)
        return self

    def _gaussians(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell mean (G·G, C) and regularised precision (G·G, C, C) of (N, C, G, G) features."""
        means, precisions = [], []
        # a few grid rows at a time, so the float64 copies below stay within ~64 MB whatever the grid
        rows = max(1, int(64e6 // (8 * len(feats) * feats.shape[1] * feats.shape[3])))
        for r in range(0, feats.shape[2], rows):
            x = feats[:, :, r:r + rows].double().permute(2, 3, 0, 1).reshape(-1, len(feats), feats.shape[1])
            mean = x.mean(1)  # (cells, C) of x: (cells, N, C)
            d = x - mean[:, None]
            cov = d.transpose(1, 2) @ d / (len(feats) - 1)
            ridge = float(self.shrinkage) * cov.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-8)
            cov = cov + ridge[:, None, None] * torch.eye(cov.shape[-1], dtype=cov.dtype)
            means.append(mean.float())
            precisions.append(torch.linalg.inv(cov).float())
        return torch.cat(means), torch.cat(precisions)

    def _standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.channel_mean_[None, :, None, None]) / self.channel_scale_[None, :, None, None]

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every image."""
        self._check_fitted()
        if len(dataset) == 0:
            return DetectionResult(scores=np.zeros(0), maps=[])
        canvas, feats = self._grid_features(dataset, "score texture_padim")
        size = int(self.input_size)
        cell = mahalanobis_maps(self._standardise(feats), self.mean_, self.precision_).sqrt()
        cell = (cell - self.cell_loc_) / self.cell_scale_
        maps = from_grid(cell, canvas.boxes, size, float(self.smoothing_sigma) * size / 256.0)
        scores = masked_max(maps, canvas.valid)
        return DetectionResult(scores=scores, maps=canvas_maps_to_input(maps, canvas, dataset))

    def _state(self):
        return ({"mean": self.mean_, "precision": self.precision_, "channel_mean": self.channel_mean_,
                 "channel_scale": self.channel_scale_, "cell_loc": self.cell_loc_, "cell_scale": self.cell_scale_}, {"n_train": self.n_train_, "input_kind": self.input_kind_})

    def _load_state(self, tensors, extras) -> None:
        try:
            self.mean_, self.precision_ = tensors["mean"], tensors["precision"]
            self.channel_mean_, self.channel_scale_ = tensors["channel_mean"], tensors["channel_scale"]
        except KeyError as exc:
            raise RunDirError(f"texture_padim run without the {exc.args[0]!r} tensor") from None
        # runs saved before the calibration existed: the identity calibration (plain distances)
        g = self.mean_.shape[0]
        side = int(round(g ** 0.5))
        self.cell_loc_ = tensors.get("cell_loc", torch.zeros(side, side))
        self.cell_scale_ = tensors.get("cell_scale", torch.ones(side, side))
        self.n_train_ = int(extras.get("n_train", 0))
        self.input_kind_ = str(extras.get("input_kind", "image"))
