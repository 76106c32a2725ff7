"""Handcrafted WM-811K features: shape, meaning of the values, no mutation of the input."""

from __future__ import annotations

import numpy as np

from waferscope.features.handcrafted import (FEATURE_NAMES, N_FEATURES, density_features, extract_features,
                                             geometry_features, radon_features, wafer_features)


def _disc(n: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    on = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 <= (n / 2) ** 2
    return on.astype(np.uint8)


def test_feature_vector_has_59_named_values():
    m = _disc()
    m[10:20, 10:20] = 2
    f = wafer_features(m)
    assert f.shape == (N_FEATURES,) == (len(FEATURE_NAMES),) == (59,)
    assert np.isfinite(f).all()


def test_input_map_is_not_modified():
    m = _disc()
    m[5:8, 5:25] = 2
    before = m.copy()
    wafer_features(m)
    extract_features([m, m], n_jobs=1)
    np.testing.assert_array_equal(m, before)


def test_density_locates_the_failing_region():
    m = _disc(40)
    m[16:24, 16:24] = 2  # the central cell of the 3×3 inner grid
    d = density_features(m)
    assert d.shape == (13,)
    assert np.argmax(d) == 8  # 4 edge bands, then the 3×3 grid row by row: centre is index 4 + 4
    assert d[:4].max() == 0


def test_geometry_of_the_largest_region_and_empty_map():
    m = _disc(40)
    m[5:7, 5:35] = 2  # a long thin line: high eccentricity
    m[30, 30] = 2
    area, perimeter, major, minor, ecc, solidity = geometry_features(m)
    assert np.isclose(area, 60 / 1600)
    assert major > 4 * minor and ecc > 0.95 and 0.9 <= solidity <= 1.0
    assert not geometry_features(_disc()).any()


def test_radon_features_change_with_the_pattern():
    ring = _disc(40)
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 19.5, xx - 19.5)
    ring[(r > 16) & (r <= 20)] = 2
    centre = _disc(40)
    centre[r < 6] = 2
    a, b = radon_features(ring), radon_features(centre)
    assert a.shape == b.shape == (40,)
    assert not np.allclose(a, b)


def test_parallel_and_serial_extraction_agree():
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(24):
        m = _disc(int(rng.integers(25, 45)))
        m[(m == 1) & (rng.random(m.shape) < 0.1)] = 2
        maps.append(m)
    serial = extract_features(maps, n_jobs=1)
    parallel = extract_features(maps, n_jobs=2, chunk_size=4)
    np.testing.assert_allclose(serial, parallel)
