"""The eight WM-811K defect patterns and the background noise, as per-die fail probabilities.

Every function takes a cached :class:`~waferscope.data.synthetic.geometry.Geometry` and a
:class:`Draws` source of scalar random numbers and returns a float64 array with one fail
probability per die (in ``Geometry.on_index`` order). The caller turns probabilities into
failing dies with one uniform draw per die, so a pattern is a *density*: real defect regions are
rarely 100 % failing.

Shapes live in wafer coordinates (the unit disk, see geometry.py), so a pattern keeps its
physical shape on non-square die grids. Only + - × ÷ sqrt and comparisons are used (no sin, cos,
exp, log, pow: their last bit can differ between machines and flip a die at a threshold).
Ranges of the random parameters were calibrated against the real dev maps with
``waferscope evaluate synthetic-vs-real`` (see docs/synthetic.md).
"""

from __future__ import annotations

import math

import numpy as np

from waferscope.data.synthetic.geometry import Geometry


class Draws:
    """Scalar random numbers from a numpy Generator, drawn in blocks (one call per ~64 numbers)."""

    __slots__ = ("rng", "buf", "i")

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.buf: list[float] = []
        self.i = 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        """Return a uniform draw in [lo, hi) from the buffered generator."""
        if self.i >= len(self.buf):
            self.buf = self.rng.random(64).tolist()
            self.i = 0
        x = self.buf[self.i]
        self.i += 1
        return lo + (hi - lo) * x

    def tri(self, lo: float, hi: float) -> float:
        """Triangular on [lo, hi], peaked in the middle (mean of two uniforms)."""
        return lo + (hi - lo) * 0.5 * (self() + self())

    def low(self, lo: float, hi: float) -> float:
        """Skewed towards lo (product of two uniforms)."""
        return lo + (hi - lo) * self() * self()

    def chance(self, p: float) -> bool:
        """Return True with probability ``p``."""
        return self() < p

    def index(self, n: int) -> int:
        """Return a uniform random index in [0, n)."""
        return min(int(self() * n), n - 1)

    def direction(self) -> tuple[float, float]:
        """Return a uniformly random unit vector (a, b), without trigonometry (rejection from the square)."""
        while True:
            a, b = self(-1.0, 1.0), self(-1.0, 1.0)
            r2 = a * a + b * b
            if 0.01 < r2 <= 1.0:
                r = math.sqrt(r2)  # correctly rounded, unlike pow()
                return a / r, b / r

    def in_disk(self, radius: float) -> tuple[float, float]:
        """Return a uniformly random point of the disk of that radius."""
        while True:
            a, b = self(-1.0, 1.0), self(-1.0, 1.0)
            if a * a + b * b <= 1.0:
                return a * radius, b * radius


def smooth_field(g: Geometry, d: Draws, terms: int = 3) -> np.ndarray:
    """Return a random smooth field over the wafer (sum of a few random low-order polynomials), ~[-1, 1]."""
    k = g.basis.shape[0]
    out = d(-1.0, 1.0) * g.basis[d.index(k)]
    for _ in range(terms - 1):
        out += d(-1.0, 1.0) * g.basis[d.index(k)]
    return out


def _ramp(x: np.ndarray, soft: float) -> np.ndarray:
    """1 where x <= 1 - soft, falling linearly to 0 at x = 1 (x = normalised distance)."""
    return np.clip((1.0 - x) / soft, 0.0, 1.0)


def _blob_distance(g: Geometry, d: Draws, cu: float, cv: float, radius: float, aspect_max: float,
                   wobble: float) -> np.ndarray:
    """Normalised distance from a randomly stretched, wobbly ellipse centred at (cu, cv): 1 = its edge."""
    a, b = d.direction()
    asp = d(1.0, aspect_max)
    du = g.u - cu
    dv = g.v - cv
    along = (du * a + dv * b) * (1.0 / (radius * asp))
    across = (dv * a - du * b) * (asp / radius)
    dist = np.sqrt(along * along + across * across)
    if wobble > 0:
        dist += wobble * smooth_field(g, d, 2)
    return dist


CENTRE_BUMP_P = 0.8
LOC_MIN_R2 = 0.01
RING_COVER = (0.3, 1.1)
EDGE_ARC_COS = (0.4, 0.99)
EDGE_BLOB_P = 0.3
LOC_DENSE = (0.5, 0.9)
CENTRE_BUMP_K = (0.0, 3.5)
CENTRE_BUMP_R = (0.15, 0.4)


