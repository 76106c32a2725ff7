"""Shape features of a wafer map's failing dies: 46 numbers aimed at the classic WM-811K confusions.

The handcrafted set (:mod:`.handcrafted`) describes fixed regions and projections, and
:mod:`.pattern_stats` the coarse radial profile and the largest cluster. What still separates the
classes that get confused is finer:

- ``ring10_0`` … ``ring10_9`` — fail rate in ten rings of normalised radius (Center vs Donut vs a
  normal wafer's edge losses);
- per annulus (``inner`` r < 0.4, ``middle`` 0.4–0.75, ``outer`` ≥ 0.75), over 24 angular sectors:
  the highest sector fail rate, their spread, the share of "hot" sectors (rate above
  max(0.25, 2 × the wafer's rate)) and the longest circular run of hot sectors — an Edge-Ring covers
  the outer annulus, an Edge-Loc one arc of it, a Donut the middle annulus;
- neighbourhood clustering: the share of fail dies with ≥ 1 and ≥ 3 failing 8-neighbours, the first
  minus what independent fails at the wafer's rate would give, and the mean fail share among a fail
  die's neighbours minus that rate (Random vs a faint pattern vs none);
- ``denoised_rate``: the share of dies that fail *and* have ≥ 2 failing neighbours;
- the largest 8-connected cluster: smallest and largest normalised radius of its dies, its share of
  dies at r ≥ 0.8, its angular span, how much of its bounding box it fills, how concentrated its
  dies' angles are, its share of all fails, its minor width, and the number of clusters of ≥ 10 dies
  (Loc vs Edge-Loc vs Center);
- the longest cluster (4 σ along its major axis ÷ the wafer diameter, among the 12 largest clusters
  of ≥ 3 dies), how thin it is, and how many clusters are longer than 0.2 diameters (Scratch — a
  faint scratch is rarely the largest cluster on a noisy wafer);
- the largest cluster after denoising (fails with ≥ 2 failing neighbours): its size, mean radius, the
  number of such clusters per 100 dies and its share of the denoised fails;
- the centroid of all fails: its distance from the wafer centre, the mean radius of fails minus that
  of all dies, and the spread of the fails' radii.

Radii are normalised so that the die grid's inscribed ellipse is r = 1. Everything is computed on the
map's own die grid (no resize). The features are nearly rotation-invariant: only the sector
statistics depend, slightly, on where the 24 sectors start. Pure numpy/scipy, about 1 ms per map.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from waferscope.features.pattern_stats import cluster_axes, principal_axes

N_RINGS, N_SECTORS = 10, 24
ANNULI = ("inner", "middle", "outer")
ANNULUS_EDGES = np.array([0.0, 0.4, 0.75])
MAX_CLUSTERS = 12  # clusters examined for the longest one (by size, ≥ 3 dies)
LONG_CLUSTER = 0.2  # a cluster longer than this share of the wafer diameter counts as long
_TIE = 1e-9  # lengths closer than this are equal up to rounding

FEATURE_NAMES = tuple(
    [f"ring10_{i}" for i in range(N_RINGS)]
    + [f"{a}_{s}" for a in ANNULI for s in ("sector_max", "sector_std", "hot_share", "hot_run")]
    + ["fail_with_neighbour", "fail_with_3_neighbours", "neighbour_excess", "neighbour_rate_excess",
       "denoised_rate"]
    + ["largest_r_min", "largest_r_max", "largest_edge_share", "largest_angular_span", "largest_box_fill",
       "largest_angle_concentration", "largest_fail_share", "largest_width", "clusters_10"]
    + ["longest_length", "longest_thinness", "long_clusters"]
    + ["denoised_largest_size", "denoised_largest_radius", "denoised_clusters", "denoised_largest_share"]
    + ["fail_centroid_offset", "fail_radius_excess", "fail_radius_spread"]
)
N_FEATURES = len(FEATURE_NAMES)  # 46
_EIGHT = np.ones((3, 3), dtype=bool)
_KERNEL = np.ones((3, 3), dtype=np.int16)


@lru_cache(maxsize=1024)
def _geometry(h: int, w: int):
    """Per cell of an h×w grid: normalised offsets dy, dx, radius, angle, ring.

    Also the annulus-sector index annulus × N_SECTORS + sector. Cached per shape.
    """
    yy, xx = np.mgrid[:h, :w]
    dy, dx = (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)
    radius, angle = np.hypot(dy, dx), np.arctan2(dy, dx)
    ring = np.clip((radius * N_RINGS).astype(int), 0, N_RINGS - 1)
    sector = ((angle + np.pi) / (2 * np.pi) * N_SECTORS).astype(int) % N_SECTORS
    annulus = np.searchsorted(ANNULUS_EDGES, radius, side="right") - 1
    return dy, dx, radius, angle, ring, annulus * N_SECTORS + sector


def longest_circular_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a circular sequence."""
    if flags.all():
        return len(flags)
    # Twice round the circle, so a run that wraps past the end is counted whole.
    text = "".join("1" if flag else "0" for flag in flags.tolist())
    return max(map(len, (text + text).split("0")))


