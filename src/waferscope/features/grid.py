"""The ``grid`` feature set: wafer features computed for a whole batch at once on one fixed grid.

Why a second feature set. The ``extended`` features (:mod:`.handcrafted`, :mod:`.pattern_stats`,
:mod:`.shape`) are computed map by map on each map's own die grid: ~1.3 ms of mostly per-call
overhead per map (a Radon transform at max(H, W) angles, a dozen ``scipy.ndimage`` calls), so
``gbm`` ran at ~700 wafers/s on 2 cores (since compiled: :mod:`.fast`); and because their regions, windows and lengths are counted
in dies, the same wafer with every die split in four, or with a margin of no-die cells, gets other
numbers (``evaluate robustness``: macro-F1 0.74 with dies split 2×2).

Here every map is first brought to the classifier input the CNNs use
(:func:`waferscope.data.preprocess.prepare_maps`: cropped to its dies, each of the S×S cells given
the no-die / pass / fail *fractions* of the dies it covers, turned into its canonical view among the
8 rotations/flips). On that one grid every feature is a batch operation — sums over fixed regions
are one matrix product, the Radon transform one compiled pass over the failing cells, connected clusters one
``scipy.ndimage.label`` call over the whole (N, S, S) stack with in-plane connectivity, per-cluster
statistics ``np.bincount`` — so the cost per map is a few tens of microseconds, and the numbers do not
depend on the die pitch, a margin, or which of the 8 views the file stored.

A cell is a *fail cell* when at least half of it is failing dies and a *die cell* when at least half of
it is dies. Radii are normalised so the grid's inscribed circle (the wafer) is r = 1. Features
(``GRID_FEATURE_NAMES``; the same groups as the ``extended`` set):

- ``density_00``–``12``: fail share in 13 regions (4 edge bands, 3×3 centre), as Wu et al. (2015);
- ``ring_0``–``9``: fail share in 10 rings of radius;
- per annulus (inner r < 0.4, middle, outer ≥ 0.75) over 24 sectors: highest sector fail share, spread,
  share of hot sectors (> max(0.25, 2 × the wafer's rate)), longest circular run of hot sectors;
- Radon (``N_ANGLES`` angles): the mean and the standard deviation over angles of each projection
  offset, averaged into 20 bins each (the Wu et al. row means / standard deviations);
- fail rate, fail centroid offset, mean fail radius minus mean die radius, spread of fail radii;
- neighbours: share of fail cells with ≥ 1 / ≥ 3 failing 8-neighbours, the first minus what
  independent fails would give, mean fail share of a fail cell's neighbours minus the rate, and the
  share of die cells that fail with ≥ 2 failing neighbours (denoised rate);
- local: the highest fail share in a window of 1/8 of the grid, and that minus the rate;
- clusters (8-connected fail cells): √ share of the largest and second, clusters of ≥ 4 / ≥ 10 cells,
  the largest's centroid radius, elongation, length, compactness, smallest and largest radius,
  share at r ≥ 0.8, angle concentration, bounding-box fill, share of all fail cells, width; the
  longest cluster of ≥ 3 cells, its thinness, the number longer than 0.2 of the grid;
- denoised clusters (fail cells with ≥ 2 failing neighbours): √ share of the largest, its mean radius,
  their number per 100 die cells, the largest's share of them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

GRID_SIZE = 64  # 0.906 vs 0.895 at 48 on lot fold 0 (screen); the CNNs keep 48
N_ANGLES = 32
N_RADON = 20
N_RINGS, N_SECTORS = 10, 24
ANNULUS_EDGES = (0.0, 0.4, 0.75)
LONG_CLUSTER = 0.2
CHUNK = 2048  # maps prepared and computed at once: bounded temporaries (~60 MB at 64 × 64)

_HALF = 128  # ≥ half of a cell (fractions are stored ×255)

GRID_FEATURE_NAMES = tuple(
    [f"density_{i:02d}" for i in range(13)]
    + [f"ring_{i}" for i in range(N_RINGS)]
    + [f"{a}_{s}" for a in ("inner", "middle", "outer") for s in ("sector_max", "sector_std", "hot_share", "hot_run")]
    + [f"radon_mean_{i:02d}" for i in range(N_RADON)] + [f"radon_std_{i:02d}" for i in range(N_RADON)]
    + ["fail_rate", "fail_centroid_offset", "fail_radius_excess", "fail_radius_spread"]
    + ["fail_with_neighbour", "fail_with_3_neighbours", "neighbour_excess", "neighbour_rate_excess",
       "denoised_rate", "local_max", "local_excess"]
    + ["largest_size", "second_size", "clusters_4", "clusters_10", "largest_radius", "largest_elongation",
       "largest_length", "largest_compactness", "largest_r_min", "largest_r_max", "largest_edge_share",
       "largest_angle_concentration", "largest_box_fill", "largest_fail_share", "largest_width",
       "longest_length", "longest_thinness", "long_clusters"]
    + ["denoised_largest_size", "denoised_largest_radius", "denoised_clusters", "denoised_largest_share"]
)
N_GRID_FEATURES = len(GRID_FEATURE_NAMES)


@lru_cache(maxsize=4)
def _layout(size: int) -> dict:
    """Per-cell geometry of a size×size grid, the fixed region matrix and the Radon directions (cached)."""
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    dy, dx = (yy - centre) / (size / 2), (xx - centre) / (size / 2)
    radius, angle = np.hypot(dy, dx).ravel(), np.arctan2(dy, dx).ravel()

    # 13 density regions: bands of a fifth on each side, a 3×3 grid over the centre (as handcrafted.py)
    edges = np.round(np.linspace(0, size, 6)).astype(int)
    regions = []
    for rows, cols in (((0, edges[1]), (0, size)), ((0, size), (edges[4], size)),
                       ((edges[4], size), (0, size)), ((0, size), (0, edges[1]))):
        m = np.zeros((size, size))
        m[rows[0]:rows[1], cols[0]:cols[1]] = 1
        regions.append(m.ravel())
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            m = np.zeros((size, size))
            m[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 1
            regions.append(m.ravel())
    ring = np.clip((radius * N_RINGS).astype(int), 0, N_RINGS - 1)
    sector = ((angle + np.pi) / (2 * np.pi) * N_SECTORS).astype(int) % N_SECTORS
    annulus = np.searchsorted(np.asarray(ANNULUS_EDGES), radius, side="right") - 1
    onehot = lambda idx, k: (idx[:, None] == np.arange(k)[None, :]).astype(np.float64)  # noqa: E731
    # One sparse (regions, cells) 0/1 matrix: each cell is in at most 5 regions, so the region sums of a
    # batch are a sparse × dense product instead of a dense (N, S²) × (S², 95) one. Its inputs are
    # integers (fractions ×255) and every partial sum an integer < 2**24: exact in float32 whatever
    # the order, so a map gets the same sums alone or in any batch.
    from scipy import sparse

    dense = np.concatenate([np.stack(regions, 1), onehot(ring, N_RINGS),
                            onehot(annulus * N_SECTORS + sector, 3 * N_SECTORS)], axis=1)
    region_matrix = sparse.csr_matrix(dense.T.astype(np.float32))

    # Radon: N_ANGLES directions; offsets in n_bins bins, averaged into N_RADON bins of (nearly) equal width
    n_bins = int(np.ceil(size * np.sqrt(2))) + 2
    theta = np.linspace(0.0, np.pi, N_ANGLES, endpoint=False)
    pool_edges = np.round(np.linspace(0, n_bins, N_RADON + 1)).astype(np.int64)
    return {"dy": dy.ravel(), "dx": dx.ravel(), "radius": radius, "angle": angle, "regions": region_matrix,
            "cos": np.cos(theta), "sin": np.sin(theta), "n_bins": n_bins, "pool_edges": pool_edges}


def _circular_run(hot: np.ndarray) -> np.ndarray:
    """(..., K) booleans → the longest circular run of True along the last axis (K when all True)."""
    k = hot.shape[-1]
    doubled = np.concatenate([hot, hot], axis=-1).astype(np.int32)
    run = np.zeros(hot.shape[:-1], np.int32)
    best = np.zeros(hot.shape[:-1], np.int32)
    for j in range(2 * k):
        run = (run + 1) * doubled[..., j]
        np.maximum(best, run, out=best)
    return np.minimum(best, k)


def _clusters(mask: np.ndarray, layout: dict) -> dict:
    """Label the 8-connected clusters of every map of an (N, S, S) boolean stack in one call.

    Returns per-cluster statistics with the map each cluster belongs to, ordered by (map, size
    descending, raster position) — so the first cluster of each map is its largest.
    """
    from scipy import ndimage

    size = mask.shape[1]
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # connected within a map, never across maps
    labels, n = ndimage.label(mask, structure=structure)
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    member = flat[where] - 1
    cell = where % (size * size)
    owner = np.zeros(n, np.int64)
    owner[member] = where // (size * size)
    rows, cols = (cell // size).astype(np.float64), (cell % size).astype(np.float64)
    r, a = layout["radius"][cell], layout["angle"][cell]
    count = np.bincount(member, minlength=n).astype(np.float64)
    mean_r, mean_c = np.bincount(member, rows, n) / count, np.bincount(member, cols, n) / count
    dr, dc = rows - mean_r[member], cols - mean_c[member]
    dof = np.maximum(count - 1, 1)
    va, vc, vb = (np.bincount(member, dr * dr, n) / dof, np.bincount(member, dc * dc, n) / dof,
                  np.bincount(member, dr * dc, n) / dof)
    half, spread = (va + vc) / 2, np.hypot((va - vc) / 2, vb)
    minor, major = np.sqrt(np.clip(half - spread, 0, None)), np.sqrt(np.clip(half + spread, 0, None))
    small = count < 3
    minor[small] = major[small] = 0.0
    # per-cluster minima / maxima: sort the members by cluster once, then reduce each run
    order = np.argsort(member, kind="stable")
    starts = np.searchsorted(member[order], np.arange(n))
    red = lambda f, x: f.reduceat(x[order], starts) if n else np.zeros(0)  # noqa: E731
    r_min, r_max = red(np.minimum, r), red(np.maximum, r)
    box = (red(np.maximum, rows) - red(np.minimum, rows) + 1) * (red(np.maximum, cols) - red(np.minimum, cols) + 1)
    # boundary cells (a 4-neighbour outside the cluster's mask) for the compactness
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    interior = p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:] & mask
    boundary = np.bincount(member, (~interior.ravel()[where]).astype(np.float64), n)
    centre_r = np.hypot(np.bincount(member, layout["dy"][cell], n) / np.maximum(count, 1),
                        np.bincount(member, layout["dx"][cell], n) / np.maximum(count, 1))
    concentration = np.hypot(np.bincount(member, np.sin(a), n), np.bincount(member, np.cos(a), n)) / np.maximum(count, 1)
    rank = np.lexsort((np.arange(n), -count, owner))
    stats = {"owner": owner, "count": count, "minor": minor, "major": major, "r_min": r_min, "r_max": r_max,
             "edge": np.bincount(member, (r >= 0.8).astype(np.float64), n), "box": box, "boundary": boundary,
             "centre_r": centre_r, "concentration": concentration}
    return {k: v[rank] for k, v in stats.items()}


def grid_features_prepared(x: np.ndarray, fail_mask: np.ndarray | None = None,
                           die_mask: np.ndarray | None = None) -> np.ndarray:
    """(N, S, S, 3) uint8 no-die / pass / fail fractions (×255, canonical view) → (N, F) float64.

    ``fail_mask`` / ``die_mask``: the (N, S, S) fail / die cells, when not "at least half" of x's.
    """
    from waferscope.features._kernels import grid_local, grid_radon_summary

    n, size = x.shape[0], x.shape[1]
    if n == 0:
        return np.zeros((0, N_GRID_FEATURES))
    lay = _layout(size)
    # sums over the fixed regions of the fail and die fractions
    sums = lay["regions"] @ np.concatenate([x[..., 2].reshape(n, -1), 255 - x[..., 0].reshape(n, -1)]).T.astype(np.float32)
    sums = sums.T.astype(np.float64) / 255.0
    f_all, d_all = sums[:n], sums[n:]
    n_reg = 13 + N_RINGS + 3 * N_SECTORS
    fail = x[..., 2] >= _HALF if fail_mask is None else fail_mask
    die = x[..., 0] < _HALF if die_mask is None else die_mask
    cols: list[np.ndarray] = []

    # region shares: density, rings, sectors (fail fraction over die fraction in each region)
    f_reg, d_reg = f_all[:, :n_reg], d_all[:, :n_reg]
    share = np.divide(f_reg, d_reg, out=np.zeros_like(f_reg), where=d_reg > 1e-9)
    cols.append(share[:, :13 + N_RINGS])
    f_total, d_total = f_all[:, 13:13 + N_RINGS].sum(1), np.maximum(d_all[:, 13:13 + N_RINGS].sum(1), 1e-9)
    rate = f_total / d_total
    sectors = np.ascontiguousarray(share[:, 13 + N_RINGS:]).reshape(n, 3, N_SECTORS)  # (row-wise sums: batch-independent)
    present = d_reg[:, 13 + N_RINGS:].reshape(n, 3, N_SECTORS) > 1e-9
    any_present = present.any(2)
    hot = (sectors > np.maximum(0.25, 2 * rate)[:, None, None]) & present
    cnt = np.maximum(present.sum(2), 1)
    mean = (sectors * present).sum(2) / cnt
    std = np.sqrt(np.clip((((sectors - mean[..., None]) ** 2) * present).sum(2) / cnt, 0, None))
    sector_stats = np.stack([sectors.max(2), std, hot.mean(2), _circular_run(hot) / N_SECTORS], axis=2)
    cols.append((sector_stats * any_present[..., None]).reshape(n, 12))

    # Radon: compiled, from the failing cells alone
    cols.append(grid_radon_summary(np.ascontiguousarray(x[..., 2]), lay["cos"], lay["sin"], lay["pool_edges"],
                                   lay["n_bins"]))

    # fail centroid and radial spread (fraction-weighted)
    w = np.maximum(f_total, 1e-9)
    local_stats, denoised = grid_local(x[..., 2], x[..., 0], np.ascontiguousarray(fail), np.ascontiguousarray(die),
                                       max(3, round(size / 8)), lay["dy"].reshape(size, size),
                                       lay["dx"].reshape(size, size), lay["radius"].reshape(size, size))
    offset = np.hypot(local_stats[:, 5], local_stats[:, 6]) / w
    r_fail = local_stats[:, 7] / w
    r_die = local_stats[:, 9] / d_total
    spread = np.sqrt(np.clip(local_stats[:, 8] / w - r_fail ** 2, 0, None))
    has = f_total > 1e-9
    cols.append(np.stack([rate, offset * has, (r_fail - r_die) * has, spread * has], 1))

    # neighbours and the local window (compiled)
    n_fail = fail.reshape(n, -1).sum(1)
    n_die = np.maximum(die.reshape(n, -1).sum(1), 1)
    cell_rate = n_fail / n_die
    safe = np.maximum(n_fail, 1)
    with_one, with_three, nb_rate = local_stats[:, 0] / safe, local_stats[:, 1] / safe, local_stats[:, 2] / safe
    any_fail = n_fail > 0
    local = local_stats[:, 4]
    cols.append(np.stack([with_one * any_fail, with_three * any_fail,
                          (with_one - (1 - (1 - cell_rate) ** 8)) * any_fail, (nb_rate - cell_rate) * any_fail,
                          local_stats[:, 3] / n_die, local, local - rate], 1))

    # clusters of fail cells
    c = _clusters(fail, lay)
    block = np.zeros((n, 18))
    if len(c["count"]):
        maps, first = np.unique(c["owner"], return_index=True)  # the maps with a cluster, and their largest
        cnt_c = c["count"]
        second_idx = first + 1
        has_second = (second_idx < len(cnt_c)) & (c["owner"][np.minimum(second_idx, len(cnt_c) - 1)] == maps)
        big, mn = c["major"][first], c["minor"][first]
        length = 4 * c["major"] / size
        eligible = (cnt_c >= 3)
        eligible[first] = True
        longest = np.full(n, -1.0)
        np.maximum.at(longest, c["owner"][eligible], length[eligible])
        # thinness of each map's longest cluster: the first (by size order) reaching the maximum
        is_longest = eligible & (length >= longest[c["owner"]] - 1e-12)
        pick = np.full(n, -1)
        idx = np.flatnonzero(is_longest)
        pick[c["owner"][idx[::-1]]] = idx[::-1]  # the first in order wins
        thin = np.zeros(n)
        sel = pick >= 0
        thin[sel] = c["minor"][pick[sel]] / (c["major"][pick[sel]] + 0.5)
        block[maps, 0] = np.sqrt(cnt_c[first] / n_die[maps])
        block[maps, 1] = np.where(has_second, np.sqrt(cnt_c[np.minimum(second_idx, len(cnt_c) - 1)] / n_die[maps]), 0)
        block[:, 2] = 100.0 * np.bincount(c["owner"], cnt_c >= 4, n) / n_die
        block[:, 3] = np.bincount(c["owner"], cnt_c >= 10, n)
        block[maps, 4] = c["centre_r"][first]
        block[maps, 5] = np.where(cnt_c[first] > 2, np.log((big + 0.5) / (mn + 0.5)), 0)
        block[maps, 6] = np.where(cnt_c[first] > 2, 4 * big / size, cnt_c[first] / size)
        block[maps, 7] = c["boundary"][first] ** 2 / (4 * np.pi * cnt_c[first])
        block[maps, 8] = c["r_min"][first]
        block[maps, 9] = c["r_max"][first]
        block[maps, 10] = c["edge"][first] / cnt_c[first]
        block[maps, 11] = c["concentration"][first]
        block[maps, 12] = cnt_c[first] / c["box"][first]
        block[maps, 13] = cnt_c[first] / np.maximum(n_fail[maps], 1)
        block[maps, 14] = mn / size
        block[:, 15] = np.maximum(longest, 0)
        block[:, 16] = thin
        block[:, 17] = np.bincount(c["owner"][eligible], length[eligible] > LONG_CLUSTER, n)
    cols.append(block)

    d = _clusters(denoised, lay)
    block = np.zeros((n, 4))
    if len(d["count"]):
        maps, first = np.unique(d["owner"], return_index=True)
        n_denoised = np.maximum(denoised.reshape(n, -1).sum(1), 1)
        block[maps, 0] = np.sqrt(d["count"][first] / n_die[maps])
        block[maps, 1] = d["centre_r"][first]  # its centroid's radius (a cheap stand-in for the mean radius)
        block[:, 2] = 100.0 * np.bincount(d["owner"], minlength=n) / n_die
        block[maps, 3] = d["count"][first] / n_denoised[maps]
    cols.append(block)
    return np.concatenate(cols, axis=1)


def grid_features(maps, size: int = GRID_SIZE) -> np.ndarray:
    """(N, F) ``grid`` features of a list of die-state maps (see the module docstring)."""
    from waferscope.data.preprocess import prepare_maps

    maps = list(maps)
    parts = [grid_features_prepared(prepare_maps(maps[i:i + CHUNK], size, resample="area", orient="canonical"))
             for i in range(0, len(maps), CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, N_GRID_FEATURES))
