"""The handcrafted WM-811K feature set (Wu, Jang & Chen 2015; the widely used Kaggle kernel): 59 numbers.

- **density** (13): the share of failing dies (×100) in 13 regions of the die grid: the 4 edge bands
  (top / right / bottom / left fifth) and a 3×3 grid over the central three fifths;
- **radon** (40): the Radon transform of the fail-die map at ``max(H, W)`` angles in [0°, 180°);
  its row means and row standard deviations, each resampled to 20 points by cubic interpolation
  (÷100, as in the reference);
- **geometry** (6): of the largest 4-connected region of failing dies (``skimage.measure.regionprops``):
  area ÷ (H·W), perimeter ÷ diagonal, major and minor axis lengths ÷ diagonal, eccentricity, solidity.
  A map with no failing die gets zeros.

Differences from the popular kernel, on purpose: every feature works on its own copy of the map
(the kernel zeroes the pass dies of the caller's array in place), the sinogram covers the whole
grid (``circle=False``) so fail dies in the corners of a non-square grid are not cut off, and the
largest region is chosen by area directly.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np

N_DENSITY, N_RADON, N_GEOMETRY = 13, 20, 6
FEATURE_NAMES = (
    [f"density_{i:02d}" for i in range(N_DENSITY)]
    + [f"radon_mean_{i:02d}" for i in range(N_RADON)]
    + [f"radon_std_{i:02d}" for i in range(N_RADON)]
    + ["geom_area", "geom_perimeter", "geom_major_axis", "geom_minor_axis", "geom_eccentricity", "geom_solidity"]
)
N_FEATURES = len(FEATURE_NAMES)  # 59
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)  # 4-connectivity, as regionprops labels


def _band_edges(n: int) -> np.ndarray:
    # Five bands of (nearly) equal size; never empty even for tiny maps.
    return np.round(np.linspace(0, n, 6)).astype(int)


def density_features(wafer: np.ndarray) -> np.ndarray:
    """13 region fail densities (percent of the region's cells that are failing dies)."""
    fail = np.asarray(wafer) == 2
    r, c = _band_edges(fail.shape[0]), _band_edges(fail.shape[1])

    def dens(block: np.ndarray) -> float:
        return 100.0 * block.mean() if block.size else 0.0

    out = [dens(fail[: r[1], :]), dens(fail[:, c[4]:]), dens(fail[r[4]:, :]), dens(fail[:, : c[1]])]
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            out.append(dens(fail[r[i]:r[i + 1], c[j]:c[j + 1]]))
    return np.asarray(out, dtype=np.float64)


def _resample_cubic(values: np.ndarray, n: int = N_RADON) -> np.ndarray:
    from scipy.interpolate import interp1d

    if values.size < 4:  # cubic interpolation needs 4 points; such a map is degenerate anyway
        return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, max(values.size, 1)),
                         values if values.size else np.zeros(1))
    x = np.arange(values.size, dtype=np.float64)
    return interp1d(x, values, kind="cubic")(np.linspace(0, values.size - 1, n))