# ---- background ---------------------------------------------------------------------------------
def die_radius(g: Geometry, dies: float) -> float:
    """Return a length of ``dies`` die pitches in wafer coordinates (mean of both grid directions)."""
    return dies * 4.0 / (g.rows + g.cols)


def background(g: Geometry, d: Draws) -> np.ndarray:
    """Random fails of a normal wafer, as measured on the real `none` dev wafers.

    A per-wafer base rate (3–12 % of dies fail), smooth process gradients, ~3× more fails on
    the outermost ring, often a few extra fails at the very centre, and a few tiny clusters of
    1–5 dies.
    """
    base = d.tri(0.005, 0.085)
    amp = d(0.0, 0.7)
    p = base * np.clip(1.0 + amp * smooth_field(g, d, 3), 0.15, 3.0)
    # Rim: the outermost ring of real wafers fails at 8–28 % (10–90 %, median 18 %) whatever the
    # class, as isolated dies rather than continuous runs.
    rim = d.tri(0.0, 0.3)
    p += rim * (g.ring == 0)
    p += (rim * d(0.0, 0.3)) * (g.ring == 1)
    # Radial process non-uniformity: real wafers of every class fail more towards the centre
    # (fail rate at r < 0.15 / at 0.3 ≤ r < 0.8: median 1.5–1.9, q90 3.4–4.3, per class), a
    # broad bump of the base rate, not a dense core.
    if d.chance(CENTRE_BUMP_P):
        p += (base * d.tri(*CENTRE_BUMP_K)) * _ramp(g.rho * (1.0 / d(*CENTRE_BUMP_R)), 1.0)
    if d.chance(0.4):  # centre hot spot: real wafers of every class fail ~2× more at r < 0.1
        p += d.low(0.0, 0.4) * (g.rho < d(0.03, 0.1))
    for _ in range(int(d(0.0, 1.8))):  # tiny clusters that no labeller calls a pattern
        cells = _neighbourhood(g, g.on_index[d.index(g.n_dies)], 1 + d.chance(0.15))
        die = cells[d.rng.random(len(cells)) < d(0.2, 0.55)]
        p[die] = np.maximum(p[die], d(0.5, 1.0))
    return p


_OFFSETS = {k: np.array([(dr, dc) for dr in range(-k, k + 1) for dc in range(-k, k + 1)], dtype=np.intp)
            for k in (1, 2)}


def _neighbourhood(g: Geometry, cell: int, k: int) -> np.ndarray:
    """Die numbers of the (2k+1)×(2k+1) block of grid cells around a cell, on-wafer only."""
    off = _OFFSETS[k]
    r = cell // g.cols + off[:, 0]
    c = cell % g.cols + off[:, 1]
    ok = (r >= 0) & (r < g.rows) & (c >= 0) & (c < g.cols)
    die = g.grid_to_die[r[ok] * g.cols + c[ok]]
    return die[die >= 0]


# ---- single patterns ----------------------------------------------------------------------------
def center(g: Geometry, d: Draws) -> np.ndarray:
    """Return a blob at the centre; usually a small dense core in a broad sparse halo.

    As on real Center wafers (largest fail cluster 8–27 dies, median 13, yet 11 % of all dies
    fail on average).
    """
    cu, cv = d.in_disk(0.08)
    core_r = die_radius(g, d(1.6, 4.5))
    dist = _blob_distance(g, d, cu, cv, core_r, 1.3, d(0.0, 0.15))
    p = d(0.6, 1.0) * _ramp(dist, d(0.2, 0.8))
    if d.chance(0.6):
        halo_r = d(max(0.2, 1.5 * core_r), 0.45)
        p = np.maximum(p, d(0.1, 0.35) * _ramp(dist * (core_r / halo_r), d(0.3, 1.0)))
    return p


