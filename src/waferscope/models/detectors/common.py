"""Glue every torch anomaly detector shares: network input, batching, training loop, map post-processing.

Input (:func:`dataset_to_input`)
    wafer maps: nearest resize to S×S (``preprocess.resize_maps``), then ``onehot3`` (no-die, pass,
    fail channels); images: antialiased bilinear resize to S×S, values in [0, 1], grey replicated to 3
    channels. Images are not ImageNet-normalised here: a detector whose backbone expects that passes
    ``input_norm="imagenet"`` to its FeatureExtractor.

Output (:meth:`TorchDetector.score`)
    a detector returns an anomaly map per sample at network (or feature) resolution;
    :func:`postprocess_maps` brings it to S×S, smooths it with a Gaussian (σ = ``sigma`` px per 256 px
    of input, the σ=4 at 256 px used by PatchCore/STFPM), and for wafer maps sets pixels with no die
    to 0: **an anomaly only counts on the wafer**. Off-wafer pixels are constant by construction, so a
    wafer's shape (or the edge between wafer and background) never raises its score. The image score
    is by default the maximum of that masked map. :func:`maps_to_input_resolution` then upsamples each
    map bilinearly to that sample's own H×W, so ``DetectionResult.maps[i].shape == dataset.maps[i].shape[:2]``.

Training
    :func:`fit_loop`: the training engine (:mod:`waferscope.models.training`) with the batches every
    detector uses (Adam by default, seeded shuffling, optional random dihedral augmentation).
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from waferscope.base import DetectionResult, Detector
from waferscope.data import preprocess
from waferscope.data.classes import NORMAL_LABELS
from waferscope.data.dataset import validate_wafer_maps
from waferscope.errors import DataError
from waferscope.models.training import fit_loop as engine_fit_loop
from waferscope.models.training import index_batches, seed_everything

__all__ = ["dataset_to_input", "wafer_valid_masks", "training_normals", "seed_everything", "batch_slices",
           "fit_loop", "gaussian_blur", "postprocess_maps", "maps_to_input_resolution", "masked_max", "masked_max_t",
           "masked_topk_mean", "masked_topk_mean_t", "TorchDetector", "progress", "ImageCanvas", "image_canvas",
           "canvas_maps_to_input", "image_detectors", "default_detector_for"]


# ---- input --------------------------------------------------------------------------------------
def _resize_images(images: list[np.ndarray], size: int) -> np.ndarray:
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        x = preprocess.encode_images(img[None])  # (1, C, H, W) in [0, 1]
        if x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        t = torch.from_numpy(x)
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = t[0].numpy()
    return out


def dataset_to_input(dataset, size: int = 64) -> np.ndarray:
    """(N, 3, size, size) float32 network input for a WaferDataset of wafer maps or images."""
    if dataset.kind == "image":
        return _resize_images(dataset.maps, size)
    validate_wafer_maps(dataset.maps, dataset.name)  # a die value 7: a clear DataError, not an IndexError
    return preprocess.encode(preprocess.resize_maps(dataset.maps, size), "onehot3")


def wafer_valid_masks(dataset, size: int) -> np.ndarray | None:
    """(N, size, size) bool: where a die is (wafer maps); None for images (every pixel counts)."""
    if dataset.kind == "image":
        return None
    return preprocess.resize_maps(dataset.maps, size) != 0


def training_normals(dataset, where: str | None = None, all_normal: bool = False):
    """Return the normal samples (label ``none`` or ``good``) a detector trains on, or a clear DataError.

    ``all_normal=True``: the caller vouches that every sample is normal (e.g. a fab's known-good
    wafers, which carry no label): unlabelled samples are taken as normal (``none`` for wafer maps,
    ``good`` for images); a sample labelled with a defect class contradicts that and is an error.
    """
    if len(dataset) == 0:
        raise DataError("the training set is empty", where or dataset.name)
    if all_normal:
        import dataclasses

        from waferscope.data.classes import UNLABELLED

        labelled_defect = dataset.is_labelled & ~dataset.is_normal
        if labelled_defect.any():
            found = ", ".join(f"{k}: {v}" for k, v in dataset.subset(labelled_defect).class_counts().items())
            raise DataError(f"all samples were declared normal, but {int(labelled_defect.sum())} are labelled with "
                            f"a defect class ({found})", where or dataset.name)
        normal_name = "none" if dataset.kind == "wafer" else "good"
        labels = np.where(dataset.labels == UNLABELLED, normal_name, dataset.labels).astype(object)
        return dataclasses.replace(dataset, labels=labels)
    normal = dataset.is_normal
    if not normal.any():
        found = ", ".join(f"{k}: {v}" for k, v in dataset.class_counts().items())
        raise DataError(f"no normal samples to train a detector on (labels {sorted(NORMAL_LABELS)} needed; "
                        f"found {found})", where or dataset.name)
    return dataset.subset(normal)


def image_detectors() -> list[str]:
    """Return the registered detectors that take images (their tags' ``input_kinds``).

    Best first by their declared ``image_rank`` (lower is better; measured on real images,
    docs/detection.md).
    """
    from waferscope import registry

    names = [n for n in registry.available("detector") if "image" in registry.get(n, "detector").get_tags().input_kinds]
    return sorted(names, key=lambda n: (getattr(registry.get(n, "detector"), "image_rank", 100), n))


def default_detector_for(kind: str, wafer_default: str) -> str:
    """Return the detector ``detect train`` uses without a model name.

    For images the best-ranked image detector (:func:`image_detectors`), for wafer maps
    ``wafer_default``.
    """
    if kind == "image":
        names = image_detectors()
        if names:
            return names[0]
    return wafer_default


def require_wafer_maps(dataset, detector: str) -> None:
    """Raise a clear DataError when a die-statistics detector is given images instead of wafer maps.

    Or maps with die values other than 0/1/2.
    """
    if dataset.kind != "wafer":
        raise DataError(f"{detector} models die-state wafer maps, not images; detectors that take images: "
                        f"{', '.join(image_detectors())}", dataset.name)
    validate_wafer_maps(dataset.maps, dataset.name)


# ---- images as images ------------------------------------------------------------------------------
class ImageCanvas:
    """Images (or wafer maps) as one-channel network input that keeps each sample's aspect ratio.

    Each sample is resized (antialiased bilinear) so its longer side is ``size`` px, standardised
    (``normalise="image"``: its own mean/std, which removes lighting differences between shots;
    ``"dataset"``: the fitted training mean/std), and reflect-padded to ``size``×``size``: the pad
    continues the image, so no artificial edge appears where the image ends. ``valid`` marks the
    image's own pixels; anomaly maps are scored only there and cropped back to the image box before
    upsampling to the sample's native H×W (:func:`canvas_maps_to_input`). Wafer maps become grey
    (no die 0, pass 0.5, fail 1; nearest resize) with valid = where a die is.
    """

    def __init__(self, x: np.ndarray, valid: np.ndarray, boxes: list[tuple[int, int, int, int]]):
        self.x, self.valid, self.boxes = x, valid, boxes


def _grey(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    return x.mean(axis=2) if x.ndim == 3 else x


def _reflect_pad(t: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding of any width (in rounds: one round pads at most side - 1 px); a side of one pixel is replicated."""
    while top or bottom or left or right:
        h, w = t.shape[-2:]
        if (h == 1 and (top or bottom)) or (w == 1 and (left or right)):
            return F.pad(t, (left, right, top, bottom), mode="replicate")
        pt, pb, pl, pr = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
        t = F.pad(t, (pl, pr, pt, pb), mode="reflect")
        top, bottom, left, right = top - pt, bottom - pb, left - pl, right - pr
    return t


def image_canvas(dataset, size: int, normalise: str = "image", stats: tuple[float, float] | None = None,
                 border: int = 0) -> ImageCanvas:
    """:class:`ImageCanvas` of a dataset (N, 1, size, size). ``stats`` = (mean, std) for ``"dataset"``.

    ``border`` px of each image's own edge are left out of ``valid`` (a frame that is not inspected).
    """
    n = len(dataset)
    x = np.zeros((n, 1, size, size), np.float32)
    valid = np.zeros((n, size, size), bool)
    boxes: list[tuple[int, int, int, int]] = []
    is_wafer = dataset.kind != "image"
    if is_wafer:
        validate_wafer_maps(dataset.maps, dataset.name)
    for i, img in enumerate(dataset.maps):
        h, w = img.shape[:2]
        scale = size / max(h, w)
        nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
        if is_wafer:
            t = torch.from_numpy(np.asarray(img, np.float32) / 2.0)[None, None]
            t = F.interpolate(t, size=(nh, nw), mode="nearest")
            on = F.interpolate(torch.from_numpy(np.asarray(img) != 0).float()[None, None], size=(nh, nw),
                               mode="nearest")[0, 0] > 0
        else:
            t = torch.from_numpy(_grey(img))[None, None]
            if (nh, nw) != (h, w):
                t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            on = torch.ones(nh, nw, dtype=torch.bool)
        if normalise == "image":
            t = (t - t.mean()) / (t.std(unbiased=False) + 1e-3)
        elif normalise == "dataset" and stats is not None:
            t = (t - stats[0]) / (stats[1] + 1e-3)
        top, left = (size - nh) // 2, (size - nw) // 2
        t = _reflect_pad(t, top, size - nh - top, left, size - nw - left)
        x[i, 0] = t[0, 0].numpy()
        v = torch.zeros(size, size, dtype=torch.bool)
        v[top:top + nh, left:left + nw] = on
        if border > 0:
            inner = torch.zeros_like(v)
            b = min(border, (nh - 1) // 2, (nw - 1) // 2)
            inner[top + b:top + nh - b, left + b:left + nw - b] = True
            v &= inner
        valid[i] = v.numpy()
        boxes.append((top, left, nh, nw))
    return ImageCanvas(x, valid, boxes)


def canvas_maps_to_input(maps: torch.Tensor, canvas: ImageCanvas, dataset) -> list[np.ndarray]:
    """(N, S, S) maps on the canvas → each sample's own H×W.

    The image box, upsampled bilinearly; pixels outside ``valid`` (the border frame,
    off-wafer) are 0.
    """
    out = []
    for i, (top, left, nh, nw) in enumerate(canvas.boxes):
        m = maps[i] * torch.from_numpy(canvas.valid[i]).to(maps.dtype)
        m = m[top:top + nh, left:left + nw]
        h, w = dataset.maps[i].shape[:2]
        if (nh, nw) != (h, w):
            m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        a = np.array(m.numpy(), dtype=np.float32)
        if dataset.kind != "image":
            a[np.asarray(dataset.maps[i]) == 0] = 0.0
        out.append(a)
    return out


# ---- training helpers ---------------------------------------------------------------------------
# seed_everything is the training engine's (waferscope.models.training), re-exported for the detectors.


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Yield consecutive slices of ``batch_size`` of ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def progress(iterable: Iterable, total: int | None = None, desc: str = "", enabled: bool = True):
    """Tqdm to stderr, silent when disabled or when stderr is not a terminal and the job is short."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


def fit_loop(params, step: Callable[[torch.Tensor], torch.Tensor], inputs: np.ndarray, *, epochs: int,
             batch_size: int, lr: float, seed: int, augment: bool = True, weight_decay: float = 0.0,
             optimizer: torch.optim.Optimizer | None = None, desc: str = "train", progress: bool = True,
             modules: Iterable[torch.nn.Module] = ()) -> list[float]:
    """Minimise ``step(batch) -> loss`` over ``inputs`` (N, C, S, S) with the training engine.

    :func:`waferscope.models.training.fit_loop`; returns the per-epoch mean loss.

    What the detectors share is their batches: every epoch a seeded shuffle of ``inputs`` (seeded
    here, from ``seed``), each batch with an independent random rotation/flip per sample when
    ``augment`` (wafer patterns have no preferred orientation). The optimiser is Adam over
    ``params`` unless ``optimizer`` is given. ``modules`` are in train mode for the loop and eval
    mode after.
    """
    rng = seed_everything(seed)
    opt = optimizer or torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)

    def batches(epoch: int):
        for idx in index_batches(rng.permutation(len(inputs)), batch_size):
            batch = preprocess.augment_dihedral(inputs[idx], rng) if augment else inputs[idx]
            yield torch.from_numpy(np.ascontiguousarray(batch))

    def loss_of(x: torch.Tensor):
        return step(x), len(x)

    return engine_fit_loop(list(modules), batches, loss_of, epochs=epochs, optimizer=opt, progress=progress,
                           desc=desc).losses


# ---- output -------------------------------------------------------------------------------------
def _reflect_blur_matrix(n: int, k: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix B with (B @ x)[i] = Σ_t k[t]·x[reflect(i + t - r)]: a 1-D blur with reflect padding."""
    r = (len(k) - 1) // 2
    src = torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :]
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)
    mat = torch.zeros(n, n, dtype=k.dtype)
    mat.scatter_add_(1, src, k.expand(n, -1).contiguous())
    return mat


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) maps, reflect padding, truncated at 4σ.

    Computed as two batched matrix products with banded blur matrices (B_h @ X @ B_wᵀ): the same
    result as single-channel conv2d on padded maps, and ~10× faster on CPU for 64-px maps.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(math.ceil(4 * sigma)))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if radius < 1:
        return maps
    xs = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    k = torch.exp(-(xs ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    bh = _reflect_blur_matrix(maps.shape[-2], k)
    bw = _reflect_blur_matrix(maps.shape[-1], k)
    return torch.matmul(torch.matmul(bh, maps), bw.t())


def postprocess_maps(maps: torch.Tensor, size: int, sigma: float = 4.0, valid: np.ndarray | None = None) -> torch.Tensor:
    """(N, h, w) raw maps → (N, size, size): bilinear upsampling, Gaussian smoothing, off-wafer pixels 0.

    ``sigma`` is in pixels per 256 px of input (σ=4 at 256 px → σ=1 at 64 px).
    """
    maps = maps.float()
    if maps.ndim == 4:
        maps = maps[:, 0]
    if maps.shape[-2:] != (size, size):
        maps = F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    maps = gaussian_blur(maps, sigma * size / 256.0)
    if valid is not None:
        maps = maps * torch.from_numpy(np.ascontiguousarray(valid)).to(maps.dtype)
    return maps


def _valid_tensor(valid, like: torch.Tensor) -> torch.Tensor | None:
    if valid is None or isinstance(valid, torch.Tensor):
        return valid
    return torch.from_numpy(np.ascontiguousarray(valid)).reshape(like.shape)


def masked_max_t(maps: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-map maximum over valid (on-wafer) pixels as a tensor; a map with no valid pixel scores 0.

    Pure tensor code, so the exported ONNX graph scores exactly as :meth:`TorchDetector.score`.
    """
    flat = maps.flatten(1)
    if valid is None:
        return flat.max(1).values
    out = flat.masked_fill(~valid.flatten(1), -math.inf).max(1).values
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def masked_topk_mean_t(maps: torch.Tensor, valid: torch.Tensor | None = None, fraction: float = 0.02) -> torch.Tensor:
    """Per-map mean of the top ``fraction`` of valid pixel values (at least one pixel), as a tensor.

    Less sensitive than the maximum to one noisy pixel, and still driven by a small defect.
    """
    flat = maps.flatten(1)
    if valid is None:
        counts = torch.full((flat.shape[0],), flat.shape[1], dtype=torch.long)
        vals = flat
    else:
        v = valid.flatten(1)
        counts = v.sum(1)
        vals = flat.masked_fill(~v, -math.inf)
    k = torch.clamp((counts.float() * fraction).ceil().long(), min=1)
    # Eager: only the largest k needed by any map. Traced for ONNX, k depends on the input, so take
    # them all (a full sort); the kept values and the result are the same.
    k_max = flat.shape[1] if torch.jit.is_tracing() else int(k.max())
    top = vals.topk(k_max, dim=1).values
    keep = torch.arange(top.shape[1])[None, :] < k[:, None]
    top = torch.where(keep & torch.isfinite(top), top, torch.zeros_like(top))
    return top.sum(1) / k.float()


def masked_max(maps: torch.Tensor, valid: np.ndarray | None = None) -> np.ndarray:
    """:func:`masked_max_t` with a numpy mask in and float64 scores out."""
    return masked_max_t(maps, _valid_tensor(valid, maps)).numpy().astype(np.float64)


def masked_topk_mean(maps: torch.Tensor, valid: np.ndarray | None = None, fraction: float = 0.02) -> np.ndarray:
    """:func:`masked_topk_mean_t` with a numpy mask in and float64 scores out."""
    return masked_topk_mean_t(maps, _valid_tensor(valid, maps), fraction).numpy().astype(np.float64)


def maps_to_input_resolution(maps: torch.Tensor | np.ndarray, dataset, sigma: float = 0.0) -> list[np.ndarray]:
    """Upsample each (S×S) map bilinearly to its sample's own H×W (float32 numpy arrays).

    Samples of the same shape are resized together. With ``sigma`` > 0, smooth again at the input
    resolution (σ per 256 px). For wafer maps, pixels with no die are set to 0 at input resolution too.
    """
    maps_t = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    shapes = [tuple(m.shape[:2]) for m in dataset.maps]
    out: list[np.ndarray | None] = [None] * len(shapes)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(s, []).append(i)
    for (h, w), idx in groups.items():
        sel = maps_t[idx]
        if sel.shape[-2:] != (h, w):
            sel = F.interpolate(sel[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        if sigma > 0:
            sel = gaussian_blur(sel, sigma * max(h, w) / 256.0)
        arr = sel.numpy().astype(np.float32, copy=False)
        for j, i in enumerate(idx):
            a = np.array(arr[j], dtype=np.float32)
            if dataset.kind == "wafer":
                a[dataset.maps[i] == 0] = 0.0
            out[i] = a
    return out  # type: ignore[return-value]


# ---- the base class -----------------------------------------------------------------------------
class TorchDetector(Detector):
    """Base for torch detectors: subclasses implement ``fit`` and ``_predict_batch``.

    ``_predict_batch(x)`` gets a float tensor (B, 3, S, S) and returns ``(scores or None, maps)``
    with maps (B, h, w) at any resolution. ``score`` batches the data under ``torch.inference_mode``,
    post-processes the maps (see the module docstring) and, when a subclass returns no scores, scores
    each sample with ``_image_scores`` (default: the maximum of its post-processed map). Subclasses need attributes ``input_size``,
    ``predict_batch_size`` (inference batch), ``smoothing_sigma`` and ``progress`` (set them as constructor
    parameters, or rely on these class defaults).
    """

    # the network detectors' shared parameter descriptions (waferscope.vocabulary.fill_docstring)
    _docstrings = {
        "input_size": "Side in pixels of the square network input (S×S) each map or image is resized to.",
        "lr": "Learning rate of the optimiser.",
        "weight_decay": "Weight decay of the optimiser.",
    }

    input_size: int = 64
    predict_batch_size: int = 64
    smoothing_sigma: float = 4.0
    progress: bool = True
    # Declared capabilities (base.Tags; see image_detectors): the torch detectors take images and export
    # to ONNX; image_rank orders them for `detect train` on images (lower = better measured on real
    # images, docs/detection.md).
    _tags = {"input_kinds": ("wafer", "image"), "onnx": True}
    image_rank: int = 50

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    def network_input_size(self) -> int:
        """Side S of the S×S network input (a detector whose default depends on the data kind resolves it at fit)."""
        return int(self.input_size)

    def _image_scores_t(self, maps: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Image scores from post-processed (N, S, S) maps when _predict_batch returns none.

        Tensor in, tensor out and traceable: the ONNX export calls it inside the graph.
        """
        return masked_max_t(maps, valid)

    def _image_scores(self, maps: torch.Tensor, valid: np.ndarray | None) -> np.ndarray:
        return self._image_scores_t(maps, _valid_tensor(valid, maps)).numpy().astype(np.float64)

    def _eval_modules(self) -> list[torch.nn.Module]:
        """Modules to switch to eval mode before scoring (default: every nn.Module attribute ending in _)."""
        return [v for k, v in vars(self).items() if k.endswith("_") and isinstance(v, torch.nn.Module)]

    def score_input(self, inputs: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """Score preprocessed input (N, 3, S, S): image scores and (N, S, S) post-processed maps."""
        self._check_fitted()
        for m in self._eval_modules():
            m.eval()
        size = inputs.shape[-1]
        n = len(inputs)
        scores = np.empty(n, dtype=np.float64)
        maps = torch.empty((n, size, size), dtype=torch.float32)
        with torch.inference_mode():
            slices = list(batch_slices(n, int(self.predict_batch_size)))
            for sl in progress(slices, desc=f"score {self.registry_name}", enabled=bool(self.progress) and len(slices) > 4):
                x = torch.from_numpy(np.ascontiguousarray(inputs[sl]))
                s, raw = self._predict_batch(x)
                v = None if valid is None else valid[sl]
                pm = postprocess_maps(raw, size, float(self.smoothing_sigma), v)
                maps[sl] = pm
                scores[sl] = self._image_scores(pm, v) if s is None else np.asarray(torch.as_tensor(s).float(), dtype=np.float64)
        return scores, maps

    def score(self, dataset) -> DetectionResult:
        """Return the anomaly score and map of every sample (see :meth:`score_input`)."""
        size = self.network_input_size()
        inputs = dataset_to_input(dataset, size)
        scores, maps = self.score_input(inputs, wafer_valid_masks(dataset, size))
        return DetectionResult(scores=scores, maps=maps_to_input_resolution(maps, dataset))
