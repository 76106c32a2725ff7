"""Drawing wafer maps: one fixed palette everywhere (figures, overlays, and PNG round trips).

``render_map`` turns a die-state map into an RGB image; ``montage_per_class`` draws a few maps of
every class into one PNG with a colour legend, each die with the aspect ratio of its die pitch when
the data set knows it (``die_pitch_x``/``die_pitch_y`` metadata from fab files). Maps are drawn as
stored: row 0 at the top, notch down (see :mod:`waferscope.data.loaders.fabcommon`). The PNG folder loader decodes images drawn with
:data:`PALETTE` back to die states exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from waferscope.data.classes import CLASSES
from waferscope.errors import DataError

# no die, pass, fail. White background so the wafer outline reads on paper; pass a pale blue-grey
# so fails dominate; fail Okabe-Ito vermillion (distinct for the common colour-vision deficiencies).
PALETTE = np.array([[255, 255, 255], [190, 205, 220], [213, 94, 0]], dtype=np.uint8)
STATE_NAMES = ("no die", "pass", "fail")


def render_map(m: np.ndarray, scale: int = 1, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Return an H×W die-state map → (H·scale)×(W·scale)×3 uint8 RGB.

    Images (H×W or H×W×3) are returned as RGB unchanged apart from the upscaling.
    """
    arr = np.asarray(m)
    if arr.ndim == 3 and arr.shape[2] == 3:
        rgb = arr.astype(np.uint8, copy=False)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        rgb = np.repeat(arr.astype(np.uint8, copy=False), 3, axis=2)
    elif arr.ndim == 2 and arr.size and int(arr.max()) <= 2 and int(arr.min()) >= 0:
        rgb = np.asarray(palette, dtype=np.uint8)[arr.astype(np.intp)]
    elif arr.ndim == 2 and arr.size:  # a grey image
        rgb = np.repeat(arr.astype(np.uint8, copy=False)[:, :, None], 3, axis=2)
    else:
        raise DataError(f"cannot render an array of shape {arr.shape}")
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(rgb)


def die_aspect(meta, i: int) -> float:
    """Return the height/width of one die of map ``i`` from its ``die_pitch_x``/``die_pitch_y`` metadata.

    The pitch a fab file states, e.g. KLARF DiePitch, G85 DeviceSizeX/Y, E142 DeviceSize; 1
    (square) when unknown.
    """
    if meta is None or "die_pitch_x" not in meta or "die_pitch_y" not in meta:
        return 1.0
    try:
        px, py = float(meta["die_pitch_x"].iloc[i]), float(meta["die_pitch_y"].iloc[i])
    except (TypeError, ValueError):
        return 1.0
    if not (np.isfinite(px) and np.isfinite(py) and px > 0 and py > 0):
        return 1.0
    return py / px


def _class_order(labels: np.ndarray) -> list[str]:
    present = set(labels.astype(str))
    known = [c for c in CLASSES if c in present]
    return known + sorted(present - set(known))


def montage_per_class(dataset, path: str | Path, per_class: int = 8, seed: int = 0, title: str | None = None) -> Path:
    """Return a grid: one row per class (WM-811K order first), up to ``per_class`` random maps per row.

    Row titles with class counts, and a legend of the die-state colours. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    if not len(dataset):
        raise DataError("nothing to draw: the data set is empty")
    rng = np.random.default_rng(seed)
    labels = dataset.labels.astype(str)
    classes = _class_order(labels)
    ncols = max(1, per_class)
    fig, axes = plt.subplots(len(classes), ncols, figsize=(1.3 * ncols + 1.2, 1.4 * len(classes) + 0.8),
                             squeeze=False)
    for r, cls in enumerate(classes):
        idx = np.flatnonzero(labels == cls)
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                # a die is drawn pitch_y/pitch_x as tall as wide, as a vendor viewer draws it
                ax.imshow(render_map(dataset.maps[pick[c]]), interpolation="nearest",
                          aspect=die_aspect(dataset.meta, int(pick[c])))
        axes[r, 0].set_ylabel(f"{cls or '(unlabelled)'}\n(n={len(idx)})", rotation=0, ha="right", va="center",
                              fontsize=9)
    if dataset.kind == "wafer":
        handles = [Patch(facecolor=PALETTE[i] / 255, edgecolor="0.4", label=STATE_NAMES[i]) for i in range(3)]
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(title or f"{dataset.name}: {len(dataset)} {'maps' if dataset.kind == 'wafer' else 'images'}",
                 y=0.995, fontsize=10, va="top")
    fig.tight_layout(rect=(0, 0.035 if dataset.kind == "wafer" else 0, 1, 0.975))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except FileNotFoundError:
        raise DataError("output folder does not exist", path.parent) from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write one RGB (or grey) uint8 array as a PNG, atomically."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