def donut(g: Geometry, d: Draws) -> np.ndarray:
    """Return the fail probabilities of a Donut: a ring around a (slightly off-centre) point."""
    cu, cv = d.in_disk(0.1)
    du = g.u - cu
    dv = g.v - cv
    dist = np.sqrt(du * du + dv * dv)
    mid = d(0.3, 0.62)
    half_width = d(0.1, 0.3)
    ring = np.abs(dist - mid) * (1.0 / half_width)
    ring += d(0.0, 0.25) * smooth_field(g, d, 2)
    p = d(0.5, 1.0) * _ramp(ring, d(0.2, 0.8))
    if d.chance(0.35):  # an open ring ("C" shape), common among real donuts
        a, b = d.direction()
        cos_dir = (dv * a + du * b) / np.maximum(dist, 1e-9)
        keep_from = 1.0 - 2.0 * d(0.6, 0.95)  # cosine threshold for the covered share
        p *= np.clip((cos_dir - keep_from) * 4.0, 0.0, 1.0)
    return p


def _angular(g: Geometry, d: Draws, cos_half_lo: float, cos_half_hi: float):
    """0 outside a random arc seen from the centre, rising to 1 in its middle.

    Also returns the arc's middle direction as a wafer point (u, v) on the unit circle.
    """
    a, b = d.direction()
    cos_dir = g.cos_t * a + g.sin_t * b
    cos_half = d(cos_half_lo, cos_half_hi)
    return np.clip((cos_dir - cos_half) * (1.0 / (1.0 - cos_half)), 0.0, 1.0), (b, a)


def _satellites(g: Geometry, d: Draws, p: np.ndarray, cu: float, cv: float, spread: float,
                n: int) -> np.ndarray:
    """Add ``n`` small dense clusters (2–5 dies across) within ``spread`` of (cu, cv).

    Real Loc, Edge-Loc and Center wafers carry more mid-size fail clusters than normal ones
    (6–15-die clusters per wafer: ~1.1–1.3 vs 0.2).
    """
    for _ in range(n):
        du, dv = d.in_disk(spread)
        dist = _blob_distance(g, d, cu + du, cv + dv, die_radius(g, d(1.0, 2.5)), 1.8, 0.0)
        p = np.maximum(p, d(0.6, 0.95) * (dist <= 1.0))
    return p


def edge_loc(g: Geometry, d: Draws) -> np.ndarray:
    """Return a crescent hugging the rim or a compact cluster cut by the rim.

    The crescent is deepest in its middle, 1–6 dies deep, 25–130° long; many real Edge-Loc defects
    are chunky blobs at the edge, not arcs.
    """
    if d.chance(EDGE_BLOB_P):
        a, b = d.direction()
        r0 = d(0.97, 1.1)  # centred on or beyond the rim: most of the cluster lies on the rim
        dist = _blob_distance(g, d, r0 * a, r0 * b, d(0.12, 0.38), 1.6, d(0.0, 0.3))
        p = d(0.6, 1.0) * _ramp(dist, d(0.2, 0.7))
    else:
        t, (a, b) = _angular(g, d, *EDGE_ARC_COS)
        depth_max = d.low(1.2, 1.2 + 0.3 * min(g.rows, g.cols) / 2)
        t = np.sqrt(t) if d.chance(0.5) else t  # blunt (sqrt) or pointed crescent ends
        depth = depth_max * t + d(0.0, 1.0) * smooth_field(g, d, 2)
        p = d(0.45, 1.0) * np.clip(depth - g.ring, 0.0, 1.0)
    if d.chance(0.4):
        p = _satellites(g, d, p, 0.9 * a, 0.9 * b, 0.12, 1 + d.chance(0.4))
    return p


def edge_ring(g: Geometry, d: Draws) -> np.ndarray:
    """Return the outermost 1–3 rings of dies, often not all the way round."""
    width = d.low(0.7, 2.2)
    band = np.clip(width - g.ring, 0.0, 1.0)
    # Coverage around the rim: real Edge-Ring wafers fail on ~45 % of the rim, usually one side
    # dominant fading towards the other (opposite-side correlation of rim fails ≈ -0.4).
    a, b = d.direction()
    c1 = g.cos_t * a + g.sin_t * b
    a, b = d.direction()
    c2 = g.cos_t * a + g.sin_t * b
    cover = d(*RING_COVER) + d(0.3, 1.3) * c1 + d(0.0, 0.4) * (2.0 * c2 * c2 - 1.0)
    return d(0.6, 1.0) * band * np.clip(cover, 0.0, 1.0)


def _block(g: Geometry, cu: float, cv: float, h: float, w: float) -> np.ndarray:
    """1.0 on the axis-aligned block of about h × w dies centred at (cu, cv), else 0.0."""
    du = np.abs(g.u - cu) * (g.rows / h)
    dv = np.abs(g.v - cv) * (g.cols / w)
    return (np.maximum(du, dv) <= 1.0).astype(np.float64)