def _sector_stats(fail, on, annulus_sector, threshold) -> list[float]:
    """Highest sector fail rate, its spread, share of hot sectors and longest hot run, per annulus."""
    fails = np.bincount(annulus_sector[fail], minlength=len(ANNULI) * N_SECTORS).reshape(len(ANNULI), N_SECTORS)
    dies = np.bincount(annulus_sector[on], minlength=len(ANNULI) * N_SECTORS).reshape(len(ANNULI), N_SECTORS)
    out: list[float] = []
    for k in range(len(ANNULI)):
        present = dies[k] > 0
        if not present.any():
            out += [0.0, 0.0, 0.0, 0.0]
            continue
        rate = fails[k] / np.maximum(dies[k], 1)
        hot = (rate > threshold) & present
        out += [float(rate.max()), float(rate[present].std()), float(hot.mean()),
                longest_circular_run(hot) / N_SECTORS]
    return out


def shape_features(wafer: np.ndarray) -> np.ndarray:
    """Return the :data:`FEATURE_NAMES` of one (H, W) die-state map (0 no die, 1 pass, 2 fail)."""
    wafer = np.asarray(wafer)
    h, w = wafer.shape
    dy, dx, radius, angle, ring, annulus_sector = _geometry(h, w)
    on, fail = wafer > 0, wafer == 2
    n_on, n_fail = max(int(on.sum()), 1), int(fail.sum())
    rate = n_fail / n_on
    dies_per_ring = np.maximum(np.bincount(ring[on], minlength=N_RINGS), 1)
    out: list[float] = list(np.bincount(ring[fail], minlength=N_RINGS) / dies_per_ring)

    out += _sector_stats(fail, on, annulus_sector, max(0.25, 2 * rate))

    fail_neighbours = ndimage.convolve(fail.astype(np.int16), _KERNEL, mode="constant") - fail
    die_neighbours = ndimage.convolve(on.astype(np.int16), _KERNEL, mode="constant") - on
    if n_fail:
        with_one = float((fail_neighbours[fail] >= 1).mean())
        out += [with_one, float((fail_neighbours[fail] >= 3).mean()), with_one - (1 - (1 - rate) ** 8),
                float((fail_neighbours[fail] / np.maximum(die_neighbours[fail], 1)).mean()) - rate]
    else:
        out += [0.0, 0.0, 0.0, 0.0]
    denoised = fail & (fail_neighbours >= 2)
    out.append(float(denoised.sum()) / n_on)

    out += _cluster_features(fail, radius, angle, h, w, n_fail)
    out += _denoised_features(denoised, radius, n_on)

    if n_fail:
        r_fail = radius[fail]
        out += [float(np.hypot(dy[fail].mean(), dx[fail].mean())), float(r_fail.mean() - radius[on].mean()),
                float(r_fail.std())]
    else:
        out += [0.0, 0.0, 0.0]
    return np.asarray(out, dtype=np.float64)


def _cluster_features(fail, radius, angle, h: int, w: int, n_fail: int) -> list[float]:
    labels, n = ndimage.label(fail, structure=_EIGHT)
    if not n:
        return [0.0] * 12
    sizes = np.bincount(labels.ravel())[1:]
    minor, major = cluster_axes(labels, n)
    order = np.argsort(-sizes, kind="stable")
    boxes = ndimage.find_objects(labels)
    diameter = max(h, w)
    # the longest among the MAX_CLUSTERS largest clusters of >= 3 dies (the largest always counts)
    examined = order[:MAX_CLUSTERS]
    examined = examined[(sizes[examined] >= 3) | (np.arange(len(examined)) == 0)]
    lengths = 4 * major[examined] / diameter
    # Small clusters often have equal lengths, and which one counts (or whether one sits on the
    # LONG_CLUSTER line) then came down to np.cov's rounding: recompute those few candidates as the
    # features were defined (the first strictly longest wins), the rest from the vectorised axes.
    near_longest = lengths >= lengths.max() - _TIE
    near_line = np.abs(lengths - LONG_CLUSTER) <= _TIE
    longest, thinness, n_long = 0.0, 0.0, int((lengths > LONG_CLUSTER + _TIE).sum())
    for j in np.flatnonzero(near_longest | near_line):
        rows, cols = np.nonzero(labels[boxes[examined[j]]] == examined[j] + 1)
        small, big = principal_axes(rows, cols)
        exact = 4 * big / diameter
        n_long += near_line[j] and exact > LONG_CLUSTER
        if near_longest[j] and exact > longest:
            longest, thinness = exact, small / (big + 0.5)

    index = order[0]
    box = boxes[index]
    rows, cols = np.nonzero(labels[box] == index + 1)
    width = principal_axes(rows, cols)[0]
    r = radius[box][rows, cols]
    a = np.sort(angle[box][rows, cols])
    gaps = np.diff(np.r_[a, a[0] + 2 * np.pi])
    box_area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    largest = [float(r.min()), float(r.max()), float((r >= 0.8).mean()),
               float((2 * np.pi - gaps.max()) / (2 * np.pi)), sizes[index] / box_area,
               float(np.hypot(np.sin(a).mean(), np.cos(a).mean())), sizes[index] / max(n_fail, 1),
               width / diameter, float((sizes >= 10).sum())]
    return largest + [longest, thinness, float(n_long)]


def _denoised_features(denoised, radius, n_on: int) -> list[float]:
    labels, n = ndimage.label(denoised, structure=_EIGHT)
    if not n:
        return [0.0, 0.0, 0.0, 0.0]
    sizes = np.bincount(labels.ravel())[1:]
    index = int(sizes.argmax())
    return [float(np.sqrt(sizes[index] / n_on)), float(radius[labels == index + 1].mean()), 100.0 * n / n_on,
            sizes[index] / max(int(denoised.sum()), 1)]
