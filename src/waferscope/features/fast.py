"""The 120 ``extended`` features in one compiled pass per map, at about a tenth of the reference's cost.

The same definitions as :mod:`.handcrafted`, :mod:`.pattern_stats` and :mod:`.shape` (which stay as
the readable reference the tests hold this to).

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
at most three sinogram bins per angle (the sum down the rotated column of the warp's samples). Per
angle, the footprints of all failing dies are computed in one branch-free loop over the dies (a
fixed 3 × 3 candidate grid points each, so the compiler vectorises it across dies), then added to
the sinogram in raster order: ~6 ns a die and angle, as cheap as reading a precomputed per-shape
table of them was (tables cost 28 bytes per cell and angle, so large grids and many shapes never
fit), and the same numbers bit for bit.
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


@lru_cache(maxsize=256)
def _resample_matrix(n: int) -> np.ndarray:
    """Return the (N_RADON, n) matrix M with M @ v == the cubic resampling of v to N_RADON points.

    It is linear in v: the not-a-knot spline's coefficients are a linear solve on the values.
    """
    return np.stack([_resample_cubic(e) for e in np.eye(max(n, 1))[:n]], axis=1) if n else np.zeros((N_RADON, 0))


# What depends only on the grid's shape, kept for the shapes seen most recently up to a byte budget
# (not a count: a stream of many small shapes — a fab's products, the synthetic maps — must not
# rebuild them map after map, ~40 µs each, while a few 300-across grids take ~2 MB each).
SHAPE_CACHE_BYTES = 64 * 2**20
_shape_cache: OrderedDict = OrderedDict()
_shape_cache_bytes = 0
_lock = threading.Lock()


def shape_tables(h: int, w: int) -> tuple:
    """Return what the 120 features need that depends only on the grid's shape (~40 bytes per cell).

    Cached (:data:`SHAPE_CACHE_BYTES`); feature threads share the cache.
    """
    global _shape_cache_bytes
    key = (h, w)
    with _lock:
        tables = _shape_cache.get(key)
        if tables is not None:
            _shape_cache.move_to_end(key)
            return tables
    tables = _shape_tables(h, w)  # outside the lock: two threads may both build it, the same numbers
    size = sum(t.nbytes for t in tables if isinstance(t, np.ndarray))
    with _lock:
        if key not in _shape_cache:
            _shape_cache[key] = tables
            _shape_cache_bytes += size
        while len(_shape_cache) > 1 and _shape_cache_bytes > SHAPE_CACHE_BYTES:
            _, old = _shape_cache.popitem(last=False)
            _shape_cache_bytes -= sum(t.nbytes for t in old if isinstance(t, np.ndarray))
    return tables


def _shape_tables(h: int, w: int) -> tuple:
    # Ring and sector indices as int8 (at most 72 values): the same indexing at a fifth of the bytes.
    ring5 = pattern_stats._grid(h, w)[0].reshape(h, w).astype(np.int8)
    dy, dx, radius, angle, ring10, sector = shape._geometry(h, w)
    pad_r, pad_c, size, cos_a, sin_a = _radon_geometry(h, w)
    return (ring5, np.ascontiguousarray(dy), np.ascontiguousarray(dx), np.ascontiguousarray(radius),
            np.ascontiguousarray(angle), ring10.astype(np.int8), sector.astype(np.int8),
            _band_edges(h).astype(np.int64), _band_edges(w).astype(np.int64),
            int(pad_r), int(pad_c), int(size), cos_a, sin_a, _resample_matrix(size),
            int(pattern_stats.window(h, w)))


def extended_features_fast(wafer: np.ndarray) -> np.ndarray:
    """Return the 120 ``extended`` features of one (H, W) die-state map (0 no die, 1 pass, 2 fail)."""
    return extended_batch([wafer])[0]


def extended_batch(maps: Sequence[np.ndarray], full: bool = True) -> np.ndarray:
    """Return the (N, 120) features of a list of maps.

    ``full=False``: only the 61 ``pattern`` features (N, 61) (the last 61 of the 120; no Radon transform).
    """
    out = np.zeros((len(maps), N_EXTENDED))
    for i, m in enumerate(maps):
        m = np.ascontiguousarray(m, dtype=np.uint8)
        if m.size >= 2**31:  # the kernels index cells with int32 (loaders stop maps far smaller)
            raise ValueError(f"map {i}: {m.shape} has more than 2**31 cells")
        _extended(m, *shape_tables(*m.shape), _PERIMETER_WEIGHTS, full, out[i])
    return out if full else out[:, N_EXTENDED - N_PATTERN:]


def pattern_batch(maps: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 61) ``pattern`` features (pattern statistics + shape) of a list of maps."""
    return extended_batch(maps, full=False)


