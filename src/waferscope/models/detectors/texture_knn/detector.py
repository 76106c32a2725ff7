"""``texture_knn``: PatchCore's nearest-neighbour scoring on features that need no trained weights.

PatchCore (Roth et al., CVPR 2022) scores a test patch by its distance to the nearest normal patch in
a memory bank; its strength comes from ImageNet features, which cannot be had offline, and a
backbone trained on three-state wafer maps does not describe grey-level texture. Here the features
are a fixed Gaussian-derivative filter bank with local energy (:mod:`.torch_model`), so the detector
needs no download and no training loop: fitting = computing the normal images' patch features.

Where the nearest normal patch is looked for (``position``):

- ``"free"`` (PatchCore's): anywhere; the memory is a seeded random ``memory_size`` of all valid
  training positions;
- ``"relative"`` (the position-aware search of PNI, Bae et al. ICCV 2023, with positions relative to
  the image box as ``texture_padim`` models them): the features are resampled onto a ``grid`` × ``grid``
  grid of each image's own box, and a cell's nearest normal patch is looked for at the same cell ± ``radius``
  cells of every memory image (up to ``memory_images`` normal images). With ``cell_calibration`` each cell's
  distance becomes a z-score against the memory images' own nearest distances there, each image left out
  of its own search (as ``texture_padim``'s per-cell calibration: a cell whose normal patches vary
  a lot is not an anomaly for that alone);
- ``"auto"``: relative for images (parts photographed in the same framing: on the magnetic tile set the
  position-free search scored 0.63 image AUROC, below a pixel z-score), free for wafer maps (their
  behaviour as before; the relative search was not measured on them).

Images are handled as images (:func:`~waferscope.models.detectors.common.image_canvas`): grey, aspect
ratio kept (longer side = ``input_size``), each image standardised by its own mean/std (or the
training set's, ``normalise="dataset"``), reflect-padded to a square, and scored only inside the
image box minus a ``border`` frame. The map is the nearest-neighbour distance, upsampled and smoothed
(σ = ``smoothing_sigma`` px per 256 px); the image score is the mean of the top ``top_fraction`` of
its valid pixels (1 pixel: the maximum).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from waferscope.base import DetectionResult, Detector, Interval, Options
from waferscope.errors import ConfigError, DataError, RunDirError
from waferscope.models.detectors.common import (batch_slices, canvas_maps_to_input, gaussian_blur, image_canvas,
                                                masked_topk_mean, progress, seed_everything, training_normals)
from waferscope.models.detectors.texture_knn.anomaly_map import cell_distance_maps, distance_maps
from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, to_grid
from waferscope.registry import register


@register("texture_knn", kind="detector")
class TextureKNNDetector(Detector):
    """Nearest-neighbour distance of filter-bank patch features to those of normal images.

    Parameters
    ----------
    input_size
        The longer side of each image on the network canvas (aspect kept, reflect-padded square).
    sigmas, energy_window, stride
        The Gaussian scales (px on the canvas), the local-energy window and the feature stride.
    memory_size
        ``position="free"``: normal patch features kept (seeded random sample of all valid training positions).
    position
        ``"relative"`` (nearest normal patch at the same place of the image box), ``"free"`` (anywhere) or
        ``"auto"`` (relative for images, free for wafer maps).
    grid, radius
        ``position="relative"``: the relative grid (cells per side of the image box) and how many cells
        around the same cell the search reaches.
    memory_images
        ``position="relative"``: normal images kept (seeded random subset when there are more); the
        memory holds grid² × channels values per image.
    cell_calibration
        ``position="relative"``: each cell's distance as a z-score against the memory images' own
        leave-one-image-out nearest distances there.
    map_grid, map_stride, map_radius
        ``position="relative"``: a second, finer search of the same kind (its own grid, feature stride
        and radius, its own calibration) that draws the anomaly map, while the image score stays the
        maximum of the ``grid`` search's map: the coarse search ranks images best, the fine one puts
        the map's maximum on the defect more often (docs/detection.md). ``map_grid=None``: the map is
        the ``grid`` search's own.
    normalise
        ``"image"`` (each image's own mean/std: robust to lighting) or ``"dataset"``.
    border
        Px of each image's edge (on the canvas) left out of scoring: a frame that is not inspected.
    smoothing_sigma, top_fraction
        Map smoothing (px per 256 px) and the share of the highest map pixels averaged for the score.
    predict_batch_size, seed, progress

    Attributes
    ----------
    cell_loc_, cell_scale_
        Per-cell location and scale of the leave-one-image-out distances (relative, calibrated; 0 and 1
        otherwise).
    input_kind_
    mean_
        Per-feature mean of the normal training positions.
    memory_
        The standardised normal patch features: ``memory_size`` rows (free), or (images, C, grid, grid)
        (relative).
    map_search_
        The map search's tensors (``mean``, ``scale``, ``memory``, ``cell_loc``, ``cell_scale``), or None.
    position_
        The search used (``"relative"`` or ``"free"``; ``position="auto"`` resolved by the data kind).
    n_train_
    scale_
        Per-feature standard deviation of those positions.
    stats_
        Mean and standard deviation of the training pixels (``normalise="dataset"``; (0, 1) otherwise).
    threshold_, threshold_info_
    """

    _tags = {"input_kinds": ("wafer", "image")}
    # First among the image detectors: the best image and pixel AUROC measured on real device images
    # (magnetic tile 0.955 / 0.793 against texture_padim's 0.893 / 0.763; texture_padim localises
    # better, docs/detection.md), so `detect train` on an image folder picks it.
    image_rank = 1

    _parameter_constraints = {
        "input_size": [Interval(int, 8)], "energy_window": [Interval(int, 1)], "stride": [Interval(int, 1)],
        "memory_size": [Interval(int, 1)], "normalise": [Options("image", "dataset")], "border": [Interval(int, 0)],
        "top_fraction": [Interval(float, 0, 1)], "position": [Options("auto", "relative", "free")],
        "grid": [Interval(int, 1)], "radius": [Interval(int, 0)], "memory_images": [Interval(int, 2)],
        "map_grid": [Interval(int, 1), None], "map_stride": [Interval(int, 1)], "map_radius": [Interval(int, 0)]}

    def __init__(self, input_size: int = 128, sigmas: Sequence[float] = (1.0, 2.0, 4.0), energy_window: int = 7,
                 stride: int = 4, memory_size: int = 10000, position: str = "auto", grid: int = 32, radius: int = 1,
                 memory_images: int = 1000, cell_calibration: bool = True, map_grid: int | None = 64, map_stride: int = 2,
                 map_radius: int = 0, normalise: str = "image", border: int = 0,
                 smoothing_sigma: float = 4.0, top_fraction: float = 0.0, predict_batch_size: int = 32, seed: int = 0,
                 progress: bool = True):
        self.input_size = input_size
        self.sigmas = sigmas
        self.energy_window = energy_window
        self.stride = stride
        self.memory_size = memory_size
        self.position = position
        self.grid = grid
        self.radius = radius
        self.memory_images = memory_images
        self.cell_calibration = cell_calibration
        self.map_grid = map_grid
        self.map_stride = map_stride
        self.map_radius = map_radius
        self.normalise = normalise
        self.border = border
        self.smoothing_sigma = smoothing_sigma
        self.top_fraction = top_fraction
        self.predict_batch_size = predict_batch_size
        self.seed = seed
        self.progress = progress

    def _check(self) -> None:
        if self.normalise not in ("image", "dataset"):
            raise ConfigError(f"normalise must be 'image' or 'dataset', got {self.normalise!r}")
        if int(self.input_size) < 8 or int(self.stride) < 1 or int(self.memory_size) < 1:
            raise ConfigError("input_size must be ≥ 8, stride and memory_size ≥ 1")
        if not list(self.sigmas) or min(float(s) for s in self.sigmas) <= 0:
            raise ConfigError(f"sigmas must be positive, got {self.sigmas}")

    def _bank(self, stride: int | None = None) -> FilterBank:
        return FilterBank(self.sigmas, int(self.energy_window), int(self.stride if stride is None else stride)).eval()

    def _features(self, canvas, desc: str, stride: int | None = None) -> torch.Tensor:
        bank = self._bank(stride)
        out = []
        slices = list(batch_slices(len(canvas.x), int(self.predict_batch_size)))
        with torch.inference_mode():
            for sl in progress(slices, desc=desc, enabled=bool(self.progress) and len(slices) > 4):
                out.append(bank(torch.from_numpy(canvas.x[sl])))
        if not out:
            s = int(self.input_size) // int(self.stride if stride is None else stride)
            return torch.zeros((0, bank.out_channels, s, s))
        return torch.cat(out)

    def _canvas(self, dataset):
        stats = tuple(self.stats_.tolist()) if self.normalise == "dataset" else None
        return image_canvas(dataset, int(self.input_size), self.normalise, stats, int(self.border))

    def fit(self, dataset, **kwargs) -> "TextureKNNDetector":
        """Build the memory of normal patch features; return ``self``."""
        self._check()
        normals = training_normals(dataset)
        rng = seed_everything(int(self.seed))
        if self.normalise == "dataset":
            vals = np.concatenate([np.asarray(m, np.float32).ravel() / (255.0 if dataset.kind == "image" else 2.0)
                                   for m in normals.maps])
            self.stats_ = np.array([vals.mean(), vals.std()], np.float64)
        else:
            self.stats_ = np.array([0.0, 1.0])
        self.position_ = self.position if self.position != "auto" else \
            ("relative" if normals.kind == "image" else "free")
        if self.position_ == "relative":
            self._fit_relative(normals, rng)
        else:
            self._fit_free(normals, rng)
        self.n_train_ = len(normals)
        self.input_kind_ = normals.kind  # `detect score` refuses the other kind (cli/detect._check_kind)
        return self

    def _fit_free(self, normals, rng) -> None:
        canvas = self._canvas(normals)
        feats = self._features(canvas, "texture_knn fit")
        # only positions whose stride cell lies inside the image: the padded mirror is not new data
        valid = F.avg_pool2d(torch.from_numpy(canvas.valid).float()[:, None], int(self.stride))[:, 0] > 0.5
        rows = feats.permute(0, 2, 3, 1)[valid]
        if len(rows) == 0:
            raise ConfigError("no valid feature positions in the training images (images too small for the stride?)")
        self.mean_ = rows.mean(0)
        self.scale_ = rows.std(0).clamp_min(1e-6)
        keep = rng.permutation(len(rows))[: int(self.memory_size)]
        self.memory_ = ((rows[torch.from_numpy(np.sort(keep))] - self.mean_) / self.scale_).contiguous()
        self.cell_loc_, self.cell_scale_ = torch.zeros(()), torch.ones(())
        self.map_search_ = None

    def _fit_relative(self, normals, rng) -> None:
        n = len(normals)
        if n < 2:
            raise DataError(f"texture_knn with position='relative' needs at least 2 normal images, got {n}",
                            normals.name)
        if n > int(self.memory_images):  # bounded memory: a seeded subset of the normal images
            normals = normals.subset(np.sort(rng.permutation(n)[: int(self.memory_images)]))
        canvas = self._canvas(normals)
        main = self._fit_search(canvas, int(self.stride), int(self.grid), int(self.radius), "texture_knn fit")
        self.mean_, self.scale_, self.memory_ = main["mean"], main["scale"], main["memory"]
        self.cell_loc_, self.cell_scale_ = main["cell_loc"], main["cell_scale"]
        self.map_search_ = None if self.map_grid is None else \
            self._fit_search(canvas, int(self.map_stride), int(self.map_grid), int(self.map_radius), "texture_knn map fit")

    def _fit_search(self, canvas, stride: int, grid: int, radius: int, desc: str) -> dict[str, torch.Tensor]:
        """One relative search over the canvas's images: standardised memory and per-cell calibration."""
        feats = to_grid(self._features(canvas, desc, stride), canvas.boxes, stride, grid)
        mean, scale = feats.mean((0, 2, 3)), feats.std((0, 2, 3)).clamp_min(1e-6)
        memory = ((feats - mean[None, :, None, None]) / scale[None, :, None, None]).contiguous()
        if self.cell_calibration:
            with torch.inference_mode():
                held = cell_distance_maps(memory, memory, radius, exclude=torch.arange(len(memory)))
            loc, sc = held.mean(0), held.std(0).clamp_min(1e-6)
        else:
            loc, sc = torch.zeros(grid, grid), torch.ones(grid, grid)
        return {"mean": mean, "scale": scale, "memory": memory, "cell_loc": loc, "cell_scale": sc}

    def _search_maps(self, canvas, search: dict[str, torch.Tensor], stride: int, grid: int, radius: int) -> torch.Tensor:
        """(N, S, S) canvas maps of one relative search (per-cell z of the nearest-patch distance)."""
        size = int(self.input_size)
        feats = to_grid(self._features(canvas, "score texture_knn", stride), canvas.boxes, stride, grid)
        cells = (feats - search["mean"][None, :, None, None]) / search["scale"][None, :, None, None]
        with torch.inference_mode():
            d = cell_distance_maps(cells, search["memory"], radius)
        return from_grid((d - search["cell_loc"]) / search["cell_scale"], canvas.boxes, size,
                         float(self.smoothing_sigma) * size / 256.0)

    def _maps(self, canvas) -> torch.Tensor:
        size = int(self.input_size)
        sigma = float(self.smoothing_sigma) * size / 256.0
        if self.position_ == "relative":
            main = {"mean": self.mean_, "scale": self.scale_, "memory": self.memory_, "cell_loc": self.cell_loc_,
                    "cell_scale": self.cell_scale_}
            return self._search_maps(canvas, main, int(self.stride), int(self.grid), int(self.radius))
        feats = self._features(canvas, "score texture_knn")
        if len(feats) == 0:
            return torch.zeros((0, size, size))
        msq = (self.memory_ ** 2).sum(1)
        out = torch.empty((len(feats), size, size))
        with torch.inference_mode():
            for sl in batch_slices(len(feats), int(self.predict_batch_size)):
                f = (feats[sl] - self.mean_[None, :, None, None]) / self.scale_[None, :, None, None]
                d = distance_maps(f, self.memory_, msq)
                d = F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                out[sl] = gaussian_blur(d, sigma)
        return out

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every image."""
        self._check_fitted()
        if len(dataset) == 0:
            return DetectionResult(scores=np.zeros(0), maps=[])
        scores, maps = [], []
        frac = float(self.top_fraction) if float(self.top_fraction) > 0 else 1e-12  # 1e-12 → one pixel: the maximum
        # batch by batch: the canvas, features and distance temporaries bounded by predict_batch_size
        slices = list(batch_slices(len(dataset), int(self.predict_batch_size)))
        for sl in progress(slices, desc="score texture_knn", enabled=bool(self.progress) and len(slices) > 4):
            part = dataset.subset(np.arange(sl.start, sl.stop))
            canvas = self._canvas(part)
            m = self._maps(canvas)
            scores.append(masked_topk_mean(m, canvas.valid, frac))
            if self.map_search_ is not None:  # the finer search draws the map
                m = self._search_maps(canvas, self.map_search_, int(self.map_stride), int(self.map_grid),
                                      int(self.map_radius))
            maps += canvas_maps_to_input(m, canvas, part)
        return DetectionResult(scores=np.concatenate(scores), maps=maps)

    def _state(self):
        tensors = {"memory": self.memory_, "mean": self.mean_, "scale": self.scale_,
                   "stats": torch.as_tensor(self.stats_), "cell_loc": self.cell_loc_, "cell_scale": self.cell_scale_}
        if self.map_search_ is not None:
            tensors.update({f"map_{k}": v for k, v in self.map_search_.items()})
        return tensors, {"n_train": self.n_train_, "input_kind": self.input_kind_, "position": self.position_}

    def _load_state(self, tensors, extras) -> None:
        try:
            self.memory_, self.mean_, self.scale_ = tensors["memory"], tensors["mean"], tensors["scale"]
            self.stats_ = np.asarray(tensors["stats"], np.float64)
        except KeyError as exc:
            raise RunDirError(f"texture_knn run without the {exc.args[0]!r} tensor") from None
        self.n_train_ = int(extras.get("n_train", 0))
        self.input_kind_ = str(extras.get("input_kind", "image"))
        # runs saved before the relative search existed searched anywhere, uncalibrated
        self.position_ = str(extras.get("position", "free"))
        self.cell_loc_ = tensors.get("cell_loc", torch.zeros(()))
        self.cell_scale_ = tensors.get("cell_scale", torch.ones(()))
        # runs saved before the map search (or with map_grid=None) draw the map with the scoring search
        keys = ("mean", "scale", "memory", "cell_loc", "cell_scale")
        self.map_search_ = {k: tensors[f"map_{k}"] for k in keys} if "map_memory" in tensors else None
