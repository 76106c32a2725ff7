"""ReConPatch: similarity pseudo-labels, relaxed contrastive loss, detector fit/score/persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_patchcore import SMALL, make_set
from waferscope import registry
from waferscope.base import load_run
from waferscope.errors import ConfigError
from waferscope.models.detectors.reconpatch.loss import (contextual_similarity, mixed_similarity,
                                                         pairwise_similarity, relaxed_contrastive_loss)
from waferscope.models.detectors.reconpatch.torch_model import train_modulation

RECON = dict(SMALL, input_size=32, representation_dim=32, projection_dim=16, epochs=2, steps_per_epoch=5,
             contrastive_batch_size=64)


def two_clusters(seed: int = 0, n: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 8, generator=g) * 0.05
    b = torch.randn(n, 8, generator=g) * 0.05 + 3.0
    return torch.cat([a, b])


def test_similarities_are_symmetric_in_unit_range_and_cluster_aware():
    z = two_clusters()
    for w in (pairwise_similarity(z), contextual_similarity(z, k=5), mixed_similarity(z)):
        assert torch.allclose(w, w.t(), atol=1e-6)
        assert w.min() >= 0 and w.max() <= 1 + 1e-6
        within, across = w[:20, :20].mean(), w[:20, 20:].mean()
        assert within > across
    assert torch.all(contextual_similarity(z, k=5)[:20, 20:] == 0)  # no shared neighbours across clusters


def test_relaxed_loss_prefers_embeddings_that_follow_the_similarity():
    z = two_clusters()
    w = mixed_similarity(z)
    good = relaxed_contrastive_loss(z, w)
    shuffled = relaxed_contrastive_loss(z[torch.randperm(len(z), generator=torch.Generator().manual_seed(1))], w)
    assert good < shuffled
    z2 = z.clone().requires_grad_(True)
    relaxed_contrastive_loss(z2, w).backward()
    assert torch.all(torch.isfinite(z2.grad))


def test_training_is_finite_moves_the_weights_and_is_deterministic():
    # The pseudo-labels come from the moving EMA target, so the loss need not fall monotonically.
    x = torch.cat([two_clusters(0, 200), two_clusters(1, 200) + 1.0])
    kw = dict(epochs=4, batch_size=64, steps_per_epoch=20, seed=0, lr=1e-2)
    net_a, hist_a = train_modulation(x, 8, 4, **kw)
    net_b, hist_b = train_modulation(x, 8, 4, **kw)
    assert all(np.isfinite(hist_a))
    net_0, _ = train_modulation(x, 8, 4, **{**kw, "epochs": 0})
    assert not torch.allclose(net_0.representation.weight, net_a.representation.weight)
    assert hist_a == hist_b
    assert torch.equal(net_a.representation.weight, net_b.representation.weight)


@pytest.fixture(scope="module")
def fitted():
    return registry.create("reconpatch", kind="detector", **RECON).fit(make_set(24, seed=0))


def test_fit_score_shapes_and_memory_space(fitted):
    test = make_set(3, 3, seed=5)
    res = fitted.score(test)
    assert res.scores.shape == (6,)
    assert fitted.memory_bank_.shape[1] == RECON["representation_dim"]
    for m, a in zip(test.maps, res.maps):
        assert a.shape == m.shape


def test_obvious_anomaly_scores_higher(fitted):
    s = fitted.score(make_set(8, 8, seed=7)).scores
    assert s[8:].min() > s[:8].max()


def test_save_load_round_trip_identical_scores(fitted, tmp_path):
    test = make_set(3, 3, seed=11)
    before = fitted.score(test)
    fitted.save(tmp_path / "run")
    after = load_run(tmp_path / "run", kind="detector").score(test)
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)


def test_deterministic_fit():
    train, test = make_set(8, seed=0), make_set(2, 2, seed=3)
    kw = dict(RECON, input_size=32)
    a = registry.create("reconpatch", kind="detector", **kw).fit(train).score(test).scores
    b = registry.create("reconpatch", kind="detector", **kw).fit(train).score(test).scores
    np.testing.assert_array_equal(a, b)


def test_bad_alpha_is_a_config_error():
    with pytest.raises(ConfigError):
        registry.create("reconpatch", kind="detector", **{**RECON, "alpha": 1.5}).fit(make_set(4))
