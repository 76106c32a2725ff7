"""The 120 ``extended`` features in one compiled pass per map.

The same definitions as :mod:`.handcrafted`, :mod:`.pattern_stats` and :mod:`.shape` (which stay as
the readable reference the tests hold this to), at about a tenth of their cost.

Why a second implementation: the reference spends most of its ~2 ms per map in Python and in small
numpy / scipy / scikit-image calls (a hundred of them per map), not in arithmetic, which caps the
``gbm`` classifier at ~900 wafers/s on 2 cores. Here every per-map step — connected components
(raster-order labels, as ``scipy.ndimage.label`` numbers them), cluster moments and principal axes,
the Radon sinogram, sector and neighbour statistics — runs in one numba function over the map, and
what depends only on the grid's shape (radii, angles, rings, sectors, the Radon angles and the cubic
resampling as a matrix) is computed once per shape and cached.

The numbers equal the reference up to float rounding (sums in another order; the local fail rate a
count ratio instead of float32 box filters), not bit for bit: ``extract_features`` computes the
``extended`` and ``pattern`` sets here, and the bundled ``gbm`` was retrained on them (2026-12-06).

The Radon transform (skimage's ``radon(circle=False)`` at ``max(H, W)`` angles) is computed from the
failing dies alone: each failing die's bilinear footprint, pushed through every rotation, lands in
at most three sinogram bins per angle (the sum down the rotated column of the warp's samples).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Sequence

import numpy as np
from numba import njit

from waferscope.features import pattern_stats, shape
from waferscope.features._kernels import _PERIMETER_WEIGHTS, neighbour_counts, region_counts
from waferscope.features.handcrafted import N_RADON, _band_edges, _radon_geometry, _resample_cubic

N_EXTENDED = 120
N_PATTERN = 61  # the pattern statistics and shape features, the last 61 of the 120


@lru_cache(maxsize=64)
def _resample_matrix(n: int) -> np.ndarray:
    """Return the (N_RADON, n) matrix M with M @ v == the cubic resampling of v to N_RADON points.

    It is linear in v: the not-a-knot spline's coefficients are a linear solve on the values.
    """
    return np.stack([_resample_cubic(e) for e in np.eye(max(n, 1))[:n]], axis=1) if n else np.zeros((N_RADON, 0))


# The Radon footprints of a shape take 28 bytes per cell and angle (4 MB for a 50 × 50 grid at 50
# angles; a 300-across grid would need 760 MB), and building them costs as much as pushing a map whose
# every die fails. So a shape gets them once the maps seen of it have had that many failing dies in
# all (they then pay for themselves), only up to FOOTPRINT_MAX_ENTRIES cell-angles, and the cache of
# them is bounded by bytes. Either way the numbers are the same, bit for bit.
FOOTPRINT_MAX_ENTRIES = 1_500_000
FOOTPRINT_CACHE_BYTES = 256 * 2**20
_footprints: OrderedDict = OrderedDict()
_fails_seen: dict = {}
_NO_FOOTPRINTS = (np.zeros((0, 1), dtype=np.int32), np.zeros((0, 1, 3)))
_lock = threading.Lock()


@lru_cache(maxsize=64)
def shape_tables(h: int, w: int) -> tuple:
    """Return what the 120 features need that depends only on the grid's shape, except Radon footprints.

    Cached for the 64 most recent shapes: about 60 bytes per cell.
    """
    ring5 = pattern_stats._grid(h, w)[0].reshape(h, w).astype(np.int64)
    dy, dx, radius, angle, ring10, sector = shape._geometry(h, w)
    pad_r, pad_c, size, cos_a, sin_a = _radon_geometry(h, w)
    return (ring5, np.ascontiguousarray(dy), np.ascontiguousarray(dx), np.ascontiguousarray(radius),
            np.ascontiguousarray(angle), ring10.astype(np.int64), sector.astype(np.int64),
            _band_edges(h).astype(np.int64), _band_edges(w).astype(np.int64),
            int(pad_r), int(pad_c), int(size), cos_a, sin_a, _resample_matrix(size),
            int(pattern_stats.window(h, w)))


def radon_footprints(wafer: np.ndarray, tables: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Return the shape's Radon footprints when they are (or now become) worth keeping, else empty arrays."""
    with _lock:  # feature threads share the cache
        return _footprints_locked(wafer, tables)


