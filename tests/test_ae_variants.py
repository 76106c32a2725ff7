"""Autoencoder variants: the AE and its residual, the three classifiers' fit/save/load, data checks."""

import numpy as np
import pytest
import torch

from waferscope.base import load_run
from waferscope.data.preprocess import encode, resize_maps
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError, DataError
from waferscope.models.classifiers.autoencoder_variants import (AELatentClassifier, ResidualCNNClassifier,
                                                                build_autoencoder, train_autoencoder)

SMALL = dict(input_size=16, epochs=1, batch_size=16, progress=False, val_fraction=0.0, ae_epochs=1, latent_dim=8,
             ae_width=4)


@pytest.fixture(scope="module")
def data():
    return generate(27, seed=0, size=(20, 20))


def test_residual_is_one_minus_probability_of_the_true_state(data):
    x_u8 = resize_maps(data.maps, 16)
    ae = build_autoencoder(3, 16, latent_dim=8, width=4)
    losses = train_autoencoder(ae, x_u8, epochs=2, batch_size=16, progress=False)
    assert len(losses) == 2 and all(np.isfinite(losses))
    x = torch.from_numpy(encode(x_u8, "onehot3"))
    with torch.no_grad():
        r = ae.residual(x)
        p = torch.softmax(ae(x), 1)
    assert r.shape == (27, 1, 16, 16)
    assert float(r.min()) >= 0 and float(r.max()) <= 1 + 1e-6
    true_p = p.gather(1, torch.from_numpy(x_u8.astype(np.int64))[:, None])
    assert torch.allclose(r, 1 - true_p, atol=1e-5)
    assert not any(q.requires_grad for q in ae.parameters())  # frozen once trained


@pytest.mark.parametrize("cls, params", [
    (AELatentClassifier, {}),
    (ResidualCNNClassifier, {"residual_mode": "channel", "width": 4}),
    (ResidualCNNClassifier, {"residual_mode": "augment", "width": 4, "p_augment": 1.0}),
])
def test_fit_save_load_round_trip(tmp_path, data, cls, params):
    model = cls(**SMALL, **params).fit(data)
    proba = model.predict_proba(data)
    assert proba.shape == (27, 9)
    model.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="classifier")
    assert type(again) is cls
    assert np.allclose(again.predict_proba(data), proba, atol=1e-6)
    # the autoencoder comes back too
    x = again.to_tensor(data)
    with torch.no_grad():
        assert torch.allclose(again.ae_(x), model.ae_(x), atol=1e-5)


def test_latent_classifier_keeps_the_encoder_frozen(data):
    model = AELatentClassifier(**SMALL).fit(data)
    enc_before = {k: v.clone() for k, v in model.ae_.encoder.state_dict().items()}
    for k, v in model.network_.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k


def test_channel_mode_needs_normal_maps():
    defects_only = generate(16, seed=1, size=(20, 20), classes=["Center", "Scratch"])
    with pytest.raises(DataError, match="normal"):
        ResidualCNNClassifier(**SMALL).fit(defects_only)
    # unlabelled extra maps may supply them
    extra = generate(9, seed=2, size=(20, 20), classes=["none"])
    assert ResidualCNNClassifier(**SMALL, width=4).fit(defects_only, unlabelled=extra).is_fitted


def test_bad_mode_is_refused(data):
    with pytest.raises(ConfigError, match="residual_mode"):
        ResidualCNNClassifier(**SMALL, residual_mode="both").fit(data)
