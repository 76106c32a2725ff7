"""Synthetic wafer maps with die-level ground truth: the embedded default data set.

``generate(n, seed)`` returns a :class:`~waferscope.data.dataset.WaferDataset` of round wafers on
die grids, each with one of the 9 WM-811K classes (or, with ``mixed=True``, one of the 38
MixedWM38 classes), a per-die ground-truth mask and multi-labels over ``BASE_PATTERNS``.

Ground-truth policy
-------------------
* ``mask[r, c]`` is True where the *pattern* made the die fail (``mask="fail"``, the default).
  Background random fails, which every wafer has, are never in the mask; pattern dies that
  happened to pass are not either. So ``none`` wafers have an all-False mask, and Random and
  Near-full wafers have a mask of the dies their wafer-wide excess failed (Random is a pattern
  like any other: a wafer-wide raised fail density). ``mask="region"`` instead marks every die
  where the pattern's fail probability is at least 0.2 (passing dies inside a scratch included).
* Labels: the WM-811K class name; mixed maps are labelled with the ``+``-joined names of their
  patterns in ``BASE_PATTERNS`` order (``"Center+Edge-Loc+Scratch"``), singles and ``none`` keep
  their plain name. ``multilabels`` (N×8 over BASE_PATTERNS) is set for every map.

Profiles
--------
``profile="wm811k"`` (the default) draws WM-811K-like wafers: grids of 20–86 dies across, a
background fail rate of 0.5–8.5 % with the busy outer ring real WM-811K wafers have, the grid
cropped to the wafer. ``profile="fab"`` draws half of its wafers that way and half as fab
streams show them, which WM-811K does not (issue 27: a perfectly clean round wafer from a CSV die
list was called Scratch): grids 20–300 dies across with die aspect ratios 0.5–2, clean wafers of
0–3 % random fails without a failing rim, rings of edge exclusion (no-die), a margin of no-die
cells around the wafer (often uneven: an off-centre grid) and grids clipped on one side. Every
class gets these variations, so a pattern is not told apart from ``none`` by its grid.

Determinism
-----------
Wafer ``i`` draws only from ``numpy.random.default_rng([seed, i])`` (``[seed, i, 1]`` for mixed
sets), and its class is ``classes[i % len(classes)]``, so the same arguments give byte-identical
maps on every machine, and ``generate(20)`` starts with the maps of ``generate(10)``. Only
correctly rounded float operations feed any threshold (see patterns.py).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

from waferscope.data.classes import BASE_PATTERNS, CLASSES, NORMAL, canonical_label
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic.geometry import FLAT_SIDES, geometry
from waferscope.data.synthetic.patterns import PATTERNS, Draws, background, smooth_field
from waferscope.errors import ConfigError

__all__ = ["generate", "MIXED_CLASSES", "GENERATOR_VERSION", "product_catalogue", "fab_catalogue", "PROFILES",
           "FAB_SOURCE"]

GENERATOR_VERSION = 4  # 4: profile="fab" (profile="wm811k" gives the bytes of version 3)
PROFILES = ("wm811k", "fab")
FAB_SOURCE = "synthetic-fab"  # meta "source" of a profile="fab" map drawn fab-like

_SHORT = {"Center": "C", "Donut": "D", "Edge-Loc": "EL", "Edge-Ring": "ER", "Loc": "L", "Scratch": "S"}


def _mixed_classes() -> tuple[str, ...]:
    """Return the 38 MixedWM38 classes: normal, 8 singles, and the 29 2–4-pattern mixes of C, D, EL, ER, L.

    S where Center excludes Donut and Edge-Loc excludes Edge-Ring.
    """
    combinable = [p for p in BASE_PATTERNS if p in _SHORT]
    out = [NORMAL, *BASE_PATTERNS]
    for k in (2, 3, 4):
        for combo in itertools.combinations(combinable, k):
            s = set(combo)
            if {"Center", "Donut"} <= s or {"Edge-Loc", "Edge-Ring"} <= s:
                continue
            out.append("+".join(combo))
    return tuple(out)


MIXED_CLASSES = _mixed_classes()
assert len(MIXED_CLASSES) == 38

# ---- die-grid sizes -----------------------------------------------------------------------------
N_PRODUCTS = 256
# Mean factor on the background fail rate of wafers with these patterns (drawn from 1 to 2×mean-1).
NOISIER_BACKGROUND = {"Loc": 1.3, "Edge-Loc": 1.4}
MIN_PATTERN_DIES = 4


def _sum3(d: Draws) -> float:
    """≈ standard normal from three uniforms (range ±3), with no transcendental functions."""
    return (d() + d() + d() - 1.5) * 2.0


@lru_cache(maxsize=1)
def product_catalogue() -> tuple[tuple[int, int, int, int, int], ...]:
    """Return a fixed catalogue of die-grid "products" (rows, cols, edge level, flat side, flat depth).

    Real fabs run a limited set of products, each with its own grid (the dev maps use 21 grids,
    the full WM-811K a few hundred). Drawing each wafer's grid from a fixed catalogue keeps the
    geometry cache small and hot. Sizes: geometric mean of rows and cols ~ log-normal around 36
    dies (5–95 % ≈ 24–54), aspect rows/cols mostly 0.75–1.3 with a few 0.45–2.2 extremes,
    matching the dev maps (22×24 … 51×50, median 39×34) and spanning the bulk of WM-811K.
    """
    d = Draws(np.random.default_rng([20150101, 811]))
    out = []
    for _ in range(N_PRODUCTS):
        z = _sum3(d)
        diam = 36.0 * (1.0 + 0.25 * z + 0.031 * z * z)  # ≈ 36·exp(0.25 z), without exp
        if d.chance(0.06):
            aspect = d(0.45, 2.2)
        else:
            aspect = 1.0 + 0.1 * _sum3(d)
        root = math.sqrt(aspect)
        rows = max(12, int(diam * root + 0.5))
        cols = max(12, int(diam / root + 0.5))
        edge = d.index(3)
        flat = d.index(len(FLAT_SIDES)) if d.chance(0.2) else -1
        out.append((rows, cols, edge, flat, d.index(2)))
    return tuple(out)


N_FAB_PRODUCTS = 96
FAB_DIAMETER = (20.0, 300.0)


@lru_cache(maxsize=1)
def fab_catalogue() -> tuple[tuple[int, int, int, int, int], ...]:
    """Fab products (rows, cols, edge level, flat side, flat depth).

    Dies across log-uniform over :data:`FAB_DIAMETER`, die aspect log-uniform 0.5–2 (rows/cols),
    as in the wm811k catalogue otherwise. A fixed catalogue keeps the geometry cache bounded (a
    300×300 geometry is ~10 MB).
    """
    d = Draws(np.random.default_rng([20261206, 27]))
    lo, hi = FAB_DIAMETER
    out = []
    for _ in range(N_FAB_PRODUCTS):
        diam = lo * (hi / lo) ** d()  # pow is fine here: the catalogue is drawn once, then rounded to ints
        aspect = 2.0 ** d(-1.0, 1.0)
        root = math.sqrt(aspect)
        rows = max(12, int(diam * root + 0.5))
        cols = max(12, int(diam / root + 0.5))
        flat = d.index(len(FLAT_SIDES)) if d.chance(0.2) else -1
        out.append((min(rows, 400), min(cols, 400), d.index(3), flat, d.index(2)))
    return tuple(out)


def _grid_for(d: Draws, size) -> tuple[int, int, int, int, int]:
    if size is None:
        return product_catalogue()[d.index(N_PRODUCTS)]
    rows, cols = size
    flat = d.index(len(FLAT_SIDES)) if d.chance(0.2) else -1
    return rows, cols, d.index(3), flat, d.index(2)


def _parse_size(size) -> tuple[int, int] | None:
    if size is None or size == 0 or size == "":
        return None
    if isinstance(size, str):
        parts = size.lower().replace("x", " ").split()
        size = tuple(int(p) for p in parts) if len(parts) == 2 else int(parts[0])
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    rows, cols = (int(x) for x in size)
    if rows < 8 or cols < 8 or rows > 1000 or cols > 1000:
        raise ConfigError(f"synthetic size must be between 8 and 1000 dies per side, got {rows}×{cols}")
    return rows, cols


def _parse_classes(classes, mixed: bool) -> tuple[str, ...]:
    allowed = MIXED_CLASSES if mixed else CLASSES
    if classes is None or classes == "":
        return allowed
    if isinstance(classes, str):
        for sep in ";|":
            classes = classes.replace(sep, ",")
        classes = [c for c in classes.split(",") if c.strip()]
    out = []
    for c in classes:
        name = "+".join(canonical_label(p) for p in str(c).split("+"))
        if name not in allowed:
            kind = "MixedWM38 (mixed=True)" if mixed else "WM-811K"
            raise ConfigError(f"unknown synthetic class {c!r}; the {kind} classes are: {', '.join(allowed)}")
        out.append(name)
    if not out:
        raise ConfigError("no synthetic classes given")
    return tuple(out)


def _pair_up(g, fail: np.ndarray, share: float, axis: int, rng: np.random.Generator) -> np.ndarray:
    """Make a share of background fails two dies long.

    Real normal wafers show adjacent fail pairs (multi-site probing), P(fail | neighbour
    fails) ≈ 0.12 vs 0.07 overall.
    """
    cells = g.on_index[fail]
    cells = cells[rng.random(len(cells)) < share]
    if axis == 0:
        cells = cells[cells % g.cols != g.cols - 1] + 1
    else:
        cells = cells[cells < (g.rows - 1) * g.cols] + g.cols
    die = g.grid_to_die[cells]
    out = fail.copy()
    out[die[die >= 0]] = True
    return out


def _clean_background(g, d: Draws) -> np.ndarray:
    """Return a fab's clean wafer: 0–3 % random fails (a fifth with none at all), no failing rim.

    Sometimes a gentle process gradient.
    """
    base = 0.0 if d.chance(0.2) else d(0.0, 0.03)
    p = np.full(g.n_dies, base)
    if d.chance(0.5):
        p = base * np.clip(1.0 + d(0.0, 0.7) * smooth_field(g, d, 3), 0.15, 3.0)
    if d.chance(0.3):
        p += d(0.0, 0.03) * (g.ring == 0)
    return p


def _fab_frame(m: np.ndarray, mask: np.ndarray, d: Draws, rng: np.random.Generator, pattern: bool):
    """Edge exclusion, a (possibly uneven) margin of no-die cells and a clipped side, each with some chance.

    A change that would take away more than a third of the pattern's dies is skipped.
    """
    def keeps_pattern(new_mask) -> bool:
        return not pattern or np.count_nonzero(new_mask) >= max(MIN_PATTERN_DIES, 2 * np.count_nonzero(mask) // 3)

    if d.chance(0.25):  # edge exclusion: the outer 1–3 rings are not tested (no die)
        from scipy import ndimage

        k = 1 + d.index(3)
        inner = ndimage.binary_erosion(np.pad(m > 0, 1), structure=np.ones((3, 3), bool), iterations=k)[1:-1, 1:-1]
        if inner.any() and keeps_pattern(mask & inner):
            m, mask = np.where(inner, m, 0).astype(np.uint8), mask & inner
    if d.chance(0.15):  # a clipped grid: 3–12 % of the rows or columns cut off one side
        axis, side = d.index(2), d.index(2)
        n = m.shape[axis]
        cut = max(1, int(n * d(0.03, 0.12)))
        keep = slice(cut, n) if side == 0 else slice(0, n - cut)
        sl = (keep, slice(None)) if axis == 0 else (slice(None), keep)
        if keeps_pattern(mask[sl]) and (m[sl] > 0).any():
            m, mask = m[sl], mask[sl]
    if d.chance(0.3):  # a margin of no-die cells, uneven on the four sides (an off-centre grid)
        top = max(m.shape) // 10 + 2
        pads = ((d.index(top), d.index(top)), (d.index(top), d.index(top)))
        m, mask = np.pad(m, pads), np.pad(mask, pads)
    return m, mask


def _draw_wafer(rng: np.random.Generator, patterns: tuple[str, ...], size, mask_mode: str,
                profile: str = "wm811k"):
    d = Draws(rng)
    fab = profile == "fab" and d.chance(0.5)
    if fab and size is None:
        rows, cols, edge, flat, flat_depth = fab_catalogue()[d.index(N_FAB_PRODUCTS)]
    else:
        rows, cols, edge, flat, flat_depth = _grid_for(d, size)
    g = geometry(rows, cols, edge, flat, flat_depth)
    p_bg = _clean_background(g, d) if fab and d.chance(0.7) else background(g, d)
    noisier = max((NOISIER_BACKGROUND.get(name, 1.0) for name in patterns), default=1.0)
    if noisier > 1.0:
        # Wafers with a local defect come from less healthy lots: away from their pattern, real
        # Loc / Edge-Loc wafers fail 1.3-1.6x more often than normal ones (r = 0.2-0.8).
        p_bg = np.where(g.ring >= 1, p_bg * d(1.0, 2.0 * noisier - 1.0), p_bg)
    fail = rng.random(g.n_dies) < p_bg
    if d.chance(0.35):
        fail = _pair_up(g, fail, d(0.03, 0.2), d.index(2), rng)
    m = g.template.copy()
    mask = np.zeros(rows * cols, dtype=bool)
    if patterns:
        # Each pattern must leave a visible trace: redraw one that produced almost no failing
        # dies (a tiny blob at the rim of a small wafer), as a labeller would not call it one.
        p_pat = pattern_fail = None
        for name in patterns:
            for _ in range(20):
                p = PATTERNS[name](g, d)
                hit = rng.random(g.n_dies) < p
                if np.count_nonzero(hit) >= MIN_PATTERN_DIES:
                    break
            p_pat = p if p_pat is None else np.maximum(p_pat, p)
            pattern_fail = hit if pattern_fail is None else pattern_fail | hit
        fail |= pattern_fail
        mask[g.on_index[pattern_fail if mask_mode == "fail" else p_pat >= 0.2]] = True
    m[g.on_index[fail]] = 2
    m, mask = m.reshape(rows, cols), mask.reshape(rows, cols)
    if fab:
        m, mask = _fab_frame(m, mask, d, rng, bool(patterns))
    return m, mask, fab


def generate(n: int = 1000, seed: int = 0, mixed: bool = False, size=None, classes=None, profile: str = "wm811k",
             **kw) -> WaferDataset:
    """Generate ``n`` synthetic wafer maps with masks and multi-labels.

    Args:
        n: number of maps. Classes cycle through ``classes`` (balanced).
        seed: any non-negative int; the same arguments give byte-identical output everywhere.
        mixed: False → the 9 WM-811K classes; True → the 38 MixedWM38 classes.
        size: None → die grids drawn from a catalogue of realistic products (20–86 dies across);
            an int S → S×S grids (52 matches MixedWM38); (rows, cols) or "RxC" → that grid.
        classes: subset (or repetition, to weight) of the class names to cycle through.
        mask: "fail" (default) or "region" — see the module docstring.
        profile: "wm811k" (default) or "fab" (half the wafers fab-like: 20–300 dies across, clean
            low-yield-loss wafers, edge exclusion, margins, clipped grids) — see the module docstring.
    """
    mask_mode = kw.pop("mask", "fail")
    if kw:
        raise ConfigError(f"unknown synthetic option(s) {', '.join(sorted(kw))}; "
                          "use n, seed, mixed, size, classes, mask")
    if profile not in PROFILES:
        raise ConfigError(f"synthetic profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if mask_mode not in ("fail", "region"):
        raise ConfigError(f"synthetic mask must be 'fail' or 'region', got {mask_mode!r}")
    try:
        n, seed = int(n), int(seed)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"synthetic n and seed must be integers ({e})") from None
    if n < 0 or seed < 0:
        raise ConfigError(f"synthetic n and seed must be non-negative, got n={n}, seed={seed}")
    mixed = bool(int(mixed)) if isinstance(mixed, (str, int, np.integer)) else bool(mixed)
    grid = _parse_size(size)
    names = _parse_classes(classes, mixed)
    parts = {name: tuple(p for p in name.split("+") if p != NORMAL) for name in set(names)}
    stream = [1] if mixed else []

    maps, masks, labels, sources = [], [], [], []
    multilabels = np.zeros((n, len(BASE_PATTERNS)), dtype=np.uint8)
    col = {p: j for j, p in enumerate(BASE_PATTERNS)}
    for i in range(n):
        name = names[i % len(names)]
        m, k, fab = _draw_wafer(np.random.default_rng([seed, i, *stream]), parts[name], grid, mask_mode, profile)
        sources.append(FAB_SOURCE if fab else "synthetic")
        maps.append(m)
        masks.append(k)
        labels.append(name)
        for p in parts[name]:
            multilabels[i, col[p]] = 1
    meta = {
        "id": [f"syn-{seed}-{i}" for i in range(n)],
        "lot": [f"syn-{seed}"] * n,
        "wafer_index": np.arange(n, dtype=np.float64),
        "die_size": np.full(n, np.nan),
        "split": [""] * n,
        "source": sources,
    }
    ds = WaferDataset.from_maps(maps, labels, multilabels=multilabels, masks=masks, meta=meta,
                                source="synthetic", name="synthetic-mixed" if mixed else "synthetic",
                                validate=False)
    ds.attrs.update(generator="waferscope.data.synthetic", version=GENERATOR_VERSION, seed=seed,
                    mixed=mixed, size=grid, mask=mask_mode, profile=profile)
    return ds
