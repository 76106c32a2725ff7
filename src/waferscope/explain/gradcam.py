"""Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and LayerCAM (Jiang et al. 2021), batched.

Both weight the activations ``A`` of a convolutional layer by the gradient of the class score:
Grad-CAM with the spatial mean of the gradient, Grad-CAM++ with pixel-wise weights that favour
the positive gradients of every instance of a pattern (several blobs of a Loc wafer, the arms of
a Scratch), LayerCAM with the positive gradient at every position (finer maps from shallower layers). The target layer defaults to the last convolution whose output still has a spatial
extent of at least 4×4: on 48–64 px wafer inputs the deepest layer is often 2×2 or 4×4, too
coarse to point at a die.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from waferscope.data.preprocess import nearest_index
from waferscope.errors import ConfigError

METHODS = ("gradcam", "gradcam++", "layercam")


def conv_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Every Conv2d of ``model`` with the output shape it produces for ``example``."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, mod in named:
        hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape))))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return [(n, m, shapes[n]) for n, m in named if n in shapes]


def find_target_layer(model: nn.Module, example: torch.Tensor, min_size: int = 4) -> str:
    """Return the network's declared ``explain_layer`` if it has one (e.g. ``cnn_fine``'s die-resolution map).

    Else the name of the last Conv2d whose output is at least ``min_size`` on each side.
    """
    declared = getattr(model, "explain_layer", None)
    if declared is not None and declared in dict(model.named_modules()):
        return declared
    convs = conv_layers(model, example)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layer: Grad-CAM needs a convolutional network")
    good = [n for n, _, s in convs if len(s) == 4 and min(s[2:]) >= min_size]
    return good[-1] if good else convs[-1][0]


class GradCAM:
    """Class-activation maps for a batch: ``GradCAM(model)(x, targets)`` → (N, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, target_layer: str | None = None, method: str = "gradcam"):
        if method not in METHODS:
            raise ConfigError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
        self.model = model
        self.target_layer = target_layer
        self.method = method

    def _layer(self, x: torch.Tensor) -> nn.Module:
        if self.target_layer is None:
            self.target_layer = find_target_layer(self.model, x)
        modules = dict(self.model.named_modules())
        if self.target_layer not in modules:
            raise ConfigError(f"target layer {self.target_layer!r} not in {type(self.model).__name__}; "
                              f"convolutions: {', '.join(n for n, m in modules.items() if isinstance(m, nn.Conv2d))}")
        return modules[self.target_layer]

    def __call__(self, x: torch.Tensor, targets: Sequence[int] | torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (cams (N, H, W) float32 in [0, 1] at the input's resolution, logits (N, C))."""
        self.model.eval()
        layer = self._layer(x)
        store: dict[str, torch.Tensor] = {}
        handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            with torch.enable_grad():
                # Grad on the input too, so a frozen target layer (e.g. a pretrained encoder whose
                # parameters do not require grad) still yields activations autograd can follow.
                logits = self.model(x.detach().requires_grad_(True))
                if targets is None:
                    targets = logits.argmax(1)
                targets = torch.as_tensor(targets, dtype=torch.long)
                chosen = logits.gather(1, targets[:, None]).sum()
                # Samples are independent in eval mode, so one backward pass serves the whole batch.
                (grads,) = torch.autograd.grad(chosen, store["a"])
        finally:
            handle.remove()
        acts = store["a"].detach()
        if self.method == "gradcam":
            weights = grads.mean(dim=(2, 3), keepdim=True)
        elif self.method == "layercam":
            weights = F.relu(grads)
        else:  # Grad-CAM++ with the exponential-score closed form (eq. 19 of the paper)
            g2, g3 = grads.pow(2), grads.pow(3)
            denom = 2 * g2 + (acts * g3).sum(dim=(2, 3), keepdim=True)
            alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
            weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * acts).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
        return (cam / peak).numpy().astype(np.float32), logits.detach().numpy()


@lru_cache(maxsize=1024)
def _pixels_to_dies(n_dies: int, size: int) -> np.ndarray:
    """(n_dies, size) averaging matrix: die d's value is the mean over the pixels that show die d.

    The network saw the wafer through a nearest resize (``resize_maps``), which copies each die to
    one or more pixels; averaging those pixels is the exact inverse. A die no pixel shows (grids
    wider than the input) takes the pixel nearest its centre.
    """
    shown = nearest_index(n_dies, size)
    pool = np.zeros((n_dies, size), np.float32)
    pool[shown, np.arange(size)] = 1.0
    for die in np.flatnonzero(pool.sum(1) == 0):
        pool[die, min(size - 1, int((die + 0.5) * size / n_dies))] = 1.0
    return pool / pool.sum(1, keepdims=True)


def to_die_grid(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One S×S heat map → the wafer's own die grid.

    Each die gets the mean heat of the pixels that showed it to the network (see
    :func:`_pixels_to_dies`).
    """
    rows = _pixels_to_dies(int(shape[0]), cam.shape[0])
    cols = _pixels_to_dies(int(shape[1]), cam.shape[1])
    return (rows @ np.asarray(cam, np.float32) @ cols.T).astype(np.float32)
