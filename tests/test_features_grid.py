"""The ``grid`` feature set: batch features on the canonical area-resampled grid. Invariant to what
carries no information (rotation/flip, die pitch, margins), equal for a map alone or in a batch, and
right on small wafers whose numbers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from waferscope.data.preprocess import dihedral
from waferscope.data.synthetic import generate
from waferscope.features.grid import GRID_FEATURE_NAMES, N_GRID_FEATURES, grid_features
from waferscope.features.handcrafted import extract_features, feature_names

NAMES = {n: i for i, n in enumerate(GRID_FEATURE_NAMES)}


def _disc(n: int, fail=None) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    m = np.where(np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) <= n / 2, 1, 0).astype(np.uint8)
    if fail is not None:
        m[fail & (m == 1)] = 2
    return m


@pytest.fixture(scope="module")
def maps():
    return [np.asarray(m) for m in generate(45, seed=5).maps]


def test_names_shape_and_finite(maps):
    f = grid_features(maps)
    assert f.shape == (len(maps), N_GRID_FEATURES) == (len(maps), len(feature_names("grid")))
    assert len(set(GRID_FEATURE_NAMES)) == N_GRID_FEATURES
    assert np.isfinite(f).all()
    assert f.std(0).max() > 0  # not a constant


def test_every_rotation_and_flip_gives_the_same_numbers(maps):
    f = grid_features(maps)
    for k in range(1, 8):
        np.testing.assert_array_equal(grid_features([dihedral(m, k) for m in maps]), f, err_msg=f"view {k}")


def test_die_pitch_and_margins_change_nothing(maps):
    f = grid_features(maps[:20])
    split = [np.kron(m, np.ones((2, 2), np.uint8)) for m in maps[:20]]  # every die split 2 × 2
    np.testing.assert_allclose(grid_features(split), f, atol=1e-9)
    padded = [np.pad(m, ((3, 1), (0, 5))) for m in maps[:20]]  # an uneven margin of no-die cells
    np.testing.assert_array_equal(grid_features(padded), f)


def test_a_map_alone_or_in_a_batch(maps):
    f = grid_features(maps)
    for i in (0, 7, 44):
        np.testing.assert_array_equal(grid_features([maps[i]])[0], f[i])


def test_clean_wafer_and_fully_failing_wafer():
    clean, full = _disc(64), _disc(64, fail=np.ones((64, 64), bool))
    f = grid_features([clean, full])
    assert np.all(f[0] == 0)  # nothing fails: every share, cluster and projection is zero
    assert f[1, NAMES["fail_rate"]] == pytest.approx(1.0)
    assert f[1, NAMES["largest_size"]] == pytest.approx(1.0)  # one cluster: every die cell
    assert f[1, NAMES["largest_fail_share"]] == pytest.approx(1.0)
    assert f[1, NAMES["clusters_10"]] == 1


def test_an_edge_cluster_against_a_centre_one():
    yy, xx = np.mgrid[:64, :64]
    centre = _disc(64, fail=np.hypot(yy - 31.5, xx - 31.5) < 8)
    edge = _disc(64, fail=np.hypot(yy - 31.5, xx - 60) < 8)
    f = grid_features([centre, edge])
    r = NAMES["largest_radius"]
    assert f[0, r] < 0.1 < 0.7 < f[1, r]
    assert f[0, NAMES["ring_0"]] == pytest.approx(1.0)  # the innermost ring fails entirely
    assert f[1, NAMES["ring_0"]] == 0
    assert f[1, NAMES["largest_edge_share"]] > 0.3 > f[0, NAMES["largest_edge_share"]]
    # one blob each: a single cluster holding every fail cell
    assert f[0, NAMES["largest_fail_share"]] == pytest.approx(1.0)
    assert f[0, NAMES["second_size"]] == 0


def test_a_scratch_is_long_and_thin():
    m = _disc(64)
    for i in range(10, 54):
        m[i, i] = 2
    f = grid_features([m])[0]
    assert f[NAMES["longest_length"]] > 0.5
    assert f[NAMES["longest_thinness"]] < 0.1
    assert f[NAMES["long_clusters"]] == 1


def test_extract_features_grid_runs_in_workers_and_here(maps):
    here = extract_features(maps, n_jobs=1, feature_set="grid")
    np.testing.assert_array_equal(here, grid_features(maps))
    many = maps * 48  # 2,160 maps: two worker chunks of the grid set's minimum 1,024
    np.testing.assert_array_equal(extract_features(many, n_jobs=2, feature_set="grid"), np.concatenate([here] * 48))