def loc(g: Geometry, d: Draws) -> np.ndarray:
    """One to three clusters off the centre.

    A dense block, small and dense, larger and sparser, a dense core in a sparse halo, or a patch
    of dense fragments. Real Loc clusters are mostly blobs (largest cluster's axis ratio ≈ 2; ~20
    % are thick streaks, ~3 dies wide), larger than scratches (largest cluster 9–60 dies, median ≈
    21), and range from 2×2 squares to irregular patches of bars and blocks.
    """
    p = None
    for _ in range(1 + (d() < 0.35) + (d() < 0.12)):
        cu, cv = d.in_disk(0.92)
        while cu * cu + cv * cv < LOC_MIN_R2:  # a cluster at the very centre is a Center defect
            cu, cv = d.in_disk(0.92)
        kind = d()
        if kind < 0.25:  # an axis-aligned dense block or bar (reticle-shaped): often a tiny 2×2–3×3
            # square, which real labellers call Loc while background specks stay sparse
            h, w = (d(2.0, 3.5), d(2.0, 3.5)) if d.chance(0.4) else (d(1.5, 6.0), d(2.0, 8.0))
            if d.chance(0.5):
                h, w = w, h
            blob = d(*LOC_DENSE) * _block(g, cu, cv, h, w)
        elif kind < 0.5:  # compact, dense
            dist = _blob_distance(g, d, cu, cv, die_radius(g, d(1.8, 6.0)), 2.3, d(0.0, 0.25))
            blob = d(*LOC_DENSE) * _ramp(dist, d(0.2, 0.6))
        elif kind < 0.72:  # larger, sparser
            dist = _blob_distance(g, d, cu, cv, d(0.12, 0.36), 2.0, d(0.0, 0.35))
            blob = d(0.5, 0.9) * _ramp(dist, d(0.3, 1.0))
        elif kind < 0.86:  # dense core in a sparse halo
            dist = _blob_distance(g, d, cu, cv, d(0.12, 0.3), 1.5, d(0.0, 0.3))
            halo = d(0.2, 0.5) * _ramp(dist, 0.6)
            blob = np.maximum(halo, d(*LOC_DENSE) * _ramp(dist * (1.0 / d(0.3, 0.55)), 0.4))
        else:  # a patch of dense bars and blocks over a sparse region
            spread = d(0.12, 0.3)
            dist = _blob_distance(g, d, cu, cv, spread, 1.5, d(0.0, 0.3))
            blob = d(0.1, 0.35) * _ramp(dist, 0.6)
            for _ in range(4 + d.index(7)):
                fu, fv = d.in_disk(spread)
                h, w = (d(1.0, 2.5), d(2.0, 5.0)) if d.chance(0.5) else (d(2.0, 5.0), d(1.0, 2.5))
                blob = np.maximum(blob, d(*LOC_DENSE) * _block(g, cu + fu, cv + fv, h, w))
        if p is None:
            p, first = blob, (cu, cv)
        else:
            p = np.maximum(p, blob)
    if d.chance(0.5):
        p = _satellites(g, d, p, first[0], first[1], 0.35, 1 + d.index(3))
    return p


def near_full(g: Geometry, d: Draws) -> np.ndarray:
    """Return the fail probabilities of a Near-full map: most dies fail, sometimes a region still passes."""
    p = d(0.75, 0.99) * np.clip(1.0 + d(0.0, 0.3) * smooth_field(g, d, 2), 0.0, 1.0)
    if d.chance(0.5):  # a region that still passes
        cu, cv = d.in_disk(0.9)
        dist = _blob_distance(g, d, cu, cv, d(0.1, 0.4), 1.5, 0.2)
        p *= 1.0 - d(0.5, 1.0) * _ramp(dist, 0.7)
    return p


def random_pattern(g: Geometry, d: Draws) -> np.ndarray:
    """Return the fail probabilities of a Random map: a high fail rate modulated by a smooth field."""
    level = d(0.27, 0.65)
    return level * np.clip(1.0 + d(0.0, 0.5) * smooth_field(g, d, 3), 0.2, 2.0)