@lru_cache(maxsize=64)
def _radon_geometry(h: int, w: int) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """Return the padding, padded side and per-angle cos / sin of ``skimage.transform.radon(circle=False)``.

    For an h × w map at max(h, w) angles (scalar np.cos / np.sin, as it calls them).
    """
    diagonal = np.sqrt(2) * max(h, w)
    pad = [int(np.ceil(diagonal - s)) for s in (h, w)]
    pad_before = [(s + p) // 2 - s // 2 for s, p in zip((h, w), pad)]
    size = h + pad[0]
    angles = np.deg2rad(np.linspace(0.0, 180.0, max(h, w), endpoint=False))
    cos_a = np.array([np.cos(a) for a in angles])
    sin_a = np.array([np.sin(a) for a in angles])
    return pad_before[0], pad_before[1], size, cos_a, sin_a


def radon_sinogram(fail: np.ndarray) -> np.ndarray:
    """Return the sinogram of a boolean fail map, from the failing dies alone.

    As ``skimage.transform.radon(fail, theta=max(H, W) angles in [0°, 180°), circle=False)``
    computes it (:func:`~waferscope.features._kernels.radon_splat`).
    """
    from waferscope.features._kernels import radon_splat

    pad_r, pad_c, size, cos_a, sin_a = _radon_geometry(*fail.shape)
    rows, cols = np.nonzero(fail)
    return radon_splat(rows.astype(np.int64), cols.astype(np.int64), pad_r, pad_c, size, cos_a, sin_a,
                       float(size // 2))


def _radon_summary(sinogram: np.ndarray) -> np.ndarray:
    return np.concatenate([_resample_cubic(sinogram.mean(1)), _resample_cubic(sinogram.std(1))]) / 100.0


def radon_features(wafer: np.ndarray) -> np.ndarray:
    """Return 20 resampled row means then 20 resampled row standard deviations of the fail-die sinogram.

    The :func:`radon_features_reference` numbers, up to float rounding, at a fraction of the cost.
    """
    return _radon_summary(radon_sinogram(np.asarray(wafer) == 2))


def radon_features_reference(wafer: np.ndarray) -> np.ndarray:
    """:func:`radon_features` with scikit-image's Radon transform and scipy's cubic interpolation.

    The definition, kept as the reference the tests hold the fast path to.
    """
    from skimage.transform import radon

    fail = (np.asarray(wafer) == 2).astype(np.float64)  # a new array: the caller's map is untouched
    theta = np.linspace(0.0, 180.0, max(fail.shape), endpoint=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sinogram = radon(fail, theta=theta, circle=False)
    return np.concatenate([_resample_cubic(sinogram.mean(1)), _resample_cubic(sinogram.std(1))]) / 100.0


def geometry_features(wafer: np.ndarray) -> np.ndarray:
    """Normalised shape of the largest 4-connected failing region (zeros when nothing fails).

    The :func:`geometry_features_reference` numbers, bit for bit (the trees split on exact
    training values, and the perimeter and axis lengths take few distinct values, so one ulp moves
    a map to the other side of a split). The perimeter codes and the convex area come from one
    compiled pass (:func:`~waferscope.features._kernels.region_counts`); the moments go through
    the same scikit-image functions, in the same order, as ``regionprops``.
    """
    from scipy import ndimage
    from skimage.measure import inertia_tensor, inertia_tensor_eigvals, moments, moments_central

    from waferscope.features._kernels import _PERIMETER_WEIGHTS, region_counts

    fail = np.asarray(wafer) == 2
    if not fail.any():
        return np.zeros(N_GEOMETRY)
    labels, n = ndimage.label(fail, structure=_FOUR)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    index = int(sizes.argmax())  # the first largest, as max() over regionprops picks it
    box = ndimage.find_objects(labels, max_label=index + 1)[index]
    region = labels[box] == index + 1
    hist, convex = region_counts(region)
    image = region.astype(np.uint8)
    m = moments(image, 3)
    mu = moments_central(image, np.asarray([m[1, 0] / m[0, 0], m[0, 1] / m[0, 0]]), order=3)
    l1, l2 = inertia_tensor_eigvals(region, T=inertia_tensor(region, mu))
    area = int(sizes[index])
    h, w = fail.shape
    diag = float(np.hypot(h, w))
    eccentricity = 0 if l1 == 0 else math.sqrt(1 - l2 / l1)
    return np.array([area / (h * w), (hist @ _PERIMETER_WEIGHTS) / diag, 4 * math.sqrt(l1) / diag,
                     4 * math.sqrt(l2) / diag, eccentricity, area / float(convex)], dtype=np.float64)


def geometry_features_reference(wafer: np.ndarray) -> np.ndarray:
    """Return the definition of :func:`geometry_features` (``skimage.measure.regionprops``), the tests' reference."""
    from skimage.measure import label, regionprops

    fail = np.asarray(wafer) == 2
    if not fail.any():
        return np.zeros(N_GEOMETRY)
    labels = label(fail, connectivity=1)
    largest = max(regionprops(labels), key=lambda p: p.area)
    h, w = fail.shape
    diag = float(np.hypot(h, w))
    return np.array([largest.area / (h * w), largest.perimeter / diag, largest.axis_major_length / diag,
                     largest.axis_minor_length / diag, largest.eccentricity, largest.solidity], dtype=np.float64)


def wafer_features(wafer: np.ndarray) -> np.ndarray:
    """All 59 features of one map (see :data:`FEATURE_NAMES`)."""
    m = np.array(wafer, dtype=np.uint8, copy=True)
    return np.concatenate([density_features(m), radon_features(m), geometry_features(m)])


def pattern_shape_features(wafer: np.ndarray, local_rate: np.ndarray | None = None) -> np.ndarray:
    """Return the 61 ``pattern`` features.

    The 15 pattern statistics and the 46 shape features (no Radon transform, so about 4× cheaper than
    ``extended``). ``local_rate``: the map's local fail rate when the caller has it already (see
    :func:`~waferscope.features.pattern_stats.pattern_features`). Imported here, not at the top, so
    that loading this module (every CLI start) does not pull in scipy.ndimage.
    """
    from waferscope.features.pattern_stats import pattern_features
    from waferscope.features.shape import shape_features

    return np.concatenate([pattern_features(wafer, local_rate), shape_features(wafer)])


def extended_features(wafer: np.ndarray) -> np.ndarray:
    """Return the 120 ``extended`` features: these 59 followed by the 61 ``pattern`` features."""
    return np.concatenate([wafer_features(wafer), pattern_shape_features(wafer)])


def _per_map(one):
    """Return a feature set computed map by map, as a function of a list of maps."""
    def batch(maps: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([one(m) for m in maps])
    return batch


def _grid(maps: Sequence[np.ndarray]) -> np.ndarray:
    from waferscope.features.grid import grid_features  # imported when used: it pulls in scipy.sparse

    return grid_features(maps)


def _extended_fast(maps: Sequence[np.ndarray]) -> np.ndarray:
    from waferscope.features.fast import extended_batch  # imported when used: it compiles numba code

    return extended_batch(maps)


def _pattern_fast(maps: Sequence[np.ndarray]) -> np.ndarray:
    from waferscope.features.fast import pattern_batch

    return pattern_batch(maps)


# name → function of a (non-empty) list of maps returning their (N, F) features. ``extended`` runs
# the compiled implementation (:mod:`.fast`, ~0.1 ms a map), which :func:`extended_features` — the
# readable definition — matches up to rounding (tests/test_features_fast.py).
FEATURE_SETS = {"wm811k": _per_map(wafer_features), "extended": _extended_fast,
                "pattern": _pattern_fast, "grid": _grid}
# Sets computed a whole batch at a time cost ~0.2 ms a map: worker chunks at least this large pay off.
MIN_CHUNK = {"grid": 1024}
# Sets whose work runs in compiled code that releases the GIL: threads, not worker processes (no
# process start-up, no copy of the maps, one cache of per-shape tables).
THREADED = {"extended", "pattern"}


def feature_names(feature_set: str = "wm811k") -> tuple[str, ...]:
    """Names of the columns :func:`extract_features` returns for ``feature_set`` (see :data:`FEATURE_SETS`)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; expected one of {sorted(FEATURE_SETS)}")
    if feature_set == "wm811k":
        return tuple(FEATURE_NAMES)
    if feature_set == "grid":
        from waferscope.features.grid import GRID_FEATURE_NAMES

        return GRID_FEATURE_NAMES
    from waferscope.features import pattern_stats, shape

    pattern = tuple(f"stats_{n}" for n in pattern_stats.FEATURE_NAMES) + shape.FEATURE_NAMES
    return pattern if feature_set == "pattern" else tuple(FEATURE_NAMES) + pattern


def _chunk(maps: Sequence[np.ndarray], feature_set: str = "wm811k") -> np.ndarray:
    return FEATURE_SETS[feature_set](maps) if len(maps) else np.zeros((0, len(feature_names(feature_set))))


def extract_features(maps: Sequence[np.ndarray], n_jobs: int = -1, progress: bool = False,
                     chunk_size: int = 256, feature_set: str = "wm811k", orient: str = "none",
                     where: str | None = None) -> np.ndarray:
    """(N, F) float64 features (F = 59 for ``"wm811k"``, 120 for ``"extended"``, 61 for ``"pattern"``).

    Chunks of maps go to ``n_jobs`` worker processes (joblib) for large sets.

    Below a few hundred maps the start-up of workers is not worth it and the work stays in this
    process (``extended``, compiled, runs ~0.1 ms a map, in threads).

    ``orient``: ``"none"`` (each map as given) or ``"canonical"`` (each map first cropped to its dies
    and turned into its canonical rotation/flip, :func:`waferscope.data.preprocess.canonical_map`: the
    same numbers for every rotation/flip and margin). The ``grid`` features orient themselves, so it
    does not apply to them. The one place the view is applied, so the features of a model that reads
    the canonical view (``gbm``) and of anything reusing them (the open-set scorer) are the same.

    ``where``: the file or data set the maps came from, named in the error for a map that is not a
    grid of die states 0/1/2.
    """
    from functools import partial

    from waferscope.data.dataset import validate_wafer_maps
    from waferscope.data.preprocess import ORIENT, canonical_map
    from waferscope.errors import ConfigError

    if orient not in ORIENT:
        raise ConfigError(f"orient must be one of {', '.join(ORIENT)}, got {orient!r}")
    maps = list(maps)
    feature_names(feature_set)  # reject an unknown set before any work
    validate_wafer_maps(maps, where)  # die states 0/1/2 only: a clear DataError, not a failure deep in skimage
    if orient == "canonical" and feature_set != "grid":  # after the check: the view casts to uint8
        maps = [canonical_map(m) for m in maps]
    chunk_size = max(chunk_size, MIN_CHUNK.get(feature_set, 0))
    return np.concatenate(map_chunks(partial(_chunk, feature_set=feature_set), maps, n_jobs, progress, chunk_size,
                                     threads=feature_set in THREADED))


IN_PROCESS_STEP = 64  # maps per progress step when the work stays in this process


def map_chunks(fn, maps: list, n_jobs: int = -1, progress: bool = False, chunk_size: int = 256,
               threads: bool = False) -> list:
    """``[fn(chunk), …]`` over consecutive chunks of ``maps``, in order.

    In ``n_jobs`` worker processes (joblib; ``fn`` must be picklable) — or threads, when ``fn``
    releases the GIL — when there are at least two chunks' worth, else one call here. The shared
    runner of the feature extraction and of the feature detectors' per-map work.
    """
    if threads and n_jobs != 1 and len(maps) >= 2 * MIN_THREAD_CHUNK:
        return _in_threads(fn, maps, n_jobs, progress, chunk_size)
    if len(maps) < 2 * chunk_size or n_jobs == 1:
        if not progress or len(maps) <= IN_PROCESS_STEP:
            return [fn(maps)]
        # In this process too, a bar: a few hundred maps are already many seconds of Radon transforms.
        steps = [maps[i:i + IN_PROCESS_STEP] for i in range(0, len(maps), IN_PROCESS_STEP)]
        return [fn(c) for c in _progress(steps, True)]
    from joblib import Parallel, delayed

    chunks = [maps[i:i + chunk_size] for i in range(0, len(maps), chunk_size)]
    return Parallel(n_jobs=n_jobs, verbose=0, prefer="threads" if threads else None)(
        delayed(fn)(c) for c in _progress(chunks, progress))


MIN_THREAD_CHUNK = 16  # maps per thread task at least (a task costs ~0.1 ms to hand over)


def _in_threads(fn, maps: list, n_jobs: int, progress: bool, chunk_size: int) -> list:
    """:func:`map_chunks` in this process's shared thread pool.

    Even a service's 64-map batch is split over the cores (one chunk per worker, at most
    ``chunk_size`` maps each).
    """
    from waferscope.utils import n_workers, shared_pool

    pool = shared_pool(n_jobs)
    size = max(MIN_THREAD_CHUNK, min(chunk_size, -(-len(maps) // n_workers(n_jobs))))
    chunks = [maps[i:i + size] for i in range(0, len(maps), size)]
    futures = [pool.submit(fn, c) for c in chunks]
    return [f.result() for f in _progress(futures, progress)]


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    import sys

    from tqdm.auto import tqdm

    return tqdm(items, desc="features", unit="chunk", file=sys.stderr, leave=False)
