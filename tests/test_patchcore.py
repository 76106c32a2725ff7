"""PatchCore: coreset properties, kNN scoring, fit/score shapes, persistence, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, DataError
from waferscope.models.detectors.patchcore.coreset import coreset_size, k_center_greedy
from waferscope.models.detectors.patchcore.torch_model import (PatchEmbedding, channel_pooling_matrix,
                                                               nearest_memory, reweighted_image_score)

SMALL = dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25, "small_input": True}, input_size=32, embedding_dim=32,
             coreset_ratio=0.5, predict_batch_size=16, progress=False)


def wafer(rng: np.random.Generator, size: int = 30, fail_rate: float = 0.03, blob: bool = False) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = (size - 1) / 2
    on = (yy - r) ** 2 + (xx - r) ** 2 <= r ** 2
    m = np.where(on, 1, 0).astype(np.uint8)
    m[on & (rng.random((size, size)) < fail_rate)] = 2
    if blob:  # a dense cluster of failing dies near the centre
        m[on & ((yy - r + 3) ** 2 + (xx - r - 2) ** 2 <= 25)] = 2
    return m


def make_set(n_normal: int, n_anomal: int = 0, seed: int = 0, sizes=(28, 30, 33)) -> WaferDataset:
    rng = np.random.default_rng(seed)
    maps, labels = [], []
    for i in range(n_normal):
        maps.append(wafer(rng, sizes[i % len(sizes)]))
        labels.append("none")
    for i in range(n_anomal):
        maps.append(wafer(rng, sizes[i % len(sizes)], blob=True))
        labels.append("Loc")
    return WaferDataset.from_maps(maps, labels)


# ---- coreset ---------------------------------------------------------------------------------------
def test_greedy_coreset_picks_one_point_per_cluster():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=50, size=(6, 16))
    x = np.concatenate([c + rng.normal(scale=0.1, size=(200, 16)) for c in centres]).astype(np.float32)
    idx = k_center_greedy(x, 6, projection_dim=8, seed=1)
    clusters = set((idx // 200).tolist())
    assert clusters == set(range(6))  # spread out: every cluster is covered by 6 picks
    assert len(set(idx.tolist())) == 6


def test_greedy_coreset_beats_random_on_covering_radius():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((2000, 2)).astype(np.float32))  # low-dim: covering is meaningful
    greedy = k_center_greedy(x, 50, projection_dim=None, seed=0)
    random = torch.from_numpy(rng.choice(2000, 50, replace=False))
    radius = lambda idx: torch.cdist(x, x[idx]).min(1).values.max()  # noqa: E731
    assert radius(greedy) < radius(random)


def test_coreset_is_seeded():
    x = np.random.default_rng(2).normal(size=(500, 20)).astype(np.float32)
    a = k_center_greedy(x, 40, projection_dim=8, seed=3)
    b = k_center_greedy(x, 40, projection_dim=8, seed=3)
    assert torch.equal(a, b)


def test_coreset_size_ratio_and_memory_cap():
    assert coreset_size(10_000, 128, 0.1) == 1000
    # 1 MB of float32 128-dim rows holds 1e6 / 512 = 1953 rows
    assert coreset_size(1_000_000, 128, 0.1, max_memory_mb=1.0) == 1953
    assert coreset_size(5, 128, 0.01) == 1
    with pytest.raises(ConfigError):
        coreset_size(100, 128, 0.0)
    with pytest.raises(ConfigError):
        coreset_size(100, 128, 0.1, max_memory_mb=1e-6)


# ---- tensor parts ----------------------------------------------------------------------------------
def test_channel_pooling_weights_layers_equally():
    m = channel_pooling_matrix([4, 8], 4)
    assert m.shape == (12, 4)
    # every output averages: columns sum to 1; both layers carry half the total weight
    assert torch.allclose(m.sum(0), torch.ones(4))
    assert torch.isclose(m[:4].sum(), m[4:].sum())


def test_patch_embedding_shape():
    emb = PatchEmbedding([8, 16], embedding_dim=12, patch_size=3)
    out = emb([torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)])
    assert out.shape == (2, 12, 8, 8)


def test_nearest_memory_matches_cdist():
    g = torch.Generator().manual_seed(0)
    q, m = torch.randn(300, 10, generator=g), torch.randn(77, 10, generator=g)
    d, i = nearest_memory(q, m, k=3)
    ref = torch.cdist(q, m).topk(3, largest=False)
    assert torch.allclose(d, ref.values, atol=1e-4)
    assert torch.equal(i, ref.indices)


def test_reweighting_damps_a_match_in_a_dense_region():
    # Test patch equally far (1.0) from a memory row in a tight cluster and from an isolated one:
    # eq. 7 trusts the isolated match less... i.e. the dense neighbourhood gives the smaller weight.
    dense = torch.tensor([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01]])
    isolated = torch.tensor([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    memory = torch.cat([dense, isolated])
    emb = torch.tensor([[[0.0, 1.0]], [[10.0, 1.0]]])  # (B=2, P=1, D=2)
    d, i = nearest_memory(emb.reshape(-1, 2), memory)
    s = reweighted_image_score(d.reshape(2, 1), i.reshape(2, 1), emb, memory, num_neighbors=3)
    assert s[0] < s[1]
    assert torch.all(s <= d.reshape(-1))
    s1 = reweighted_image_score(d.reshape(2, 1), i.reshape(2, 1), emb, memory, num_neighbors=1)
    assert torch.allclose(s1, d.reshape(-1))


# ---- the detector ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    train = make_set(24, seed=0)
    return registry.create("patchcore", kind="detector", **{**SMALL, "input_size": 48}).fit(train)


def test_fit_score_shapes_and_maps_at_input_resolution(fitted):
    test = make_set(3, 3, seed=5)
    res = fitted.score(test)
    assert res.scores.shape == (6,)
    assert np.all(np.isfinite(res.scores))
    for m, a in zip(test.maps, res.maps):
        assert a.shape == m.shape and a.dtype == np.float32
        assert np.all(a[m == 0] == 0)  # no anomaly off the wafer
    assert fitted.fit_info_["memory_rows"] == len(fitted.memory_bank_)


def test_obvious_anomaly_scores_higher(fitted):
    test = make_set(8, 8, seed=7)
    s = fitted.score(test).scores
    assert s[8:].min() > s[:8].max()


def test_anomaly_map_peaks_on_the_defect(fitted):
    test = make_set(0, 3, seed=9)
    res = fitted.score(test)
    for m, a in zip(test.maps, res.maps):
        size = m.shape[0]
        r = (size - 1) / 2
        yy, xx = np.mgrid[:size, :size]
        blob = (yy - r + 3) ** 2 + (xx - r - 2) ** 2 <= 25
        # a tiny random-init net on 48-px input localises coarsely: ask only for a clearly higher mean
        assert a[blob].mean() > 1.15 * a[(~blob) & (m > 0)].mean()


def test_save_load_round_trip_identical_scores(fitted, tmp_path):
    test = make_set(3, 3, seed=11)
    before = fitted.score(test)
    fitted.save(tmp_path / "run")
    loaded = load_run(tmp_path / "run", kind="detector")
    after = loaded.score(test)
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)


def test_fit_is_deterministic():
    train = make_set(10, seed=0)
    test = make_set(2, 2, seed=3)
    a = registry.create("patchcore", kind="detector", **SMALL).fit(train).score(test).scores
    b = registry.create("patchcore", kind="detector", **SMALL).fit(train).score(test).scores
    np.testing.assert_array_equal(a, b)


def test_patch_subsampling_and_memory_cap_respected():
    train = make_set(12, seed=0)
    det = registry.create("patchcore", kind="detector", **{**SMALL, "max_train_patches": 60,
                                                              "coreset_ratio": 1.0, "max_memory_mb": 0.002}).fit(train)
    info = det.fit_info_
    assert info["patches_per_wafer"] == 5 and info["n_candidates"] == 60
    assert det.memory_bank_.numel() * 4 <= 0.002 * 1e6
    assert len(det.memory_bank_) == int(0.002 * 1e6 // (32 * 4))


def test_no_normals_is_a_clear_error():
    bad = WaferDataset.from_maps([wafer(np.random.default_rng(0))], ["Loc"])
    with pytest.raises(DataError):
        registry.create("patchcore", kind="detector", **SMALL).fit(bad)
