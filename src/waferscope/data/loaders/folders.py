"""Folders of wafer maps, and a single ``.npy`` stack (N×H×W, unlabelled).

The folders are ``<root>/<class>/*.npy`` (2-D die-state arrays) and ``<root>/<class>/*.png``
(rendered maps).

PNG maps are decoded to die states 0/1/2 by colour: first against waferscope's own
:data:`~waferscope.data.render.PALETTE` and raw grey values 0/1/2; otherwise, for 2 or 3 colours,
against matplotlib colour maps (:data:`COLORMAPS`: viridis, jet, plasma, inferno, magma, cividis,
turbo, Greys, gray, binary, ... as drawn by ``plt.imsave``/``plt.imshow`` of the 0/1/2 array): the
colours' order along the colour map is the value order, and the image corners (outside the wafer)
say which end is 'no die'. Brightness alone is not used: jet's middle (green) is its brightest colour
and Greys runs white → black, so a darkest-to-brightest rule swaps pass and fail. Anything else is
refused: guessing the meaning of unknown colours would silently corrupt labels. Maps drawn with an integer
upscale (``render_map(m, scale=s)``) are reduced back to one pixel per die.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

from waferscope.data.limits import LoadLimits, read_npy_header
from waferscope.data.classes import canonical_label
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.errors import DataError

MAP_SUFFIXES = (".npy", ".png")
KNOWN_PALETTES = {
    "waferscope": None,  # filled from render.PALETTE at first use (keeps matplotlib out of imports)
    "raw 0/1/2": np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]),
}
# matplotlib colour maps a wafer map is commonly drawn with (plt.imsave / plt.imshow of the 0/1/2 array).
# A map drawn with one of them (or its _r reverse) is decoded by the colours' positions along the colour
# map: value order = position order. The list is kept short on purpose: matched against every colour map
# matplotlib has, three arbitrary colours would too often land near some entry of some obscure map.
COLORMAPS = ("viridis", "jet", "plasma", "inferno", "magma", "cividis", "turbo", "Greys", "gray", "binary",
             "hot", "bone", "rainbow", "coolwarm", "Blues", "Reds")
TOLERANCE = 3  # per channel, for palettes that went through 8-bit rounding (imsave truncates, others round)
_LUTS: dict[str, np.ndarray] = {}


def _palettes() -> dict[str, np.ndarray]:
    if KNOWN_PALETTES["waferscope"] is None:
        from waferscope.data.render import PALETTE

        KNOWN_PALETTES["waferscope"] = PALETTE.astype(int)
    return KNOWN_PALETTES


def _colormap_luts() -> dict[str, np.ndarray]:
    """Name → (N, 3) 0-255 colours of each colour map in :data:`COLORMAPS` (matplotlib imported once)."""
    if not _LUTS:
        import matplotlib

        for name in COLORMAPS:
            cmap = matplotlib.colormaps[name]
            _LUTS[name] = np.round(cmap(np.linspace(0.0, 1.0, cmap.N))[:, :3] * 255).astype(np.int16)
    return _LUTS


def _colormap_positions(colours: np.ndarray) -> dict[str, np.ndarray]:
    """For every colour map in which each of ``colours`` appears (within :data:`TOLERANCE`) at a distinct place.

    Name → the colours' positions along it (0..1).
    """
    found = {}
    for name, lut in _colormap_luts().items():
        dist = np.abs(colours[:, None, :] - lut[None, :, :]).max(axis=2)  # (colours, N)
        idx = dist.argmin(axis=1)
        if (dist[np.arange(len(colours)), idx] <= TOLERANCE).all() and len(set(idx.tolist())) == len(colours):
            found[name] = idx / (len(lut) - 1)
    return found


def _corner_colour(codes: np.ndarray) -> int | None:
    """Return the colour of the four corner pixels when they agree.

    On a wafer map (a disc in its bounding box) the corners lie outside the wafer, so that colour
    is 'no die'.
    """
    corners = {int(codes[0, 0]), int(codes[0, -1]), int(codes[-1, 0]), int(codes[-1, -1])}
    return corners.pop() if len(corners) == 1 else None


def _states_from_colormaps(colours: np.ndarray, codes: np.ndarray, path: Path) -> np.ndarray | None:
    """Die state per colour for a map drawn with a matplotlib colour map, None when none matches.

    DataError when the colours fit colour maps that disagree. Three colours = low/mid/high value =
    no die/pass/fail: the middle colour along the colour map is 'pass'; the corner colour (outside
    the wafer) tells which end is 'no die', so reversed maps (``jet_r``, ``Greys`` vs ``gray``) read
    right; without such a corner, the colour map's own direction does (low end = no die).
    """
    found = _colormap_positions(colours)
    if not found:
        return None
    names = ", ".join(sorted(found))
    corner = _corner_colour(codes)
    orders = {tuple(np.argsort(pos).tolist()) for pos in found.values()}  # colours from low to high
    if len(colours) == 3:
        if len({o[1] for o in orders}) > 1:  # the matching maps disagree on which colour is 'pass'
            raise DataError(f"ambiguous colours: they fit the colour maps {names}, which order them differently; "
                            "save the maps with the waferscope palette (waferscope.data.render.render_map) "
                            "or as .npy", path)
        low_to_high = next(iter(orders))
        if corner is not None and corner != low_to_high[1]:
            low_to_high = low_to_high if corner == low_to_high[0] else low_to_high[::-1]
        elif len(orders) > 1:
            raise DataError(f"ambiguous colours: they fit the colour maps {names} in opposite directions, and "
                            "the image corners (outside the wafer = no die) do not tell which end is 'no die'",
                            path)
        states = np.empty(3, np.uint8)
        states[list(low_to_high)] = [0, 1, 2]
        return states
    # Two colours. plt.imsave/imshow stretch the map's own values over the colour map: a map without
    # fails (0/1) shows both ends; with vmin=0, vmax=2 it shows the low end and the middle.
    if corner is None:
        raise DataError(f"ambiguous colours: 2 colours of the colour map(s) {names} and the image corners do "
                        "not tell which one is 'no die'", path)
    states = np.ones(2, np.uint8)
    states[corner] = 0  # the other colour: pass (a wafer whose every die fails is not a map one draws)
    return states


def _upscale_factor(codes: np.ndarray) -> int:
    """Return the integer s such that the map is made of s×s blocks (1 when it is not)."""
    if len(np.unique(codes)) < 2:
        return 1
    g = 0
    for axis in (0, 1):
        a = np.moveaxis(codes, axis, 0)
        changes = np.flatnonzero(np.any(a[1:] != a[:-1], axis=1)) + 1
        g = gcd(g, int(np.gcd.reduce(np.r_[changes, a.shape[0]])))
    return max(g, 1)


def decode_png_map(path: str | Path) -> np.ndarray:
    """Return a rendered wafer-map PNG → H×W uint8 die states, or a DataError naming the colours."""
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
    if state_of_colour is None and len(colours) in (2, 3):
        state_of_colour = _states_from_colormaps(colours, codes, path)
    if state_of_colour is None:
        shown = ", ".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours[:6]) + (" …" if len(colours) > 6 else "")
        if len(colours) < 3:
            raise DataError(f"ambiguous colours ({len(colours)}: {shown}): they match no known palette or colour "
                            "map, so their die states cannot be told", path)
        raise DataError(f"unknown colours ({len(colours)}: {shown}); a rendered wafer map uses the waferscope "
                        "palette, raw grey 0/1/2, or 3 colours of one matplotlib colour map (" + ", ".join(COLORMAPS)
                        + "; plt.imsave of the 0/1/2 array, no interpolation); save other maps as .npy", path)
    states = np.asarray(state_of_colour, dtype=np.uint8)[codes]
    s = _upscale_factor(states)
    if s > 1:
        states = states[::s, ::s]
    return np.ascontiguousarray(states)


def load_npy_map(path: Path) -> np.ndarray:
    """Load one ``.npy`` map; a DataError naming the file when it cannot be read."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError for object arrays / bad header, EOFError when truncated
        raise DataError(f"cannot read as .npy ({type(exc).__name__}: {exc})", path) from None
    return arr


def load_class_folders(root: str | Path) -> WaferDataset:
    """Read ``<root>/<class>/*.npy`` / ``*.png`` folders into a labelled data set."""
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
    """One ``.npy`` file: an N×H×W stack of maps (unlabelled) or a single H×W map.

    The npy header (shape, dtype) is checked against ``limits`` before the data is read.
    """
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
    """Refuse a stack whose header states more maps, a larger side or more dies than ``limits`` allow.

    Or more data than the file holds, before numpy allocates it.
    """
    try:
        with open(path, "rb") as f:
            header = read_npy_header(f)
            if header is None:
                return  # other versions: np.load reads (and refuses) them itself
            shape, dtype = header
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
