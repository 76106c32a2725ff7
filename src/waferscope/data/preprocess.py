"""Preprocessing shared by every model: resize to S×S, channel encodings, augmentation, splits.

Resizing uses nearest-neighbour sampling so the three die states stay exact (no blending of
"pass" and "fail" into a meaningless 1.5). Non-square die grids are stretched to a square: a real
wafer is round, and its die grid is only rectangular because dies are, so stretching restores the
circle.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from waferscope.errors import DataError

ENCODINGS = ("onehot", "single", "onehot3")


@lru_cache(maxsize=4096)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Return, for each of ``n_out`` cells, the index of the nearest of ``n_in`` source cells (centre sampling)."""
    # Sample at pixel centres: output pixel j covers input coordinate (j + 0.5) * n_in / n_out.
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def resize_map(m: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one map (or mask, or H×W×C image) to ``size``."""
    h_out, w_out = (size, size) if isinstance(size, int) else size
    ri = nearest_index(m.shape[0], h_out)
    ci = nearest_index(m.shape[1], w_out)
    return m[ri[:, None], ci[None, :]]


@lru_cache(maxsize=4096)
def _flat_index(h: int, w: int, size: int) -> np.ndarray:
    return (nearest_index(h, size)[:, None] * w + nearest_index(w, size)[None, :]).ravel()


def resize_maps(maps: Sequence[np.ndarray], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize every map to size×size; returns an (N, size, size[, C]) array of the input dtype.

    One cached flat gather index per input shape makes this ~3× faster than 2-D fancy indexing
    (see benchmarks/bench_data.py).
    """
    if not len(maps):
        return np.zeros((0, size, size), dtype=np.uint8)
    first = maps[0]
    if out is None:
        out = np.empty((len(maps), size, size) + first.shape[2:], dtype=first.dtype)
    if first.ndim != 2:  # images with channels: the plain path
        for i, m in enumerate(maps):
            out[i] = resize_map(m, size)
        return out
    flat = out.reshape(len(maps), -1)
    for i, m in enumerate(maps):
        np.take(np.ascontiguousarray(m).ravel(), _flat_index(m.shape[0], m.shape[1], size), out=flat[i])
    return out


def encode(batch: np.ndarray, encoding: str = "onehot") -> np.ndarray:
    """Turn an (N, S, S) uint8 batch of die states into float32 network input (N, C, S, S).

    - ``onehot``: 2 channels, pass and fail (no-die is the zero vector)
    - ``onehot3``: 3 channels, no-die, pass, fail
    - ``single``: 1 channel, state / 2 (0, 0.5, 1)
    """
    if batch.ndim == 2:
        batch = batch[None]
    if encoding == "onehot":
        return np.stack([batch == 1, batch == 2], axis=1).astype(np.float32)
    if encoding == "onehot3":
        return np.stack([batch == 0, batch == 1, batch == 2], axis=1).astype(np.float32)
    if encoding == "single":
        return (batch.astype(np.float32) / 2.0)[:, None]
    raise DataError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def channels(encoding: str) -> int:
    """Return the input channels of ``encoding``."""
    return {"onehot": 2, "onehot3": 3, "single": 1}[encoding]


def encode_images(batch: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) uint8 images → float32 (N, C, H, W) in [0, 1]."""
    x = batch.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x)


def dihedral(batch: np.ndarray, k: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Return the k-th of the 8 rotations/flips of a square (k in 0..7)."""
    out = np.rot90(batch, k % 4, axes=axes)
    if k >= 4:
        out = np.flip(out, axis=axes[1])
    return out


def augment_dihedral(batch: np.ndarray, rng: np.random.Generator, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Apply an independent random rotation/flip to each item of a batch (first axis)."""
    ks = rng.integers(0, 8, size=len(batch))
    out = np.empty_like(batch)
    item_axes = tuple(a if a < 0 else a - 1 for a in axes)  # the same axes, within one item
    for k in range(8):
        sel = np.flatnonzero(ks == k)
        if len(sel):
            out[sel] = dihedral(batch[sel], k, axes=tuple(a if a < 0 else a + 1 for a in item_axes))
    return out


def stratified_split(labels: np.ndarray, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test index split; classes with a single sample go to train."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels).astype(str)
    idx = np.arange(len(labels))
    vals, counts = np.unique(labels, return_counts=True)
    rare = np.isin(labels, vals[counts < 2])
    tr, te = train_test_split(idx[~rare], test_size=test_size, random_state=seed, stratify=labels[~rare])
    return np.sort(np.concatenate([tr, idx[rare]])), np.sort(te)


def stratified_kfold(labels: np.ndarray, n_splits: int = 5, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold over labels (yields train, test index arrays)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels).astype(str)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    yield from skf.split(np.zeros(len(labels)), labels)


def grouped_stratified_kfold(labels: np.ndarray, groups: np.ndarray, n_splits: int = 5,
                             seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold that keeps every group (e.g. a wafer lot) on one side of each split.

    So maps of one lot never sit in training and test at once.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels).astype(str)
    n_groups = len(np.unique(np.asarray(groups).astype(str)))
    if n_groups < n_splits:  # sklearn would raise a bare ValueError deep inside the first split
        raise DataError(f"{n_splits}-fold grouped splits need at least {n_splits} groups (lots), and the "
                        f"{len(labels)} maps given come from {n_groups}; give maps from more lots")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    yield from sgkf.split(np.zeros(len(labels)), labels, np.asarray(groups).astype(str))


# ---- area resampling (the "area" input of the CNN classifiers) ------------------------------------
# Nearest sampling keeps one die in (H/S)² on a large grid: on a 300-across wafer at S = 48 it shows
# the network 2.6 % of the dies, so sparse random fails alias into whatever rows and columns the
# sampler happens to hit (line-like artefacts), and a clean wafer's look depends on its grid size.
# "area" instead gives every output cell the *fractions* of no-die, pass and fail over the dies it
# covers (the area average of the onehot3 encoding), after cropping the map to the bounding box of
# its dies, so a border of no-die cells (an .npy written with a margin vs the same wafer read from a
# die list, which has none) does not change what the network sees.

RESAMPLE = ("nearest", "area")
AREA_LEVELS = 255  # fractions are stored as uint8 k/255 (7 KB per 48×48 map instead of 28 KB float32)


def die_bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the rows r0:r1 and columns c0:c1 holding every die of a map (the whole map when it has none)."""
    on = np.asarray(m) != 0
    rows = np.flatnonzero(on.any(1))
    if not len(rows):
        return 0, m.shape[0], 0, m.shape[1]
    cols = np.flatnonzero(on.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@lru_cache(maxsize=4096)
def area_overlap(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) integer overlaps.

    Input cell h spans [h·n_out, (h+1)·n_out) and output cell i spans [i·n_in, (i+1)·n_in) on a common
    integer axis, so every weight is exact and the weights of a mirrored axis are the mirrored weights (a
    flipped map resamples to the flipped result, bit for bit). Each row sums to n_in.
    """
    h = np.arange(n_in, dtype=np.int64)
    i = np.arange(n_out, dtype=np.int64)
    lo = np.maximum(h[None, :] * n_out, i[:, None] * n_in)
    hi = np.minimum((h[None, :] + 1) * n_out, (i[:, None] + 1) * n_in)
    out = np.clip(hi - lo, 0, None).astype(np.float64)
    out.setflags(write=False)
    return out


def _area_counts(stack: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) uint8 die states of one shape → (n, size, size, 3) uint8 fractions."""
    n, h, w = stack.shape
    # Every partial sum is an integer ≤ h·w: exact in float32 below 2**24 whatever the summation
    # order (BLAS blocking, threads), else float64.
    dt = np.float32 if h * w < 2 ** 24 else np.float64
    wr, wc = area_overlap(h, size).astype(dt), area_overlap(w, size).T.astype(dt)
    it = np.int32 if h * w < 2 ** 21 else np.int64  # c·510 + h·w must not overflow
    counts = [np.rint(wr @ (stack == k).astype(dt) @ wc).astype(it) for k in (1, 2)]
    counts.insert(0, h * w - counts[0] - counts[1])  # no-die: the rest of each cell (rows sum to h, columns to w)
    out = np.empty((n, size, size, 3), np.uint8)
    for k, c in enumerate(counts):
        out[..., k] = np.floor_divide(c * (2 * AREA_LEVELS) + h * w, 2 * h * w)  # ×255, rounded half up
    return out


def area_resize_map(m: np.ndarray, size: int) -> np.ndarray:
    """One die map → (size, size, 3) uint8.

    Per output cell the no-die, pass and fail fractions of the cells it covers (×255,
    rounded half up), after cropping to the dies' bounding box.

    Exact: the overlaps are integers and so is every sum of their products, so the same bytes come
    out on every machine and thread count, and a rotated or flipped map gives the rotated or flipped
    result.
    """
    r0, r1, c0, c1 = die_bbox(m)
    return _area_counts(np.asarray(m)[None, r0:r1, c0:c1], size)[0]


def area_resize_maps(maps: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Every map → (N, size, size, 3) uint8 fractions (see :func:`area_resize_map`).

    Maps whose cropped grids share a shape are resampled together.
    """
    out = np.empty((len(maps), size, size, 3), np.uint8)
    groups: dict[tuple[int, int], list[int]] = {}
    crops = []
    for i, m in enumerate(maps):
        r0, r1, c0, c1 = die_bbox(m)
        crops.append(np.asarray(m)[r0:r1, c0:c1])
        groups.setdefault(crops[-1].shape, []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), 256):  # bounded temporaries
            part = idx[start:start + 256]
            out[part] = _area_counts(np.stack([crops[i] for i in part]), size)
    return out


def resample_maps(maps: Sequence[np.ndarray], size: int, resample: str = "nearest") -> np.ndarray:
    """Return the CNN input before encoding.

    (N, S, S) uint8 die states (``nearest``) or (N, S, S, 3) uint8 no-die/pass/fail fractions
    (``area``).
    """
    if resample == "nearest":
        return resize_maps(maps, size)
    if resample == "area":
        return area_resize_maps(maps, size)
    raise DataError(f"unknown resample {resample!r}; choose one of {', '.join(RESAMPLE)}")


def encode_area(batch: np.ndarray, encoding: str = "onehot3") -> np.ndarray:
    """(N, S, S, 3) uint8 fractions → float32 (N, C, S, S).

    ``onehot3`` all three channels, ``onehot`` pass and fail (the area averages of those
    encodings).
    """
    x = np.moveaxis(batch, -1, 1).astype(np.float32) * (1.0 / AREA_LEVELS)
    if encoding == "onehot3":
        return np.ascontiguousarray(x)
    if encoding == "onehot":
        return np.ascontiguousarray(x[:, 1:])
    raise DataError(f"the area input has the onehot3 or onehot encoding, not {encoding!r}")


def area_to_die_grid(heat: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Return an S×S heat map of an area-resampled map → the map's own (H, W) die grid.

    Each die gets the overlap-weighted mean of the output cells that covered it; cells outside the
    dies' bounding box 0.
    """
    r0, r1, c0, c1 = die_bbox(m)
    s = heat.shape[0]
    wr, wc = area_overlap(r1 - r0, s), area_overlap(c1 - c0, s)
    out = np.zeros(m.shape[:2], np.float32)
    out[r0:r1, c0:c1] = (wr.T @ np.asarray(heat, np.float64) @ wc) / (s * s)
    return out


# ---- canonical orientation (exact invariance to the 8 rotations/flips at no inference cost) -------
# A CNN trained with random rotations/flips is only approximately invariant (the bundled one changed
# its call on 4-15 % of real maps under a 90° turn). Instead every map is turned, before the network,
# into the one of its 8 views that maximises a key computed from the view itself: its fail-weighted
# moments (row, column, row×column), then its die-weighted moments, then its bytes. A turned map
# has the same 8 views, so it gets the same canonical view, bit for bit, and the same prediction.
# Integer weights on integer inputs: every key is an exact integer, the same on every machine.

ORIENT = ("none", "canonical")


@lru_cache(maxsize=16)
def _moment_weights(size: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(S², 3) float64 weights (row, column, row×column coordinates, odd integers centred on the map) and, per view k.

    How its row/column moments follow from the map's: (source of its row moment 0 = row, 1 =
    column; its sign; the same for its column moment).
    """
    a = (2 * np.arange(size) - (size - 1)).astype(np.float64)
    rr, cc = np.meshgrid(a, a, indexing="ij")
    w = np.stack([rr.ravel(), cc.ravel(), (rr * cc).ravel()], axis=1)
    rules = []
    for k in range(8):
        # the view's row coordinate, read back on the original grid: ±row or ±column
        idx = np.arange(size * size).reshape(size, size)
        src = dihedral(idx, k).ravel()  # view pixel p shows original pixel src[p]
        r_back = np.empty(size * size)
        c_back = np.empty(size * size)
        r_back[src] = rr.ravel()
        c_back[src] = cc.ravel()
        rule = []
        for back in (r_back, c_back):
            for j, base in ((0, rr.ravel()), (1, cc.ravel())):
                if np.array_equal(back, base):
                    rule += [j, 1]
                    break
                if np.array_equal(back, -base):
                    rule += [j, -1]
                    break
        rules.append(tuple(rule))
    w.setflags(write=False)
    return w, rules


def canonical_views(x: np.ndarray) -> np.ndarray:
    """(N,) index k (as in :func:`dihedral`) of each map's canonical view, for a resampled batch.

    (N, S, S) die states or (N, S, S, 3) area fractions.
    """
    n, size = len(x), x.shape[1]
    if n == 0:
        return np.zeros(0, np.intp)
    _, rules = _moment_weights(size)
    if x.ndim == 4:
        fail, die = x[..., 2], AREA_LEVELS - x[..., 0]
    else:
        fail, die = (x == 2), (x != 0)
    a = (2 * np.arange(size) - (size - 1)).astype(np.int64)
    moments = []
    for img in (fail, die):
        img = np.asarray(img, np.float32)  # ≤ 255: every product and sum below is an exact integer
        along_cols = img @ a.astype(np.float32)  # (N, S): Σ_c img[r, c]·a_c, ≤ 255·S² < 2**24
        moments.append(np.stack([img.sum(2, dtype=np.float64) @ a, img.sum(1, dtype=np.float64) @ a,
                                 along_cols.astype(np.float64) @ a], axis=1))
    m = np.rint(np.concatenate(moments)).astype(np.int64)
    keys = np.empty((n, 8, 6), np.int64)
    for part, mm in enumerate((m[:n], m[n:])):
        for k, (jr, sr, jc, sc) in enumerate(rules):
            keys[:, k, 3 * part] = sr * mm[:, jr]
            keys[:, k, 3 * part + 1] = sc * mm[:, jc]
            keys[:, k, 3 * part + 2] = sr * sc * mm[:, 2]
    best = np.ones((n, 8), bool)
    for j in range(6):
        vals = np.where(best, keys[:, :, j], np.iinfo(np.int64).min)
        best &= vals == vals.max(1, keepdims=True)
    ks = best.argmax(1)
    for i in np.flatnonzero(best.sum(1) > 1):  # still tied: the view with the largest bytes (rare)
        views = {k: np.ascontiguousarray(dihedral(x[i], k, axes=(0, 1))).tobytes() for k in np.flatnonzero(best[i])}
        ks[i] = max(views, key=lambda k: (views[k], -k))
    return ks


def canonicalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each map of a resampled batch turned into its canonical view; also the view indices."""
    ks = canonical_views(x)
    out = np.empty_like(x)
    for k in range(8):
        sel = np.flatnonzero(ks == k)
        if len(sel):
            out[sel] = dihedral(x[sel], k, axes=(1, 2))
    return out, ks


@lru_cache(maxsize=1)
def _view_rules() -> np.ndarray:
    """(8, 4) int64: how each view's moments follow from the map's (:func:`_moment_weights`; the same for every size).

    As the compiled key wants them.
    """
    rules = np.asarray(_moment_weights(2)[1], np.int64)
    rules.setflags(write=False)
    return rules


def canonical_map(m: np.ndarray) -> np.ndarray:
    """Return a map on its own die grid.

    Cropped to its dies' bounding box and turned into its canonical view (the same rule as
    :func:`canonical_views`: fail-weighted moments, then die-weighted moments, then the bytes). Every
    rotation/flip of a map, and the map with any margin of no-die cells, give the same array. For
    models that read the native grid (the ``gbm`` features); ~5 µs a map.
    """
    from waferscope.features._kernels import canonical_choice

    m = np.ascontiguousarray(m, dtype=np.uint8)
    r0, r1, c0, c1, best = canonical_choice(m, _view_rules())
    m = m[r0:r1, c0:c1]
    tied = np.flatnonzero(best)
    if len(tied) == 1:
        return np.ascontiguousarray(dihedral(m, int(tied[0])))
    views = {int(k): np.ascontiguousarray(dihedral(m, int(k))) for k in tied}  # a symmetric map (rare)
    return views[max(views, key=lambda k: (views[k].shape, views[k].tobytes(), -k))]


def undo_view(heat: np.ndarray, k: int) -> np.ndarray:
    """Return an S×S map computed on view k of a map, turned back onto the map itself."""
    for j in range(8):
        if np.array_equal(dihedral(dihedral(np.arange(4).reshape(2, 2), k), j), np.arange(4).reshape(2, 2)):
            return np.ascontiguousarray(dihedral(heat, j))
    raise AssertionError("the 8 views form a group")


def prepare_maps(maps: Sequence[np.ndarray], size: int, resample: str = "nearest", orient: str = "none") -> np.ndarray:
    """Return the whole CNN input preparation before encoding: resample, then the canonical orientation."""
    x = resample_maps(maps, size, resample)
    if orient == "none":
        return x
    if orient == "canonical":
        return canonicalise(x)[0]
    raise DataError(f"unknown orient {orient!r}; choose one of {', '.join(ORIENT)}")