# ---- compiled parts ------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _label(mask, eight, labels, sizes_out, boxes_out):  # pragma: no cover - compiled
    """Return the number of connected components of ``mask``, numbered 1.. in raster order of their first cell.

    As ``scipy.ndimage.label`` numbers them; writes ``labels`` (H, W), the sizes and the bounding
    boxes (r0, r1, c0, c1: rows r0:r1, columns c0:c1), returns n.
    """
    h, w = mask.shape
    labels[:, :] = 0
    stack = np.empty(h * w, dtype=np.int32)
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
            r_lo, r_hi, c_lo, c_hi = r0, r0, c0, c0
            while top:
                top -= 1
                p = stack[top]
                r, c = p // w, p % w
                size += 1
                r_hi = max(r_hi, r)  # (the fill starts at the component's first row)
                c_lo = min(c_lo, c)
                c_hi = max(c_hi, c)
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
            boxes_out[n - 1, 0] = r_lo
            boxes_out[n - 1, 1] = r_hi + 1
            boxes_out[n - 1, 2] = c_lo
            boxes_out[n - 1, 3] = c_hi + 1
    return n


@njit(cache=True, nogil=True)
def _moments(labels, k, box):  # pragma: no cover - compiled
    """Return (n, mean row, mean col, Σ(r−r̄)², Σ(r−r̄)(c−c̄), Σ(c−c̄)²) of the cells labelled ``k``.

    Inside ``box`` (r0, r1, c0, c1): the members are gathered once, then centred in a second pass (as
    ``np.cov`` does: no cancellation for thin clusters).
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
    """Return (n, mean row, mean col, minor sd, major sd) of the cells labelled ``k`` inside ``box``.

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
def _footprints(ca, sa, center, size, rows, cols, first, weights):  # pragma: no cover - compiled
    """Compute the bilinear footprints of the dies at padded (rows[k], cols[k]) in the warp of one angle.

    Output point (x, y) samples the image bilinearly at (row, col) = (−sin·x + cos·y + ty,
    cos·x + sin·y + tx), so a die weighs (1 − |row − py|)(1 − |col − px|) there when both distances
    are below 1. Summed down each column x (y upwards) over the grid points around the die's inverse
    rotation (x0, y0): writes the first column reached, ``first[k]``, and the weights of it and the
    next two, ``weights[:, k]``.

    The rotated unit square reaches |cos| + |sin| ≤ √2 from (x0, y0), so 3 × 3 candidate points
    from the first ones in reach cover it. The loop is the same for every die — no branch on which
    candidates are in reach — so it vectorises across dies: a candidate beyond the reach is more
    than 1e-9 outside the square, its distances round to ≥ 1 and it adds an exact 0.0 (as skipping
    it did); a column beyond the grid (x ≥ size) lands in the caller's two spare ones. Only points
    below the grid (y ≥ size) must be masked: they do not exist in the warp's output.
    """
    tx = -center * (ca + sa - 1)  # the translation of skimage's rotation about the centre
    ty = -center * (ca - sa - 1)
    reach = abs(ca) + abs(sa) + 1e-9  # (a hair more, so rounding never drops an edge point)
    for k in range(rows.shape[0]):
        py = rows[k]
        px = cols[k]
        x0 = ca * (px - tx) - sa * (py - ty)
        y0 = sa * (px - tx) + ca * (py - ty)
        # (a first column at or past the grid's edge would hold only zeros: start at its last column,
        # so the three additions stay inside the caller's two spare ones)
        lo = min(max(math.ceil(x0 - reach), 0), size - 1)
        y_lo = max(math.ceil(y0 - reach), 0)
        y_hi = min(math.floor(y0 + reach), size - 1)
        first[k] = lo
        for j in range(3):
            x = lo + j
            acc = 0.0
            for q in range(3):
                y = y_lo + q
                dr = abs(-sa * x + ca * y + ty - py)
                dc = abs(ca * x + sa * y + tx - px)
                # (1 − dr)(1 − dc) when both are below 1, else an exact +0.0 (adding it changes nothing)
                v = max(1.0 - dr, 0.0) * max(1.0 - dc, 0.0)
                acc += v if y <= y_hi else 0.0
            weights[j, k] = acc