def _footprints_locked(wafer: np.ndarray, tables: tuple) -> tuple[np.ndarray, np.ndarray]:
    key = wafer.shape
    if key in _footprints:
        _footprints.move_to_end(key)
        return _footprints[key]
    h, w = key
    pad_r, pad_c, size, cos_a, sin_a = tables[9:14]
    if h * w * len(cos_a) > FOOTPRINT_MAX_ENTRIES:
        return _NO_FOOTPRINTS
    if len(_fails_seen) > 10_000:  # a stream of ever-new shapes: forget, rather than grow
        _fails_seen.clear()
    seen = _fails_seen.get(key, 0) + int(np.count_nonzero(wafer == 2))
    _fails_seen[key] = seen
    if seen < h * w:
        return _NO_FOOTPRINTS
    footprints = _radon_footprints(h, w, pad_r, pad_c, size, cos_a, sin_a, float(size // 2))
    _footprints[key] = footprints
    while len(_footprints) > 1 and sum(f.nbytes + g.nbytes for f, g in _footprints.values()) > FOOTPRINT_CACHE_BYTES:
        evicted, _ = _footprints.popitem(last=False)
        _fails_seen[evicted] = 0  # it must pay for itself again: many large shapes would otherwise rebuild in turn
    return footprints


def extended_features_fast(wafer: np.ndarray) -> np.ndarray:
    """Return the 120 ``extended`` features of one (H, W) die-state map (0 no die, 1 pass, 2 fail)."""
    return extended_batch([wafer])[0]


def extended_batch(maps: Sequence[np.ndarray], full: bool = True) -> np.ndarray:
    """(N, 120) features of a list of maps; ``full=False``.

    Only the 61 ``pattern`` features (N, 61) (the last 61 of the 120; no Radon transform).
    """
    out = np.zeros((len(maps), N_EXTENDED))
    for i, m in enumerate(maps):
        m = np.ascontiguousarray(m, dtype=np.uint8)
        tables = shape_tables(*m.shape)
        footprints = radon_footprints(m, tables) if full else _NO_FOOTPRINTS
        _extended(m, *tables, *footprints, _PERIMETER_WEIGHTS, full, out[i])
    return out if full else out[:, N_EXTENDED - N_PATTERN:]


def pattern_batch(maps: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 61) ``pattern`` features (pattern statistics + shape) of a list of maps."""
    return extended_batch(maps, full=False)


# ---- compiled parts ------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _label(mask, eight, labels, sizes_out):  # pragma: no cover - compiled
    """Return the number of connected components of ``mask``, numbered 1.. in raster order of their first cell.

    As ``scipy.ndimage.label`` numbers them; writes ``labels`` (H, W) and the sizes, returns n.
    """
    h, w = mask.shape
    labels[:, :] = 0
    stack = np.empty(h * w, dtype=np.int64)
    n = 0
    for r0 in range(h):
        for c0 in range(w):
            if not mask[r0, c0] or labels[r0, c0]:
                continue
            n += 1
            labels[r0, c0] = n
            stack[0] = r0 * w + c0
            top = 1
            size = 0
            while top:
                top -= 1
                p = stack[top]
                r, c = p // w, p % w
                size += 1
                for dr in range(-1, 2):
                    for dc in range(-1, 2):
                        if (dr == 0 and dc == 0) or (not eight and dr != 0 and dc != 0):
                            continue
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not labels[rr, cc]:
                            labels[rr, cc] = n
                            stack[top] = rr * w + cc
                            top += 1
            sizes_out[n - 1] = size
    return n


@njit(cache=True, nogil=True)
def _moments(labels, k, box):  # pragma: no cover - compiled
    """Return (n, mean row, mean col, Σ(r−r̄)², Σ(r−r̄)(c−c̄), Σ(c−c̄)²) of the cells ``k`` in ``box``.

    ``box`` is (r0, r1, c0, c1): the members are gathered once, then centred in a second pass (as ``np.cov``
    does: no cancellation for thin clusters).
    """
    rows = np.empty((box[1] - box[0]) * (box[3] - box[2]))
    cols = np.empty_like(rows)
    n = 0
    for r in range(box[0], box[1]):
        for c in range(box[2], box[3]):
            if labels[r, c] == k:
                rows[n] = r
                cols[n] = c
                n += 1
    mr = rows[:n].sum() / n
    mc = cols[:n].sum() / n
    srr = 0.0
    src = 0.0
    scc = 0.0
    for q in range(n):
        srr += (rows[q] - mr) * (rows[q] - mr)
        src += (rows[q] - mr) * (cols[q] - mc)
        scc += (cols[q] - mc) * (cols[q] - mc)
    return n, mr, mc, srr, src, scc


@njit(cache=True, nogil=True)
def _axes(labels, k, box):  # pragma: no cover - compiled
    """(n, mean row, mean col, minor sd, major sd) of the cells labelled ``k`` inside ``box``.

    np.cov-style (ddof 1) principal standard deviations, 0 below 3 cells.
    """
    n, mr, mc, srr, src, scc = _moments(labels, k, box)
    if n < 3:
        return n, mr, mc, 0.0, 0.0
    a, b, c = srr / (n - 1), src / (n - 1), scc / (n - 1)
    half = (a + c) / 2
    spread = math.hypot((a - c) / 2, b)
    return n, mr, mc, math.sqrt(max(half - spread, 0.0)), math.sqrt(max(half + spread, 0.0))


@njit(cache=True, nogil=True)
def _boxes(labels, n):  # pragma: no cover - compiled
    box = np.empty((n, 4), dtype=np.int64)
    box[:, 0] = labels.shape[0]
    box[:, 1] = 0
    box[:, 2] = labels.shape[1]
    box[:, 3] = 0
    for r in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            k = labels[r, c]
            if k:
                b = box[k - 1]
                b[0] = min(b[0], r)
                b[1] = max(b[1], r + 1)
                b[2] = min(b[2], c)
                b[3] = max(b[3], c + 1)
    return box


@njit(cache=True, nogil=True)
def _order_by_size(sizes, n):  # pragma: no cover - compiled
    # largest first, ties in label order (np.argsort(-sizes, kind="stable"))
    return np.argsort(-sizes[:n], kind="mergesort")


@njit(cache=True, nogil=True)
def _mean_std(values, n):  # pragma: no cover - compiled
    # numpy's two-pass population standard deviation
    if n == 0:
        return 0.0, 0.0
    s = 0.0
    for i in range(n):
        s += values[i]
    mean = s / n
    v = 0.0
    for i in range(n):
        v += (values[i] - mean) ** 2
    return mean, math.sqrt(v / n)


@njit(cache=True, nogil=True)
def _die_footprint(ca, sa, tx, ty, reach, py, px, size, weights):  # pragma: no cover - compiled
    """Return a failing die at padded (py, px) in the warp of one angle.

    Output point (x, y) samples the image bilinearly at (row, col) = (−sin·x + cos·y + ty, cos·x +
    sin·y + tx), so the die weighs (1 − |row − py|)(1 − |col − px|) there when both distances are
    below 1. Summed down each column x of the few grid points around the die's inverse rotation:
    writes the weights of the first column reached and the next two into ``weights`` and returns
    that first column.
    """
    x0 = ca * (px - tx) - sa * (py - ty)
    y0 = sa * (px - tx) + ca * (py - ty)
    lo = max(math.ceil(x0 - reach), 0)
    weights[0] = weights[1] = weights[2] = 0.0
    for x in range(lo, min(math.floor(x0 + reach), size - 1) + 1):
        acc = 0.0
        for y in range(max(math.ceil(y0 - reach), 0), min(math.floor(y0 + reach), size - 1) + 1):
            dr = abs(-sa * x + ca * y + ty - py)
            dc = abs(ca * x + sa * y + tx - px)
            if dr < 1.0 and dc < 1.0:
                acc += (1.0 - dr) * (1.0 - dc)
        weights[x - lo] = acc
    return lo


@njit(cache=True, nogil=True)
def _warp(ca, sa, center):  # pragma: no cover - compiled
    # the translation of skimage's rotation about the centre, and how far a footprint reaches
    return -center * (ca + sa - 1), -center * (ca - sa - 1), abs(ca) + abs(sa) + 1e-9


@njit(cache=True, nogil=True)
def _radon(wafer, pad_r, pad_c, size, cos_a, sin_a, center):  # pragma: no cover - compiled
    """Return the (size, n_angles) sinogram of skimage's radon(circle=False) of the fail map.

    Pushed from the failing dies (:func:`_die_footprint`), dies in raster order within every
    bin.
    """
    h, w = wafer.shape
    n_angles = cos_a.shape[0]
    out = np.zeros((size + 2, n_angles))
    weights = np.empty(3)
    for i in range(n_angles):
        tx, ty, reach = _warp(cos_a[i], sin_a[i], center)
        for r in range(h):
            for c in range(w):
                if wafer[r, c] == 2:
                    x = _die_footprint(cos_a[i], sin_a[i], tx, ty, reach, r + pad_r, c + pad_c, size, weights)
                    out[x, i] += weights[0]
                    out[x + 1, i] += weights[1]
                    out[x + 2, i] += weights[2]
    return out[:size]


@njit(cache=True, nogil=True)
def _radon_footprints(h, w, pad_r, pad_c, size, cos_a, sin_a, center):  # pragma: no cover - compiled
    """:func:`_die_footprint` of every cell of an h×w grid at every angle, stored once per grid shape.

    So a map's sinogram is three additions per failing die and angle.
    """
    n_angles = cos_a.shape[0]
    first = np.zeros((h * w, n_angles), dtype=np.int32)
    weights = np.zeros((h * w, n_angles, 3))
    for i in range(n_angles):
        tx, ty, reach = _warp(cos_a[i], sin_a[i], center)
        for r in range(h):
            for c in range(w):
                first[r * w + c, i] = _die_footprint(cos_a[i], sin_a[i], tx, ty, reach, r + pad_r, c + pad_c,
                                                     size, weights[r * w + c, i])
    return first, weights


@njit(cache=True, nogil=True)
def _radon_from_footprints(wafer, first, weights, size):  # pragma: no cover - compiled
    # the same additions as _radon, in the same order for every bin (dies in raster order), so the
    # two give the same numbers bit for bit; adding the unused zero weights changes nothing
    h, w = wafer.shape
    n_angles = first.shape[1]
    out = np.zeros((size + 2, n_angles))
    for r in range(h):
        for c in range(w):
            if wafer[r, c] != 2:
                continue
            cell = r * w + c
            for i in range(n_angles):
                x = first[cell, i]
                out[x, i] += weights[cell, i, 0]
                out[x + 1, i] += weights[cell, i, 1]
                out[x + 2, i] += weights[cell, i, 2]
    return out[:size]


@njit(cache=True, nogil=True)
def _longest_run(hot):  # pragma: no cover - compiled
    n = hot.shape[0]
    best = 0
    run = 0
    for i in range(2 * n):  # twice round, so a run across the end counts whole
        if hot[i % n]:
            run += 1
            best = max(best, run)
        else:
            run = 0
    return min(best, n)


@njit(cache=True, nogil=True)
def _extended(wafer, ring5, dy, dx, radius, angle, ring10, sector, row_edges, col_edges, pad_r, pad_c, size,
              cos_a, sin_a, resample, k_window, footprint_first, footprint_weights, perimeter_weights, full, out):  # pragma: no cover - compiled
    h, w = wafer.shape
    n_on = 0
    n_fail = 0
    fail = np.zeros((h, w), dtype=np.bool_)
    for r in range(h):
        for c in range(w):
            if wafer[r, c] > 0:
                n_on += 1
            if wafer[r, c] == 2:
                n_fail += 1
                fail[r, c] = True
    labels = np.empty((h, w), dtype=np.int64)
    sizes = np.empty(h * w + 1, dtype=np.int64)

    if full:  # the 59 handcrafted features; without them, only the 61 `pattern` ones (out[59:])
        _handcrafted(wafer, fail, n_fail, labels, sizes, row_edges, col_edges, pad_r, pad_c, size, cos_a, sin_a,
                     resample, footprint_first, footprint_weights, perimeter_weights, out)
    _pattern(wafer, fail, n_fail, n_on, labels, sizes, ring5, dy, dx, radius, angle, ring10, sector, k_window, out)


@njit(cache=True, nogil=True)
def _handcrafted(wafer, fail, n_fail, labels, sizes, row_edges, col_edges, pad_r, pad_c, size, cos_a, sin_a,
                 resample, footprint_first, footprint_weights, perimeter_weights, out):  # pragma: no cover - compiled
    h, w = wafer.shape
    hw = h * w
    diag = math.hypot(h, w)
    # -- density (13): fail share ×100 in the 4 edge bands then the 3×3 central blocks
    j = 0
    for band in range(4):
        if band == 0:
            r0, r1, c0, c1 = 0, row_edges[1], 0, w
        elif band == 1:
            r0, r1, c0, c1 = 0, h, col_edges[4], w
        elif band == 2:
            r0, r1, c0, c1 = row_edges[4], h, 0, w
        else:
            r0, r1, c0, c1 = 0, h, 0, col_edges[1]
        out[j] = _block_density(fail, r0, r1, c0, c1)
        j += 1
    for bi in range(1, 4):
        for bj in range(1, 4):
            out[j] = _block_density(fail, row_edges[bi], row_edges[bi + 1], col_edges[bj], col_edges[bj + 1])
            j += 1

    # -- radon (40): row means then row standard deviations of the sinogram, cubic-resampled, ÷100
    if footprint_first.shape[0] == hw:
        sino = _radon_from_footprints(wafer, footprint_first, footprint_weights, size)
    else:
        sino = _radon(wafer, pad_r, pad_c, size, cos_a, sin_a, float(size // 2))
    n_angles = cos_a.shape[0]
    means = np.empty(size)
    stds = np.empty(size)
    for x in range(size):
        means[x], stds[x] = _mean_std(sino[x], n_angles)
    for k in range(resample.shape[0]):
        sm = 0.0
        ss = 0.0
        for x in range(size):
            sm += resample[k, x] * means[x]
            ss += resample[k, x] * stds[x]
        out[13 + k] = sm / 100.0
        out[33 + k] = ss / 100.0

    # -- geometry (6): the largest 4-connected failing region
    if n_fail == 0:
        for k in range(6):
            out[53 + k] = 0.0
    else:
        n = _label(fail, False, labels, sizes)
        big = np.argmax(sizes[:n])  # the first largest, as max() over regionprops picks it
        box = _boxes(labels, n)[big]
        region = labels[box[0]:box[1], box[2]:box[3]] == big + 1
        hist, convex = region_counts(region)
        area, _, _, mu20, mu11, mu02 = _moments(labels, big + 1, box)
        ta, tb, td = mu02 / area, -mu11 / area, mu20 / area
        root = math.sqrt(4 * tb * tb + (ta - td) ** 2) / 2
        l1 = max((ta + td) / 2 + root, 0.0)
        l2 = max((ta + td) / 2 - root, 0.0)
        perimeter = 0.0
        for k in range(hist.shape[0]):
            perimeter += hist[k] * perimeter_weights[k]
        out[53] = area / hw
        out[54] = perimeter / diag
        out[55] = 4 * math.sqrt(l1) / diag
        out[56] = 4 * math.sqrt(l2) / diag
        out[57] = 0.0 if l1 == 0 else math.sqrt(1 - l2 / l1)
        out[58] = area / convex


@njit(cache=True, nogil=True)
def _pattern(wafer, fail, n_fail, n_on, labels, sizes, ring5, dy, dx, radius, angle, ring10, sector, k_window,
             out):  # pragma: no cover - compiled
    h, w = wafer.shape
    diameter = max(h, w)
    n_on1 = max(n_on, 1)
    rate = n_fail / n_on1
    # -- pattern statistics (15)
    ring_f = np.zeros(5)
    ring_d = np.zeros(5)
    for r in range(h):
        for c in range(w):
            if wafer[r, c] > 0:
                ring_d[ring5[r, c]] += 1
                if wafer[r, c] == 2:
                    ring_f[ring5[r, c]] += 1
    for k in range(5):
        out[59 + k] = ring_f[k] / max(ring_d[k], 1.0)
    n8 = _label(fail, True, labels, sizes)
    boxes8 = _boxes(labels, n8)
    if n8:
        order = _order_by_size(sizes, n8)
        first = order[0]
        cnt, mr, mc, minor, major = _axes(labels, first + 1, boxes8[first])
        out[67] = math.hypot((mr - (h - 1) / 2) / (h / 2), (mc - (w - 1) / 2) / (w / 2))
        if cnt > 2:
            out[68] = math.log((major + 0.5) / (minor + 0.5))
            out[69] = 4 * major / diameter
        else:
            out[68] = 0.0
            out[69] = cnt / diameter
        boundary = 0
        b = boxes8[first]
        for r in range(b[0], b[1]):
            for c in range(b[2], b[3]):
                if labels[r, c] == first + 1 and (
                        r == 0 or c == 0 or r == h - 1 or c == w - 1 or labels[r - 1, c] != first + 1
                        or labels[r + 1, c] != first + 1 or labels[r, c - 1] != first + 1
                        or labels[r, c + 1] != first + 1):
                    boundary += 1
        out[70] = boundary ** 2 / (4 * math.pi * cnt)
        out[64] = math.sqrt(sizes[first] / n_on1)
        out[65] = math.sqrt(sizes[order[1]] / n_on1) if n8 > 1 else 0.0
        big4 = 0
        for k in range(n8):
            if sizes[k] >= 4:
                big4 += 1
        out[66] = 100.0 * big4 / n_on1
    else:
        for k in range(64, 71):
            out[k] = 0.0
    # local fail rate: fails ÷ dies in a k×k window (scipy's uniform_filter placement, zeros outside)
    lo = k_window // 2
    ii_f = np.zeros((h + 1, w + 1))
    ii_d = np.zeros((h + 1, w + 1))
    for r in range(h):
        acc_f = 0.0
        acc_d = 0.0
        for c in range(w):
            acc_f += 1.0 if wafer[r, c] == 2 else 0.0
            acc_d += 1.0 if wafer[r, c] > 0 else 0.0
            ii_f[r + 1, c + 1] = ii_f[r, c + 1] + acc_f
            ii_d[r + 1, c + 1] = ii_d[r, c + 1] + acc_d
    local_max = 0.0
    for r in range(h):
        for c in range(w):
            if wafer[r, c] > 0:
                r0, r1 = max(r - lo, 0), min(r - lo + k_window, h)
                c0, c1 = max(c - lo, 0), min(c - lo + k_window, w)
                f = ii_f[r1, c1] - ii_f[r0, c1] - ii_f[r1, c0] + ii_f[r0, c0]
                d = ii_d[r1, c1] - ii_d[r0, c1] - ii_d[r1, c0] + ii_d[r0, c0]
                v = f / max(d, 1e-6)
                if v > local_max:
                    local_max = v
    out[71] = local_max
    out[72] = local_max - rate
    out[73] = rate

    # -- shape (46), from index 74
    base = 74
    rf = np.zeros(10)
    rd = np.zeros(10)
    sf = np.zeros(72)
    sd = np.zeros(72)
    for r in range(h):
        for c in range(w):
            if wafer[r, c] > 0:
                rd[ring10[r, c]] += 1
                sd[sector[r, c]] += 1
                if wafer[r, c] == 2:
                    rf[ring10[r, c]] += 1
                    sf[sector[r, c]] += 1
    for k in range(10):
        out[base + k] = rf[k] / max(rd[k], 1.0)
    threshold = max(0.25, 2 * rate)
    sector_rate = np.empty(24)
    hot = np.zeros(24, dtype=np.bool_)
    for a in range(3):
        j = base + 10 + 4 * a
        n_present = 0
        for s in range(24):
            sector_rate[s] = sf[a * 24 + s] / max(sd[a * 24 + s], 1.0)
            hot[s] = sector_rate[s] > threshold and sd[a * 24 + s] > 0
            if sd[a * 24 + s] > 0:
                n_present += 1
        if n_present == 0:
            out[j] = 0.0
            out[j + 1] = 0.0
            out[j + 2] = 0.0
            out[j + 3] = 0.0
            continue
        present = np.empty(n_present)
        m = 0
        n_hot = 0
        for s in range(24):
            if sd[a * 24 + s] > 0:
                present[m] = sector_rate[s]
                m += 1
            if hot[s]:
                n_hot += 1
        out[j] = sector_rate.max()
        out[j + 1] = _mean_std(present, n_present)[1]
        out[j + 2] = n_hot / 24
        out[j + 3] = _longest_run(hot) / 24
    # neighbourhood clustering and the denoised map
    on = wafer > 0
    denoised = np.zeros((h, w), dtype=np.bool_)
    with1 = 0
    with3 = 0
    share = 0.0
    n_denoised = 0
    for r in range(h):
        for c in range(w):
            if wafer[r, c] != 2:
                continue
            nf, nd = neighbour_counts(fail, on, r, c)
            with1 += nf >= 1
            with3 += nf >= 3
            share += nf / max(nd, 1)
            if nf >= 2:
                denoised[r, c] = True
                n_denoised += 1
    j = base + 22
    if n_fail:
        out[j] = with1 / n_fail
        out[j + 1] = with3 / n_fail
        out[j + 2] = with1 / n_fail - (1 - (1 - rate) ** 8)
        out[j + 3] = share / n_fail - rate
    else:
        out[j] = out[j + 1] = out[j + 2] = out[j + 3] = 0.0
    out[j + 4] = n_denoised / n_on1
    # the largest 8-connected cluster
    j = base + 27
    if n8 == 0:
        for k in range(12):
            out[j + k] = 0.0
    else:
        first = order[0]  # `labels` and `sizes` still hold the 8-connected fail clusters
        b = boxes8[first]
        cnt, _, _, width, _ = _axes(labels, first + 1, b)
        rmin = 1e300
        rmax = -1e300
        edge = 0
        angles = np.empty(cnt)
        m = 0
        for r in range(b[0], b[1]):
            for c in range(b[2], b[3]):
                if labels[r, c] == first + 1:
                    rr_ = radius[r, c]
                    rmin = min(rmin, rr_)
                    rmax = max(rmax, rr_)
                    edge += rr_ >= 0.8
                    angles[m] = angle[r, c]
                    m += 1
        angles = np.sort(angles)
        gap = angles[0] + 2 * math.pi - angles[cnt - 1]
        s_sin = 0.0
        s_cos = 0.0
        for k in range(cnt):
            if k + 1 < cnt:
                gap = max(gap, angles[k + 1] - angles[k])
            s_sin += math.sin(angles[k])
            s_cos += math.cos(angles[k])
        n10 = 0
        for k in range(n8):
            if sizes[k] >= 10:
                n10 += 1
        out[j] = rmin
        out[j + 1] = rmax
        out[j + 2] = edge / cnt
        out[j + 3] = (2 * math.pi - gap) / (2 * math.pi)
        out[j + 4] = sizes[first] / ((b[1] - b[0]) * (b[3] - b[2]))
        out[j + 5] = math.hypot(s_sin / cnt, s_cos / cnt)
        out[j + 6] = sizes[first] / max(n_fail, 1)
        out[j + 7] = width / diameter
        out[j + 8] = n10
        # the longest among the 12 largest clusters of >= 3 dies (the largest always counts)
        longest = 0.0
        thinness = 0.0
        n_long = 0
        for q in range(min(12, n8)):
            k = order[q]
            if q > 0 and sizes[k] < 3:
                continue
            _, _, _, mn, mj = _axes(labels, k + 1, boxes8[k])
            length = 4 * mj / diameter
            # lengths within rounding of each other (or of the 0.2 line) are ties: the first wins
            if length > 0.2 + 1e-9:
                n_long += 1
            if length > longest + 1e-9:
                longest = length
                thinness = mn / (mj + 0.5)
        out[j + 9] = longest
        out[j + 10] = thinness
        out[j + 11] = n_long
    # the largest cluster after denoising
    j = base + 39
    nd_ = _label(denoised, True, labels, sizes)
    if nd_ == 0:
        out[j] = out[j + 1] = out[j + 2] = out[j + 3] = 0.0
    else:
        big = np.argmax(sizes[:nd_])  # the first largest
        s_r = 0.0
        for r in range(h):
            for c in range(w):
                if labels[r, c] == big + 1:
                    s_r += radius[r, c]
        out[j] = math.sqrt(sizes[big] / n_on1)
        out[j + 1] = s_r / sizes[big]
        out[j + 2] = 100.0 * nd_ / n_on1
        out[j + 3] = sizes[big] / max(n_denoised, 1)
    # the centroid and radial spread of all fails
    j = base + 43
    if n_fail:
        s_dy = 0.0
        s_dx = 0.0
        s_on = 0.0
        r_fail = np.empty(n_fail)
        m = 0
        for r in range(h):
            for c in range(w):
                if wafer[r, c] > 0:
                    s_on += radius[r, c]
                if wafer[r, c] == 2:
                    s_dy += dy[r, c]
                    s_dx += dx[r, c]
                    r_fail[m] = radius[r, c]
                    m += 1
        mean_r, sd_r = _mean_std(r_fail, n_fail)
        out[j] = math.hypot(s_dy / n_fail, s_dx / n_fail)
        out[j + 1] = mean_r - s_on / n_on1
        out[j + 2] = sd_r
    else:
        out[j] = out[j + 1] = out[j + 2] = 0.0


@njit(cache=True, nogil=True)
def _block_density(fail, r0, r1, c0, c1):  # pragma: no cover - compiled
    n = (r1 - r0) * (c1 - c0)
    if n <= 0:
        return 0.0
    s = 0
    for r in range(r0, r1):
        for c in range(c0, c1):
            s += fail[r, c]
    return 100.0 * (s / n)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel here and the canonical view's.

    On a few tiny maps covering both Radon paths. The first time on a machine this takes ~20 s;
    scripts/setup.sh calls it so that a user's first command does not.
    """
    from waferscope.data.preprocess import canonical_map

    rng = np.random.default_rng(0)
    maps = [rng.choice(np.array([0, 1, 2], np.uint8), size=(9, 7), p=[0.2, 0.5, 0.3]) for _ in range(3)]
    maps.append(np.full((5, 5), 2, np.uint8))  # every die failing: the footprint table pays at once
    maps = [canonical_map(m) for m in maps]
    extended_batch(maps)
    extended_batch(maps)
    pattern_batch(maps)


if __name__ == "__main__":
    warm_up()
