"""Compiled (numba) kernels of the handcrafted features.

The Radon sinogram and the geometry of the largest failing region, each the same numbers as the
scikit-image reference in :mod:`waferscope.features.handcrafted` up to float rounding
(tests/test_features_fast.py checks it on every real map), at a small fraction of the cost.

Why not scikit-image: ``skimage.transform.radon`` warps the whole padded grid once per angle
(``max(H, W)`` bilinear warps of a (√2·max(H, W))² image), and ``regionprops`` + its convex hull
(two Qhull calls) cost more than the rest of the 120 features together. Here:

- **Radon**: only the failing dies are non-zero, so only the output grid points whose bilinear
  sample touches one (a few per die and angle) are sampled, with the same affine matrix, the same
  floor/ceil weights and the same summation order as ``skimage.transform.warp`` + ``sum``. The cost
  is (failing dies × angles × a few) instead of (padded area × angles), the angle set unchanged.
- **Geometry**: the 4-neighbour perimeter codes, weighed as scikit-image does, and the convex area as the number of die centres inside or on the hull of the dies'
  edge midpoints (``convex_hull_image``'s definition), the hull found by a monotone chain on
  doubled (integer) coordinates so that "on the hull" is decided exactly.

``cache=True`` keeps the compiled code beside this file, so a process compiles only once per machine.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def radon_splat(fail_rows, fail_cols, pad_r, pad_c, size, cos_a, sin_a, center):  # pragma: no cover - compiled
    """Return the sinogram (size × n_angles) of the padded square image of the failing dies.

    The failing dies sit at (fail_rows + pad_r, fail_cols + pad_c); the result is bit for bit what
    scikit-image's ``radon`` computes.

    Its warp of angle i samples the image at (col, row) = (cos·x + sin·y + tx, −sin·x + cos·y + ty)
    for every output point (x, y), bilinearly from the floor / ceil neighbours, and the sinogram
    column x is the sum of those samples down y. Only points whose sample touches a failing die are
    non-zero: found from the dies (the inverse rotation of each, and the few grid points around
    it), then each is sampled with the same arithmetic and summed in the same order (y upwards;
    adding the skipped zeros changes nothing).
    """
    n_angles = cos_a.shape[0]
    out = np.zeros((size, n_angles))
    grid = np.zeros((size, size), dtype=np.bool_)
    for k in range(fail_rows.shape[0]):
        grid[fail_rows[k] + pad_r, fail_cols[k] + pad_c] = True
    seen = np.zeros((size, size), dtype=np.bool_)
    points = np.empty(16 * fail_rows.shape[0], dtype=np.int64)
    for i in range(n_angles):
        ca, sa = cos_a[i], sin_a[i]
        tx = -center * (ca + sa - 1)
        ty = -center * (ca - sa - 1)
        reach = abs(ca) + abs(sa) + 1e-9  # (a hair more, so rounding never drops an edge point)
        n = 0
        for k in range(fail_rows.shape[0]):
            py = fail_rows[k] + pad_r
            px = fail_cols[k] + pad_c
            x0 = ca * (px - tx) - sa * (py - ty)
            y0 = sa * (px - tx) + ca * (py - ty)
            for y in range(max(math.ceil(y0 - reach), 0), min(math.floor(y0 + reach), size - 1) + 1):
                for x in range(max(math.ceil(x0 - reach), 0), min(math.floor(x0 + reach), size - 1) + 1):
                    if not seen[y, x]:
                        seen[y, x] = True
                        points[n] = x * size + y
                        n += 1
        chosen = np.sort(points[:n])  # column by column, y upwards within a column
        for j in range(n):
            x, y = chosen[j] // size, chosen[j] % size
            seen[y, x] = False
            c_in = ca * x + sa * y + tx
            r_in = -sa * x + ca * y + ty
            minr, minc = math.floor(r_in), math.floor(c_in)
            maxr, maxc = math.ceil(r_in), math.ceil(c_in)
            dr, dc = r_in - minr, c_in - minc
            top = (1 - dc) * _pixel(grid, minr, minc, size) + dc * _pixel(grid, minr, maxc, size)
            bottom = (1 - dc) * _pixel(grid, maxr, minc, size) + dc * _pixel(grid, maxr, maxc, size)
            out[x, i] += (1 - dr) * top + dr * bottom
    return out


@njit(cache=True, nogil=True)
def _pixel(grid, r, c, size):  # pragma: no cover - compiled
    # the padded image's value, 0 outside (warp's constant mode)
    if r < 0 or c < 0 or r >= size or c >= size:
        return 0.0
    return 1.0 if grid[r, c] else 0.0


_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2


@njit(cache=True, nogil=True)
def _cross(ox, oy, ax, ay, bx, by):  # pragma: no cover - compiled
    return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox)


@njit(cache=True, nogil=True)
def region_counts(region):  # pragma: no cover - compiled
    """Return (histogram of the 4-neighbour perimeter codes, convex area) of the True cells of ``region``.

    A bool crop holding one region. The codes are scikit-image's ``perimeter``: a border cell (one
    4-neighbour erosion removes) scores 1 + 2 per border 4-neighbour + 10 per border diagonal
    neighbour; the caller weighs the histogram as it does (``histogram @ weights``), so the sum is
    rounded in the same order.
    """
    h, w = region.shape
    hist = np.zeros(50, dtype=np.int64)
    for r in range(h):
        for c in range(w):
            if not region[r, c] or not _is_border(region, r, c, h, w):
                continue
            code = 1
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    if dr == 0 and dc == 0:
                        continue
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and region[rr, cc] and _is_border(region, rr, cc, h, w):
                        code += 2 if (dr == 0 or dc == 0) else 10
            hist[code] += 1
    return hist, _convex_area(region, h, w)


@njit(cache=True, nogil=True)
def _is_border(region, r, c, h, w):  # pragma: no cover - compiled
    # a cell of the region that 4-neighbour erosion (outside = background) removes
    return (r == 0 or c == 0 or r == h - 1 or c == w - 1 or not region[r - 1, c] or not region[r + 1, c]
            or not region[r, c - 1] or not region[r, c + 1])


@njit(cache=True, nogil=True)
def _edge_midpoints(pts, n, r, c):  # pragma: no cover - compiled
    # the four edge midpoints of cell (r, c), in doubled coordinates, written at pts[n:n + 4]
    pts[n, 0], pts[n, 1] = 2 * r - 1, 2 * c
    pts[n + 1, 0], pts[n + 1, 1] = 2 * r + 1, 2 * c
    pts[n + 2, 0], pts[n + 2, 1] = 2 * r, 2 * c - 1
    pts[n + 3, 0], pts[n + 3, 1] = 2 * r, 2 * c + 1
    return n + 4


@njit(cache=True, nogil=True)
def _convex_area(region, h, w):  # pragma: no cover - compiled  # noqa: C901 - a compiled scan of the region, kept whole: its sums' order is what the bit-for-bit tests hold
    # Candidate points: the four edge midpoints of the first and last cell of every row and column
    # (only those can be on the hull), in doubled coordinates so that every test below is exact.
    pts = np.empty((8 * (h + w), 2), dtype=np.int64)
    n = 0
    for r in range(h):
        first, last = -1, -1
        for c in range(w):
            if region[r, c]:
                if first < 0:
                    first = c
                last = c
        if first >= 0:
            n = _edge_midpoints(pts, n, r, first)
            n = _edge_midpoints(pts, n, r, last)
    for c in range(w):
        first, last = -1, -1
        for r in range(h):
            if region[r, c]:
                if first < 0:
                    first = r
                last = r
        if first >= 0:
            n = _edge_midpoints(pts, n, first, c)
            n = _edge_midpoints(pts, n, last, c)
    pts = pts[:n]
    order = np.argsort(pts[:, 0] * (4 * w + 8) + pts[:, 1])
    pts = pts[order]
    # Andrew's monotone chain: lower then upper hull, collinear points dropped
    hull = np.empty((2 * n + 1, 2), dtype=np.int64)
    k = 0
    for i in range(n):
        while k >= 2 and _cross(hull[k - 2, 0], hull[k - 2, 1], hull[k - 1, 0], hull[k - 1, 1],
                                pts[i, 0], pts[i, 1]) <= 0:
            k -= 1
        hull[k, 0], hull[k, 1] = pts[i, 0], pts[i, 1]
        k += 1
    lower = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lower and _cross(hull[k - 2, 0], hull[k - 2, 1], hull[k - 1, 0], hull[k - 1, 1],
                                    pts[i, 0], pts[i, 1]) <= 0:
            k -= 1
        hull[k, 0], hull[k, 1] = pts[i, 0], pts[i, 1]
        k += 1
    m = k - 1  # the last point repeats the first
    # The die centres (2r, 2c) inside or on the hull: those with cross(edge j, centre) >= 0 for every
    # edge. Along a row each edge's condition is linear in c, so it bounds c from one side; the row's
    # count is the integer interval left by all of them, found in exact integer arithmetic
    # (the same set as testing every cell, at h·m instead of h·w·m operations).
    count = 0
    for r in range(h):
        c_lo, c_hi = 0, w - 1
        for j in range(m):
            o0, o1 = hull[j, 0], hull[j, 1]
            d0, d1 = hull[j + 1, 0] - o0, hull[j + 1, 1] - o1
            rhs = d1 * (2 * r - o0)  # the condition: d0 · (2c − o1) >= rhs
            if d0 > 0:  # 2c − o1 >= ⌈rhs / d0⌉
                t = o1 - (-rhs // d0)
                c_lo = max(c_lo, -(-t // 2))
            elif d0 < 0:  # 2c − o1 <= ⌊rhs / d0⌋
                c_hi = min(c_hi, (o1 + rhs // d0) // 2)
            elif rhs > 0:  # an edge along the row's direction with the row outside it
                c_hi = -1
        count += max(c_hi - c_lo + 1, 0)
    return count


@njit(cache=True, nogil=True)
def grid_radon_summary(fail, cos_a, sin_a, pool_edges, n_bins):  # pragma: no cover - compiled
    """Return the ``grid`` Radon features of a batch.

    (N, S, S) uint8 fail fractions (×255) → (N, 2·K) float64, the mean over angles of each
    projection offset, then the standard deviation over angles, each averaged into the K bins
    ``pool_edges[k]:pool_edges[k+1]`` of the offsets and divided by S.

    Each failing cell's centre is projected on every direction and its fraction split linearly
    between the two nearest offset bins (what the sparse projection matrix did, without building it);
    only cells with failing dies cost anything.
    """
    n, size = fail.shape[0], fail.shape[1]
    n_angles = cos_a.shape[0]
    k_bins = pool_edges.shape[0] - 1
    out = np.zeros((n, 2 * k_bins))
    sino = np.zeros((n_angles, n_bins))
    centre = (size - 1) / 2.0
    half = (n_bins - 1) / 2.0
    for m in range(n):
        sino[:, :] = 0.0
        for r in range(size):
            for c in range(size):
                f = fail[m, r, c]
                if f == 0:
                    continue
                w = f / 255.0
                u = c - centre
                v = r - centre
                for a in range(n_angles):
                    t = u * cos_a[a] + v * sin_a[a] + half
                    lo = int(math.floor(t))
                    frac = t - lo
                    sino[a, lo] += (1.0 - frac) * w
                    sino[a, lo + 1] += frac * w
        for k in range(k_bins):
            acc_mean = 0.0
            acc_std = 0.0
            for b in range(pool_edges[k], pool_edges[k + 1]):
                s1 = 0.0
                for a in range(n_angles):
                    s1 += sino[a, b]
                mean = s1 / n_angles
                s2 = 0.0
                for a in range(n_angles):
                    d = sino[a, b] - mean
                    s2 += d * d
                acc_mean += mean
                acc_std += math.sqrt(s2 / n_angles)
            width = pool_edges[k + 1] - pool_edges[k]
            out[m, k] = acc_mean / width / size
            out[m, k_bins + k] = acc_std / width / size
    return out


@njit(cache=True, nogil=True)
def neighbour_counts(fail, die, r, c):  # pragma: no cover - compiled
    """(failing, die) cells among the 8 neighbours of (r, c) of two same-shape 2-D masks (outside: none)."""
    h, w = fail.shape
    nf = 0
    nd = 0
    for dr in range(-1, 2):
        for dc in range(-1, 2):
            if dr == 0 and dc == 0:
                continue
            rr, cc = r + dr, c + dc
            if 0 <= rr < h and 0 <= cc < w:
                if fail[rr, cc]:
                    nf += 1
                if die[rr, cc]:
                    nd += 1
    return nf, nd


@njit(cache=True, nogil=True)
def grid_local(fail_frac, nodie_frac, fail, die, k, dy, dx, radius):  # pragma: no cover - compiled
    """Neighbourhood statistics of the ``grid`` features for a batch of (N, S, S) maps.

    Per map (fail cells with ≥ 1 failing 8-neighbour, with ≥ 3, the sum over fail cells of their
    neighbours' fail share, denoised cells, the highest fail share of a k×k window centred on a die
    cell, then the fail-fraction-weighted sums of dy, dx, r, r² and the die-fraction-weighted sum of
    r), and the (N, S, S) denoised mask (fail cells with ≥ 2 failing neighbours). Every sum runs
    over the cells in one fixed order, so a map gets the same numbers alone or in any batch.
    """
    n, s = fail.shape[0], fail.shape[1]
    stats = np.zeros((n, 10))
    denoised = np.zeros((n, s, s), dtype=np.bool_)
    ii_f = np.zeros((s + 1, s + 1))
    ii_d = np.zeros((s + 1, s + 1))
    lo, hi = k // 2, k - k // 2  # the window rows r - lo .. r + hi - 1 (as a centred even filter)
    for m in range(n):
        for r in range(s):
            acc_f = 0.0
            acc_d = 0.0
            for c in range(s):
                acc_f += fail_frac[m, r, c]
                acc_d += 255 - nodie_frac[m, r, c]
                ii_f[r + 1, c + 1] = ii_f[r, c + 1] + acc_f
                ii_d[r + 1, c + 1] = ii_d[r, c + 1] + acc_d
                f = fail_frac[m, r, c] / 255.0
                rr = radius[r, c]
                stats[m, 5] += f * dy[r, c]
                stats[m, 6] += f * dx[r, c]
                stats[m, 7] += f * rr
                stats[m, 8] += f * rr * rr
                stats[m, 9] += (255 - nodie_frac[m, r, c]) / 255.0 * rr
        best = 0.0
        for r in range(s):
            for c in range(s):
                if fail[m, r, c]:
                    nb, nd = neighbour_counts(fail[m], die[m], r, c)
                    if nb >= 1:
                        stats[m, 0] += 1
                    if nb >= 3:
                        stats[m, 1] += 1
                    stats[m, 2] += nb / max(nd, 1)
                    if nb >= 2:
                        stats[m, 3] += 1
                        denoised[m, r, c] = True
                if die[m, r, c]:
                    r0, r1 = max(r - lo, 0), min(r + hi, s)
                    c0, c1 = max(c - lo, 0), min(c + hi, s)
                    f = ii_f[r1, c1] - ii_f[r0, c1] - ii_f[r1, c0] + ii_f[r0, c0]
                    d = ii_d[r1, c1] - ii_d[r0, c1] - ii_d[r1, c0] + ii_d[r0, c0]
                    v = f / max(d, 1.0)
                    if v > best:
                        best = v
        stats[m, 4] = best
    return stats, denoised


@njit(cache=True, nogil=True)
def canonical_choice(m, rules):  # pragma: no cover - compiled  # noqa: C901 - a compiled scan comparing the 8 views cell by cell, stopping at the first difference
    """For :func:`waferscope.data.preprocess.canonical_map`.

    The dies' bounding box (r0, r1, c0, c1) of a die-state map and the views k (a bool mask of 8)
    whose key is the largest. The key of view k is (its fail-weighted row, column and row×column
    moments, then the same die-weighted), computed from the cropped map's moments about its centre
    with ``rules[k]`` = (source of the view's row moment, its sign, the same for the column); odd
    integer coordinates keep every value exact.
    """
    h, w = m.shape
    r0, r1, c0, c1 = h, 0, w, 0
    for r in range(h):
        for c in range(w):
            if m[r, c] != 0:
                r0 = min(r0, r)
                r1 = max(r1, r + 1)
                c0 = min(c0, c)
                c1 = max(c1, c + 1)
    if r1 == 0:  # no die at all: the whole map
        r0, r1, c0, c1 = 0, h, 0, w
    mom = np.zeros(6, dtype=np.int64)
    for r in range(r0, r1):
        a = 2 * (r - r0) - (r1 - r0 - 1)
        for c in range(c0, c1):
            v = m[r, c]
            if v == 0:
                continue
            b = 2 * (c - c0) - (c1 - c0 - 1)
            mom[3] += a
            mom[4] += b
            mom[5] += a * b
            if v == 2:
                mom[0] += a
                mom[1] += b
                mom[2] += a * b
    keys = np.empty((8, 6), dtype=np.int64)
    for k in range(8):
        jr, sr, jc, sc = rules[k, 0], rules[k, 1], rules[k, 2], rules[k, 3]
        for part in range(2):
            keys[k, 3 * part] = sr * mom[3 * part + jr]
            keys[k, 3 * part + 1] = sc * mom[3 * part + jc]
            keys[k, 3 * part + 2] = sr * sc * mom[3 * part + 2]
    best = np.ones(8, dtype=np.bool_)
    for j in range(6):
        top = np.iinfo(np.int64).min
        for k in range(8):
            if best[k] and keys[k, j] > top:
                top = keys[k, j]
        for k in range(8):
            if best[k] and keys[k, j] != top:
                best[k] = False
    return r0, r1, c0, c1, best