def scratch(g: Geometry, d: Draws) -> np.ndarray:
    """One to three thin, curved, sometimes broken lines (quadratic Bézier curves).

    Real scratches are mostly one die wide and continuous: the largest fail cluster of a real
    Scratch wafer spans 8–37 dies (10–90 %, median 13) and is long and thin (axis ratio ≈ 5), so
    each curve is sampled at most one die apart along both grid axes (an 8-connected staircase,
    not a thick 4-connected one) and fails densely.
    """
    p = np.zeros(g.n_dies)
    half_r, half_c = g.rows / 2, g.cols / 2
    n_lines = 1 + (d() < 0.2) + (d() < 0.05)
    for _ in range(n_lines):
        length = d(0.35, 1.7)
        if d.chance(0.4):  # from the rim inwards, like a handling scratch
            a, b = d.direction()
            u0, v0 = 0.95 * a, 0.95 * b
            a2, b2 = d.direction()
            a, b = -a + 0.6 * a2, -b + 0.6 * b2
            norm = math.sqrt(a * a + b * b) or 1.0
            a, b = a / norm, b / norm
        else:  # a chord around a point of the inner wafer: real scratches mostly stay on the wafer
            a, b = d.direction()
            u0, v0 = d.in_disk(0.8)
        straight = d.chance(0.15)
        if straight:  # along the die rows or columns (probe-card / handling direction)
            a, b = (0.0, 1.0 if b > 0 else -1.0) if abs(b) > abs(a) else (1.0 if a > 0 else -1.0, 0.0)
        if u0 * u0 + v0 * v0 < 0.9:  # chord: (u0, v0) is its middle
            u0, v0 = u0 - 0.5 * length * a, v0 - 0.5 * length * b
        u2, v2 = u0 + length * a, v0 + length * b
        bend = 0.0 if straight else d.tri(-0.45, 0.45) * length
        u1, v1 = 0.5 * (u0 + u2) - bend * b, 0.5 * (v0 + v2) + bend * a
        # Samples at most one die apart on each axis (bound: the control polygon's extent).
        span = max((abs(u1 - u0) + abs(u2 - u1)) * half_r, (abs(v1 - v0) + abs(v2 - v1)) * half_c)
        m = int(span) + 2
        t = np.arange(m) * (1.0 / (m - 1))
        s = 1.0 - t
        pu = s * s * u0 + 2.0 * s * t * u1 + t * t * u2
        pv = s * s * v0 + 2.0 * s * t * v1 + t * t * v2
        keep = np.ones(m, dtype=bool)
        if d.chance(0.2):  # broken scratch: drop random runs of ~3 dies
            seg = (np.arange(m) * (1.0 / 3.0)).astype(np.intp)
            keep = d.rng.random(seg[-1] + 1)[seg] >= d(0.1, 0.35)
        ri = np.floor((pu + 1.0) * half_r).astype(np.intp)
        ci = np.floor((pv + 1.0) * half_c).astype(np.intp)
        if d.chance(0.35):  # a wedge: 2–3 dies wide over one end, thinning out (common on real ones)
            cut = d(0.25, 1.0)
            wide = (t < cut) if d.chance(0.5) else (t > 1.0 - cut)
            shifts = ((1, 0), (0, 1), (-1, 0)) if d.chance(0.4) else ((1, 0), (0, 1))
            ri = np.concatenate([ri] + [ri[wide] + dr for dr, _ in shifts])
            ci = np.concatenate([ci] + [ci[wide] + dc for _, dc in shifts])
            keep = np.concatenate([keep] + [keep[wide]] * len(shifts))
        if d.chance(0.15):  # ragged: stray fails beside the line
            side = d.rng.random(len(ri)) < d(0.1, 0.3)
            ri = np.concatenate([ri, ri[side] + d.rng.integers(-1, 2, int(side.sum()))])
            ci = np.concatenate([ci, ci[side] + d.rng.integers(-1, 2, int(side.sum()))])
            keep = np.concatenate([keep, keep[side]])
        ok = keep & (ri >= 0) & (ri < g.rows) & (ci >= 0) & (ci < g.cols)
        die = g.grid_to_die[ri[ok] * g.cols + ci[ok]]
        die = die[die >= 0]
        p[die] = np.maximum(p[die], d(0.8, 1.0))
    return p


PATTERNS = {
    "Center": center,
    "Donut": donut,
    "Edge-Loc": edge_loc,
    "Edge-Ring": edge_ring,
    "Loc": loc,
    "Near-full": near_full,
    "Random": random_pattern,
    "Scratch": scratch,
}