@njit(cache=True, nogil=True)
def _radon(wafer, pad_r, pad_c, size, cos_a, sin_a, center):  # pragma: no cover - compiled
    """Return the sinogram of skimage's radon(circle=False) of the fail map, transposed: (n_angles, size + 2).

    The last two columns are spare. Pushed from the failing dies (:func:`_footprints`), every bin
    summing its dies' weights in raster order.
    """
    h, w = wafer.shape
    n = 0
    for r in range(h):
        for c in range(w):
            n += wafer[r, c] == 2
    rows = np.empty(n)
    cols = np.empty(n)
    n = 0
    for r in range(h):
        for c in range(w):
            if wafer[r, c] == 2:
                rows[n] = r + pad_r
                cols[n] = c + pad_c
                n += 1
    n_angles = cos_a.shape[0]
    out = np.zeros((n_angles, size + 2))
    first = np.empty(n, dtype=np.int64)
    weights = np.empty((3, n))
    for i in range(n_angles):
        _footprints(cos_a[i], sin_a[i], center, size, rows, cols, first, weights)
        bins = out[i]
        for k in range(n):  # a separate loop: the additions are what cannot be vectorised
            x = first[k]
            bins[x] += weights[0, k]
            bins[x + 1] += weights[1, k]
            bins[x + 2] += weights[2, k]
    return out


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
              cos_a, sin_a, resample, k_window, perimeter_weights, full, out):  # pragma: no cover - compiled
    h, w = wafer.shape
    # One raster pass for everything that is a count or a raster-order sum over the dies (on a
    # 300-across grid each pass over the cells costs ~0.2 ms): the fail mask, the integral images of
    # fails and dies (block densities, the local fail rate), the fails and dies per ring and sector,
    # and the radius / offset sums, added in the same order as when each had its own pass.
    fail = np.zeros((h, w), dtype=np.bool_)
    ii_f = np.zeros((h + 1, w + 1), dtype=np.int32)
    ii_d = np.zeros((h + 1, w + 1), dtype=np.int32)
    tally = np.zeros((2, 87))  # fails (row 0) and dies (row 1): 5 rings, then 10 rings, then 72 sectors
    r_fail = np.empty(h * w)  # the fails' radii, raster order
    n_on = 0
    n_fail = 0
    s_on = 0.0
    s_dy = 0.0
    s_dx = 0.0
    for r in range(h):
        acc_f = 0
        acc_d = 0
        for c in range(w):
            v = wafer[r, c]
            if v > 0:
                n_on += 1
                acc_d += 1
                tally[1, ring5[r, c]] += 1
                tally[1, 5 + ring10[r, c]] += 1
                tally[1, 15 + sector[r, c]] += 1
                s_on += radius[r, c]
            if v == 2:
                fail[r, c] = True
                acc_f += 1
                tally[0, ring5[r, c]] += 1
                tally[0, 5 + ring10[r, c]] += 1
                tally[0, 15 + sector[r, c]] += 1
                s_dy += dy[r, c]
                s_dx += dx[r, c]
                r_fail[n_fail] = radius[r, c]
                n_fail += 1
            ii_f[r + 1, c + 1] = ii_f[r, c + 1] + acc_f
            ii_d[r + 1, c + 1] = ii_d[r, c + 1] + acc_d
    # int32 and no more rows than components can be (4-connected: every other cell at most): a few MB
    # more per map on a 300-across grid made glibc hand the memory back and fault it in again every map
    labels = np.empty((h, w), dtype=np.int32)
    sizes = np.empty((h * w + 1) // 2 + 1, dtype=np.int32)
    boxes = np.empty(((h * w + 1) // 2 + 1, 4), dtype=np.int32)

    if full:  # the 59 handcrafted features; without them, only the 61 `pattern` ones (out[59:])
        _handcrafted(wafer, fail, n_fail, ii_f, labels, sizes, boxes, row_edges, col_edges, pad_r, pad_c, size, cos_a,
                     sin_a, resample, perimeter_weights, out)
    _pattern(wafer, fail, n_fail, n_on, ii_f, ii_d, tally, s_on, s_dy, s_dx, r_fail[:n_fail], labels, sizes,
             boxes, radius, angle, k_window, out)


@njit(cache=True, nogil=True)
def _handcrafted(wafer, fail, n_fail, ii_f, labels, sizes, boxes, row_edges, col_edges, pad_r, pad_c, size, cos_a, sin_a,  # noqa: C901 - one compiled pass per map, kept whole: its sums' order is what the bit-for-bit tests hold
                 resample, perimeter_weights, out):  # pragma: no cover - compiled
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
        out[j] = _block_density(ii_f, r0, r1, c0, c1)
        j += 1
    for bi in range(1, 4):
        for bj in range(1, 4):
            out[j] = _block_density(ii_f, row_edges[bi], row_edges[bi + 1], col_edges[bj], col_edges[bj + 1])
            j += 1

    # -- radon (40): row means then row standard deviations of the sinogram, cubic-resampled, ÷100
    sino = _radon(wafer, pad_r, pad_c, size, cos_a, sin_a, float(size // 2))
    n_angles = cos_a.shape[0]
    # every column's mean and population standard deviation over the angles, two passes as numpy's
    # (:func:`_mean_std`), the angles in the same order but row by row (contiguous, vectorised)
    means = np.zeros(size)
    stds = np.zeros(size)
    for i in range(n_angles):
        for x in range(size):
            means[x] += sino[i, x]
    for x in range(size):
        means[x] = means[x] / max(n_angles, 1)  # (no angle at all: zeros, as _mean_std gives)
    for i in range(n_angles):
        for x in range(size):
            stds[x] += (sino[i, x] - means[x]) ** 2
    for x in range(size):
        stds[x] = math.sqrt(stds[x] / max(n_angles, 1))
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
        n = _label(fail, False, labels, sizes, boxes)
        big = np.argmax(sizes[:n])  # the first largest, as max() over regionprops picks it
        box = boxes[big]
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
def _pattern(wafer, fail, n_fail, n_on, ii_f, ii_d, tally, s_on, s_dy, s_dx, r_fail, labels, sizes, boxes,  # noqa: C901 - one compiled pass per map, kept whole: its sums' order is what the bit-for-bit tests hold
             radius, angle, k_window, out):  # pragma: no cover - compiled
    h, w = wafer.shape
    diameter = max(h, w)
    n_on1 = max(n_on, 1)
    rate = n_fail / n_on1
    # -- pattern statistics (15)
    for k in range(5):
        out[59 + k] = tally[0, k] / max(tally[1, k], 1.0)
    n8 = _label(fail, True, labels, sizes, boxes)
    boxes8 = boxes[:n8].copy()  # (`boxes` is reused for the denoised clusters below)
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
    local_max = 0.0
    for r in range(h):
        for c in range(w):
            if wafer[r, c] > 0:
                r0, r1 = max(r - lo, 0), min(r - lo + k_window, h)
                c0, c1 = max(c - lo, 0), min(c - lo + k_window, w)
                f = ii_f[r1, c1] - ii_f[r0, c1] - ii_f[r1, c0] + ii_f[r0, c0]
                d = ii_d[r1, c1] - ii_d[r0, c1] - ii_d[r1, c0] + ii_d[r0, c0]
                v = f / max(d, 1e-6)  # (counts: the same numbers as the float box sums they replace)
                if v > local_max:
                    local_max = v
    out[71] = local_max
    out[72] = local_max - rate
    out[73] = rate

    # -- shape (46), from index 74
    base = 74
    rf, rd = tally[0, 5:15], tally[1, 5:15]
    sf, sd = tally[0, 15:], tally[1, 15:]
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
    nd_ = _label(denoised, True, labels, sizes, boxes)
    if nd_ == 0:
        out[j] = out[j + 1] = out[j + 2] = out[j + 3] = 0.0
    else:
        big = np.argmax(sizes[:nd_])  # the first largest
        s_r = 0.0
        b = boxes[big]  # (its cells in raster order, as over the whole grid)
        for r in range(b[0], b[1]):
            for c in range(b[2], b[3]):
                if labels[r, c] == big + 1:
                    s_r += radius[r, c]
        out[j] = math.sqrt(sizes[big] / n_on1)
        out[j + 1] = s_r / sizes[big]
        out[j + 2] = 100.0 * nd_ / n_on1
        out[j + 3] = sizes[big] / max(n_denoised, 1)
    # the centroid and radial spread of all fails
    j = base + 43
    if n_fail:
        mean_r, sd_r = _mean_std(r_fail, n_fail)
        out[j] = math.hypot(s_dy / n_fail, s_dx / n_fail)
        out[j + 1] = mean_r - s_on / n_on1
        out[j + 2] = sd_r
    else:
        out[j] = out[j + 1] = out[j + 2] = 0.0


@njit(cache=True, nogil=True)
def _block_density(ii_f, r0, r1, c0, c1):  # pragma: no cover - compiled
    # the share of fails in rows r0:r1, columns c0:c1, from the integral image of fails
    n = (r1 - r0) * (c1 - c0)
    if n <= 0:
        return 0.0
    s = ii_f[r1, c1] - ii_f[r0, c1] - ii_f[r1, c0] + ii_f[r0, c0]
    return 100.0 * (s / n)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel here and the canonical view's, on a few tiny maps.

    The first time on a machine this takes ~20 s; scripts/setup.sh calls it so that a user's first
    command does not.
    """
    from waferscope.data.preprocess import canonical_map

    rng = np.random.default_rng(0)
    maps = [rng.choice(np.array([0, 1, 2], np.uint8), size=(9, 7), p=[0.2, 0.5, 0.3]) for _ in range(3)]
    maps.append(np.full((5, 5), 2, np.uint8))  # every die failing
    maps = [canonical_map(m) for m in maps]
    extended_batch(maps)
    pattern_batch(maps)


if __name__ == "__main__":
    warm_up()
