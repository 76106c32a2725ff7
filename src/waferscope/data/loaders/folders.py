"""Folders of wafer maps: ``<root>/<class>/*.npy`` (2-D die-state arrays) and ``<root>/<class>/*.png``
(rendered maps), plus a single ``.npy`` stack (N×H×W, unlabelled).

PNG maps are decoded to die states 0/1/2 by colour: first against known palettes (waferscope's
:data:`~waferscope.data.render.PALETTE`, grey 0/127/255 or 0/128/255, raw grey values 0/1/2, and
matplotlib's default viridis as drawn by ``plt.imshow(waferMap)``); otherwise, when the image has
exactly three colours, by luminance (darkest = no die, brightest = fail). Anything else is refused:
guessing the meaning of unknown colours would silently corrupt labels. Maps drawn with an integer
upscale (``render_map(m, scale=s)``) are reduced back to one pixel per die.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

from waferscope.data.limits import LoadLimits
from waferscope.data.classes import canonical_label
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.errors import DataError

MAP_SUFFIXES = (".npy", ".png")
KNOWN_PALETTES = {
    "waferscope": None,  # filled from render.PALETTE at first use (keeps matplotlib out of imports)
    "grey 0/127/255": np.array([[0, 0, 0], [127, 127, 127], [255, 255, 255]]),
    "grey 0/128/255": np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]]),
    "raw 0/1/2": np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]),
    "viridis": np.array([[68, 1, 84], [33, 145, 140], [253, 231, 37]]),
}
TOLERANCE = 3  # per channel, for palettes that went through 8-bit rounding


def _palettes() -> dict[str, np.ndarray]:
    if KNOWN_PALETTES["waferscope"] is None:
        from waferscope.data.render import PALETTE

        KNOWN_PALETTES["waferscope"] = PALETTE.astype(int)
    return KNOWN_PALETTES


def _upscale_factor(codes: np.ndarray) -> int:
    """The integer s such that the map is made of s×s blocks (1 when it is not)."""
    if len(np.unique(codes)) < 2:
        return 1
    g = 0
    for axis in (0, 1):
        a = np.moveaxis(codes, axis, 0)
        changes = np.flatnonzero(np.any(a[1:] != a[:-1], axis=1)) + 1
        g = gcd(g, int(np.gcd.reduce(np.r_[changes, a.shape[0]])))
    return max(g, 1)


def decode_png_map(path: str | Path) -> np.ndarray:
    """A rendered wafer-map PNG → H×W uint8 die states, or a DataError naming the colours."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"))
                if (rgba[..., 3] != 255).any():
                    raise DataError("transparent pixels: expected an opaque rendered wafer map", path)
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read as an image ({exc})", path) from None
    flat = rgb.reshape(-1, 3)
    colours, codes = np.unique(flat, axis=0, return_inverse=True)
    codes = codes.reshape(rgb.shape[:2])
    state_of_colour = None
    for name, palette in _palettes().items():
        dist = np.abs(colours[:, None, :] - palette[None, :, :]).max(axis=2)  # (colours, 3)
        nearest = dist.argmin(axis=1)
        if (dist.min(axis=1) <= TOLERANCE).all() and len(set(nearest.tolist())) == len(colours):
            state_of_colour = nearest  # every colour is a distinct palette entry
            break
    if state_of_colour is None:
        shown = ", ".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours[:6]) + (" …" if len(colours) > 6 else "")
        if len(colours) < 3:
            raise DataError(f"ambiguous colours ({len(colours)}: {shown}): they match no known palette, and with "
                            "fewer than 3 colours their die states cannot be told by brightness", path)
        if len(colours) > 3:
            raise DataError(f"unknown colours ({len(colours)}: {shown}); a rendered wafer map uses the waferscope "
                            "palette, grey 0/127/255, viridis, or exactly 3 colours (darkest = no die, "
                            "brightest = fail)", path)
        luminance = colours @ np.array([0.299, 0.587, 0.114])
        state_of_colour = np.argsort(np.argsort(luminance))
    states = np.asarray(state_of_colour, dtype=np.uint8)[codes]
    s = _upscale_factor(states)
    if s > 1:
        states = states[::s, ::s]
    return np.ascontiguousarray(states)


def load_npy_map(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError for object arrays / bad header, EOFError when truncated
        raise DataError(f"cannot read as .npy ({type(exc).__name__}: {exc})", path) from None
    return arr


def load_class_folders(root: str | Path) -> WaferDataset:
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    maps, labels, ids = [], [], []
    for d in class_dirs:
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in MAP_SUFFIXES and not p.name.startswith(".")):
            m = load_npy_map(f) if f.suffix.lower() == ".npy" else decode_png_map(f)
            try:
                m = validate_map(m)
            except DataError as exc:
                raise DataError(exc.problem.removeprefix("map: "), f) from None
            maps.append(m)
            labels.append(canonical_label(d.name))
            ids.append(f"{d.name}/{f.stem}")
    if not maps:
        raise DataError("no wafer maps found: expected <folder>/<class>/*.npy or *.png "
                        "(or an MVTec-AD folder with train/good)", root)
    return WaferDataset.from_maps(maps, labels, meta={"id": ids, "source": root.name}, source=root.name,
                                  name=root.name, validate=False, where=str(root))


def load_npy_stack(path: str | Path, limits: LoadLimits | None = None) -> WaferDataset:
    """One ``.npy`` file: an N×H×W stack of maps (unlabelled) or a single H×W map. The npy header
    (shape, dtype) is checked against ``limits`` before the data is read."""
    from waferscope.data.limits import resolve_limits

    path = Path(path)
    limits = resolve_limits(limits)
    _check_npy_header(path, limits)
    arr = load_npy_map(path)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"expected an H×W map or an N×H×W stack of maps, got shape {arr.shape}", path)
    maps = [validate_map(m, str(path), i) for i, m in enumerate(arr)]
    return WaferDataset.from_maps(maps, None, meta={"id": [f"{path.stem}-{i}" for i in range(len(maps))]},
                                  source=path.name, name=path.stem, validate=False, where=str(path))


def _check_npy_header(path: Path, limits: LoadLimits) -> None:
    """Refuse a stack whose header states more maps, a larger side or more dies than ``limits``
    allow, or more data than the file holds, before numpy allocates it."""
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:
                return  # other versions: np.load reads (and refuses) them itself
            data_start = f.tell()
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"cannot read as .npy ({type(exc).__name__}: {exc})", path) from None
    if dtype.hasobject:
        return  # np.load(allow_pickle=False) refuses it with its own message
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        return  # the shape error is raised after loading, with the shape named
    limits.check_count(int(shape[0]), path)
    budget = limits.budget(path)
    for i in range(int(shape[0])):
        budget.add(shape[1:], f"map {i}")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size - data_start
    if need > have:
        raise DataError(f"the header states {shape} of {dtype} ({need:,} bytes) but the file holds "
                        f"{have:,} bytes of data: truncated or corrupt", path)
