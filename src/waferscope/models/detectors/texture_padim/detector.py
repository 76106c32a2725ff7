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

from waferscope.base import DetectionResult, Detector, Interval, Options
from waferscope.errors import ConfigError, DataError, RunDirError
from waferscope.models.detectors.common import (batch_slices, canvas_maps_to_input, image_canvas, masked_max,
                                                progress, training_normals)
from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps, to_grid
from waferscope.models.detectors.texture_padim.features import LARGE_FINE_SIGMAS, fine_channels, large_scale_channels
from waferscope.models.detectors.texture_padim.gaussians import CellMoments, fold_moments
from waferscope.registry import register


@register("texture_padim", kind="detector")
class TexturePaDiMDetector(Detector):
    """Per-relative-position Gaussian of filter-bank features of normal images (Mahalanobis map).

    Parameters
    ----------
    input_size, energy_window, stride
        Canvas size (longer side, aspect kept) and the filter bank (see ``texture_knn``).
    sigmas
        The filter bank's scales on the main canvas (px). σ = 2, 4 since the sixth round, the finer
        ones coming from the finer canvas (``fine_factor``); before it σ = 0.7, 1, 2, 4 (fifth round)
        and 1, 2, 4 (docs/detection.md "Fifth round", "Sixth round").
    grid
        The lattice of relative positions (grid × grid Gaussians). Stride 1 / grid 128 (one Gaussian
        per canvas pixel) replaced stride 2 / grid 64, which had replaced stride 4 / grid 32: small
        defects (hairline cracks, edge chips) get cells of their own size (chosen on a validation
        split of training normals plus synthetic anomalies, docs/detection.md "Third round"; adopted
        in the fourth round once the streaming fit made its memory independent of the number of
        images: ~1.7 GB peak at fit on 666 tiles, an 87 MB run).
    fine_factor, fine_sigmas, fine_pool
        The finest scales, from a *finer* canvas: the six derivatives per σ in ``fine_sigmas`` (px of
        that canvas) and their local energies, on a canvas ``fine_factor`` × ``input_size`` px,
        resampled to a (fine_factor·grid)² lattice and pooled fine_factor × fine_factor onto the grid
        by ``fine_pool`` (``"energy"``: root mean square, the order-0 response by its mean; ``"max"``:
        the signed response of largest magnitude; ``"avg"``) (:func:`.features.fine_channels`).
        Hairline cracks a few native px wide are sub-pixel on the 128 px canvas; at 256 px their
        responses are taken before the pooling. Default (sixth round, chosen on a validation split
        with cracks drawn at native resolution): σ = 0.7, 1 at 256 px, energy pooling, beside the
        main canvas's σ = 2, 4 — they replace the 128 px canvas's σ = 0.7, 1. 0: none.
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
    backbone, pretrained, backbone_layers, backbone_input_size, backbone_channels, filter_bank
        Optional learned channels (PaDiM's own features): ``backbone`` a registered backbone name
        (None: none), ``pretrained`` its weights (None: seeded random init, ``"wafer"``/``"formula"``:
        shipped weights, or a local checkpoint), computed on a canvas of ``backbone_input_size`` px
        (the same aspect-kept, per-image standardised canvas, mapped to ~[0, 1] as ``z / 4 + 0.5``,
        grey in 3 channels); the deeper layers upsampled to the first one's size and concatenated
        (PaDiM), then a seeded random subset of ``backbone_channels`` of them kept (PaDiM's random
        dimensionality reduction; 0 keeps all). ``filter_bank=False`` leaves the filter bank out,
        its finer-canvas scales included (the Gaussians then live on the backbone channels alone).
    predict_batch_size
        Images per batch when fitting and scoring (speed and memory only, not results beyond float
        rounding): features are computed and consumed one batch at a time.
    seed
    progress

    Attributes
    ----------
    cell_loc_
        Per-cell location of the held-out distances (``calibration_folds``; 0 otherwise).
    backbone_index_
        The backbone channels kept (``backbone_channels``), or None.
    cell_scale_
        Per-cell scale of the held-out distances (1 without calibration).
    channel_mean_
        Per-channel mean of the normal features.
    channel_scale_
        Per-channel standard deviation of those features.
    input_kind_
    mean_
        Per-cell mean of the standardised features (grid × grid Gaussians).
    n_train_
    precision_
        Per-cell precision matrix (the Mahalanobis metric).
    threshold_, threshold_info_
    """

    _tags = {"input_kinds": ("wafer", "image")}
    image_rank = 2  # after texture_knn on image AUROC; better at putting the map maximum on the defect
    # runs saved before the finer canvas existed (sixth round) had no fine channels in their Gaussians
    params_before = {"fine_factor": 0}

    _parameter_constraints = {
        "input_size": [Interval(int, 8)], "energy_window": [Interval(int, 1)], "stride": [Interval(int, 1)],
        "grid": [Interval(int, 1)], "shrinkage": [Interval(float, 0)], "calibration_folds": [Interval(int, 0)],
        "fine_factor": [Interval(int, 0)], "fine_pool": [Options("max", "energy", "avg")]}

    def __init__(self, input_size: int = 128, sigmas: Sequence[float] = (2.0, 4.0), energy_window: int = 7,
                 stride: int = 1, grid: int = 128, shrinkage: float = 0.01, fine_factor: int = 2,
                 fine_sigmas: Sequence[float] = (0.7, 1.0), fine_pool: str = "energy", large_sigmas: Sequence[float] = (),
                 calibration_folds: int = 5,
                 smoothing_sigma: float = 4.0, backbone: str | None = None, pretrained: str | None = None,
                 backbone_layers: Sequence[str] = ("layer2", "layer3"), backbone_input_size: int = 256,
                 backbone_channels: int = 100, filter_bank: bool = True, seed: int = 0,
                 predict_batch_size: int = 32, progress: bool = True):
        self.input_size = input_size
        self.sigmas = sigmas
        self.energy_window = energy_window
        self.stride = stride
        self.grid = grid
        self.shrinkage = shrinkage
        self.fine_factor = fine_factor
        self.fine_sigmas = fine_sigmas
        self.fine_pool = fine_pool
        self.large_sigmas = large_sigmas
        self.calibration_folds = calibration_folds
        self.smoothing_sigma = smoothing_sigma
        self.backbone = backbone
        self.pretrained = pretrained
        self.backbone_layers = backbone_layers
        self.backbone_input_size = backbone_input_size
        self.backbone_channels = backbone_channels
        self.filter_bank = filter_bank
        self.seed = seed
        self.predict_batch_size = predict_batch_size
        self.progress = progress

    def _check(self) -> None:
        if int(self.input_size) < 8 or int(self.stride) < 1 or int(self.grid) < 1:
            raise ConfigError("input_size must be ≥ 8, stride and grid ≥ 1")
        if float(self.shrinkage) <= 0:
            raise ConfigError(f"shrinkage must be positive, got {self.shrinkage}")
        if not list(self.sigmas) or min(float(s) for s in self.sigmas) <= 0:
            raise ConfigError(f"sigmas must be positive, got {self.sigmas}")
        if int(self.fine_factor) == 1 or int(self.fine_factor) < 0:
            raise ConfigError(f"fine_factor must be 0 (off) or ≥ 2, got {self.fine_factor}")
        if int(self.fine_factor) and (not list(self.fine_sigmas) or min(float(s) for s in self.fine_sigmas) <= 0):
            raise ConfigError(f"fine_sigmas must be positive, got {self.fine_sigmas}")
        if list(self.large_sigmas) and min(float(s) for s in self.large_sigmas) <= 0:
            raise ConfigError(f"large_sigmas must be positive, got {self.large_sigmas}")
        if int(self.calibration_folds) == 1 or int(self.calibration_folds) < 0:
            raise ConfigError(f"calibration_folds must be 0 (off) or ≥ 2, got {self.calibration_folds}")
        if not self.filter_bank and not self.backbone:
            raise ConfigError("texture_padim needs features: filter_bank=True or a backbone")
        if self.backbone and (not list(self.backbone_layers) or int(self.backbone_input_size) < 8
                              or int(self.backbone_channels) < 0):
            raise ConfigError("backbone_layers must name at least one layer, backbone_input_size be ≥ 8 "
                              "and backbone_channels ≥ 0")

    # ---- optional backbone channels ----------------------------------------------------------------
    def _extractor(self, state: dict | None = None):
        """Return the frozen feature extractor of ``backbone`` (built once; from ``state`` when reloading a run)."""
        if getattr(self, "_extractor_cache", None) is None:
            from waferscope.models.backbones import FeatureExtractor, create_backbone

            torch.manual_seed(int(self.seed))  # a random-init backbone is reproducible from the seed
            net = create_backbone(self.backbone, pretrained=None if state is not None else self.pretrained)
            if state is not None:
                net.load_state_dict(state, strict=False)
            self._extractor_cache = FeatureExtractor(net, layers=tuple(self.backbone_layers)).eval()
        return self._extractor_cache

    def _backbone_grid(self, part) -> torch.Tensor:
        """(B, C, grid, grid) backbone channels of a sub-dataset (PaDiM's concatenated layers)."""
        size = int(self.backbone_input_size)
        canvas = image_canvas(part, size, "image")
        # the canvas is z-scored per image; z / 4 + 0.5 puts it in about the [0, 1] range the image
        # detectors feed their backbones (a backbone that standardises its input is unaffected)
        x = (torch.from_numpy(canvas.x) * 0.25 + 0.5).expand(-1, 3, -1, -1)
        feats = list(self._extractor()(x).values())
        h = feats[0].shape[-1]
        f = torch.cat([feats[0]] + [torch.nn.functional.interpolate(m, size=feats[0].shape[-2:], mode="bilinear",
                                                                    align_corners=False) for m in feats[1:]], 1)
        if self.backbone_index_ is not None:
            f = f[:, self.backbone_index_]
        return to_grid(f, canvas.boxes, max(1, size // h), int(self.grid))

    def _choose_backbone_channels(self) -> None:
        self._extractor_cache = None
        self.backbone_index_ = None
        if not self.backbone:
            return
        info = self._extractor().feature_info(int(self.backbone_input_size))
        total = sum(info[name][0] for name in self.backbone_layers)
        k = int(self.backbone_channels)
        if 0 < k < total:
            pick = np.sort(np.random.default_rng(int(self.seed)).choice(total, size=k, replace=False))
            self.backbone_index_ = torch.from_numpy(pick)

    def _batches(self, dataset, desc: str, index=None):
        """Yield (indices, sub-dataset, canvas, (B, C, grid, grid) features) batch by batch.

        Over ``index`` (positions in ``dataset``; all by default). One batch of canvases and
        features is alive at a time, so neither fit nor score holds the whole set's features.
        """
        bank = FilterBank(self.sigmas, int(self.energy_window), int(self.stride)).eval()
        index = np.arange(len(dataset)) if index is None else np.asarray(index)
        slices = list(batch_slices(len(index), int(self.predict_batch_size)))
        for sl in progress(slices, desc=desc, enabled=bool(self.progress) and len(slices) > 4):
            idx = index[sl]
            part = dataset.subset(idx)
            canvas = image_canvas(part, int(self.input_size), "image")
            x, boxes = torch.from_numpy(canvas.x), canvas.boxes
            parts = []
            if self.filter_bank:
                parts.append(to_grid(bank(x), boxes, int(self.stride), int(self.grid)))
                if int(self.fine_factor):  # the finest scales from a k× canvas, pooled onto the grid
                    k = int(self.fine_factor)
                    fine = image_canvas(part, k * int(self.input_size), "image")
                    parts.append(fine_channels(torch.from_numpy(fine.x), fine.boxes,
                                               [float(s) for s in self.fine_sigmas],
                                               k * int(self.energy_window) - (k - 1), k, int(self.grid),
                                               str(self.fine_pool)))
            if list(self.large_sigmas):
                large = large_scale_channels(x, boxes, LARGE_FINE_SIGMAS, [float(s) for s in self.large_sigmas])
                parts.append(to_grid(large, boxes, 1, int(self.grid)))
            if self.backbone:
                parts.append(self._backbone_grid(part))
            yield idx, part, canvas, torch.cat(parts, 1)

    def fit(self, dataset, **kwargs) -> "TexturePaDiMDetector":
        """Fit the per-cell Gaussians on the normal images; return ``self``.

        Streaming: per-cell moments are accumulated batch by batch (:class:`.gaussians.CellMoments`),
        so memory does not grow with the number of images; the calibration takes a second pass of
        feature extraction (each fold's images scored by the Gaussians of the other folds).
        """
        self._check()
        normals = training_normals(dataset)
        n = len(normals)
        if n < 2:
            raise DataError(f"texture_padim needs at least 2 normal images for a covariance, got {n}", dataset.name)
        k = min(int(self.calibration_folds), n // 3)  # each fit needs ≥ 2 images
        folds = np.array_split(np.random.default_rng(0).permutation(n), k) if k >= 2 else [np.arange(n)]
        fold_of = np.empty(n, np.int64)
        for j, fold in enumerate(folds):
            fold_of[fold] = j
        self._choose_backbone_channels()
        with torch.no_grad():
            moments = fold_moments(((idx, f) for idx, _, _, f in self._batches(normals, "texture_padim fit")),
                                   fold_of, len(folds))
            total = sum(moments[1:], moments[0])
            # channels standardised over all cells first: the filter responses differ in scale by
            # orders of magnitude, and the ridge is relative to the mean variance
            self.channel_mean_, scale = total.channel_stats()
            self.channel_scale_ = scale.clamp_min(1e-6)
            self.mean_, self.precision_ = total.gaussians(self.channel_mean_, self.channel_scale_,
                                                          float(self.shrinkage))
            g = int(self.grid)
            if k >= 2:
                s1 = torch.zeros(g, g, dtype=torch.float64)
                s2 = torch.zeros(g, g, dtype=torch.float64)
                for j, fold in enumerate(folds):
                    held_out = (total - moments[j]).gaussians(self.channel_mean_, self.channel_scale_,
                                                              float(self.shrinkage))
                    moments[j] = None  # type: ignore[call-overload]  # its memory back before the next fold
                    for _, _, _, f in self._batches(normals, f"texture_padim calibration {j + 1}/{k}",
                                                    np.sort(fold)):
                        d = mahalanobis_maps(self._standardise(f), *held_out).sqrt().double()
                        s1 += d.sum(0)
                        s2 += (d * d).sum(0)
                loc = s1 / n
                var = ((s2 - n * loc * loc) / (n - 1)).clamp_min(0)
                self.cell_loc_, self.cell_scale_ = loc.float(), var.sqrt().float().clamp_min(1e-6)
            else:
                self.cell_loc_, self.cell_scale_ = torch.zeros(g, g), torch.ones(g, g)
        self.n_train_ = n
        self.input_kind_ = normals.kind  # `detect score` refuses the other kind (cli/detect._check_kind)
        return self

    def _gaussians(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return per-cell mean (G·G, C) and regularised precision (G·G, C, C) of (N, C, G, G) features.

        Features already standardised; for the experiment scripts, which hold their features.
        """
        m = CellMoments(CellMoments.shift_from(feats[:1]))
        m.add(feats)
        c = feats.shape[1]
        return m.gaussians(torch.zeros(c), torch.ones(c), float(self.shrinkage))

    def _standardise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.channel_mean_[None, :, None, None]) / self.channel_scale_[None, :, None, None]

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every image."""
        self._check_fitted()
        if len(dataset) == 0:
            return DetectionResult(scores=np.zeros(0), maps=[])
        size = int(self.input_size)
        sigma = float(self.smoothing_sigma) * size / 256.0
        scores, maps = [], []
        with torch.no_grad():  # batch by batch: memory bounded by predict_batch_size, not by the set
            for _, part, canvas, f in self._batches(dataset, "score texture_padim"):
                cell = mahalanobis_maps(self._standardise(f), self.mean_, self.precision_).sqrt()
                cell = (cell - self.cell_loc_) / self.cell_scale_
                m = from_grid(cell, canvas.boxes, size, sigma)
                scores.append(masked_max(m, canvas.valid))
                maps += canvas_maps_to_input(m, canvas, part)
        return DetectionResult(scores=np.concatenate(scores), maps=maps)

    def _state(self):
        tensors = {"mean": self.mean_, "precision": self.precision_, "channel_mean": self.channel_mean_,
                   "channel_scale": self.channel_scale_, "cell_loc": self.cell_loc_, "cell_scale": self.cell_scale_}
        if self.backbone:  # the backbone's tensors travel with the run (a local checkpoint may be gone)
            tensors.update({f"backbone.{k}": v for k, v in self._extractor().backbone.state_dict().items()})
            if self.backbone_index_ is not None:
                tensors["backbone_index"] = self.backbone_index_
        return tensors, {"n_train": self.n_train_, "input_kind": self.input_kind_}

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
        self._extractor_cache = None
        self.backbone_index_ = tensors.get("backbone_index")
        if self.backbone:
            self._extractor({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
