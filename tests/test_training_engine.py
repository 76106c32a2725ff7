"""The shared training engine (waferscope.models.training, issue 30 item 4): each of its promises
checked on a tiny regression problem, and every torch model's training checked to go through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.models import training
from waferscope.models.training import EMA, EarlyStopping, fit_loop, index_batches, one_cycle, seed_everything


def _problem(seed: int = 0):
    """A linear model, a seeded data set and the engine callbacks that fit it (shuffled mini-batches)."""
    rng = seed_everything(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    x = np.random.default_rng(123).normal(size=(64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32))[:, None]

    def batches(epoch):
        for idx in index_batches(rng.permutation(len(x)), 16):
            yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

    def step(batch):
        xb, yb = batch
        return torch.nn.functional.mse_loss(net(xb), yb), len(xb)

    return net, batches, step, (x, y)


def _weights(net) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in net.parameters()]


def test_seeded_runs_repeat_exactly_and_another_seed_differs():
    def run(seed):
        net, batches, step, _ = _problem(seed)
        res = fit_loop(net, batches, step, epochs=3, optimizer=torch.optim.Adam(net.parameters(), lr=1e-2))
        return res.losses, _weights(net)

    (loss_a, w_a), (loss_b, w_b), (loss_c, _) = run(0), run(0), run(1)
    assert loss_a == loss_b
    assert all(np.array_equal(a, b) for a, b in zip(w_a, w_b))
    assert loss_a != loss_c


def test_training_lowers_the_loss_and_leaves_modules_in_eval_mode():
    net, batches, step, _ = _problem()
    res = fit_loop(net, batches, step, epochs=20, optimizer=torch.optim.Adam(net.parameters(), lr=1e-2))
    assert len(res.history) == 20 and res.best_epoch == 20 and not res.stopped_early
    assert res.losses[-1] < 0.5 * res.losses[0]
    assert not net.training


def test_early_stopping_stops_and_restores_the_best_epoch():
    net, batches, step, _ = _problem()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9, 0.9])  # best at epoch 2, then 3 epochs without a better one
    kept = {}

    def validate():
        score = next(scores)
        kept[score] = _weights(net)  # the weights this score belongs to
        return score

    res = fit_loop(net, batches, step, epochs=7, optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
                   early_stopping=EarlyStopping(validate, patience=3, name="val_r"))
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]
    assert [h["val_r"] for h in res.history] == [0.1, 0.5, 0.3, 0.2, 0.4]
    assert res.best_epoch == 2 and res.stopped_early
    assert all(np.array_equal(a, b) for a, b in zip(_weights(net), kept[0.5]))  # epoch 2's weights, not epoch 5's


def test_ema_weights_trail_the_trained_ones():
    net, batches, step, _ = _problem()
    initial = _weights(net)
    ema = EMA(net, 0.9)
    fit_loop(net, batches, step, epochs=2, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), ema=ema)
    trained, averaged = _weights(net), _weights(ema.module)
    assert ema.updates == 1 + 2 * 4  # one per step (4 batches an epoch) after its start
    for w0, w, a in zip(initial, trained, averaged):
        assert not np.allclose(a, w) and not np.allclose(a, w0)
    # the average's first step, by hand: 0.9 * initial + 0.1 * weights after step 1
    net2, batches2, step2, _ = _problem()
    ema2 = EMA(net2, 0.9)
    after_one = []
    fit_loop(net2, lambda e: iter([next(iter(batches2(e)))]), step2, epochs=1,
             optimizer=torch.optim.SGD(net2.parameters(), lr=0.1), ema=ema2,
             evaluate=lambda: after_one.append(_weights(net2)) or {})
    for w0, w1, a in zip(initial, after_one[0], _weights(ema2.module)):
        np.testing.assert_allclose(a, 0.9 * w0 + 0.1 * w1, rtol=0, atol=1e-6)


def test_an_ema_that_starts_after_the_first_step_never_holds_the_initial_weights():
    net, batches, step, _ = _problem()
    ema = EMA(net, 0.5, from_start=False)
    fit_loop(net, lambda e: iter([next(iter(batches(e)))]), step, epochs=1,
             optimizer=torch.optim.SGD(net.parameters(), lr=0.1), ema=ema)
    assert all(np.array_equal(a, w) for a, w in zip(_weights(ema.module), _weights(net)))  # a copy of step 1


def test_bad_ema_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(2, 2), 1.0)


def test_one_cycle_schedule_is_stepped_and_stops_at_its_end():
    net, batches, step, _ = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    sched = one_cycle(opt, 0.05, total_steps=5)  # fewer steps than the 8 of two epochs: must not raise
    lrs = []
    fit_loop(net, batches, step, epochs=2, optimizer=opt, schedule=sched,
             evaluate=lambda: {"lr": lrs.append(opt.param_groups[0]["lr"]) or 0.0})
    assert sched.last_epoch == 4  # stepped 4 times, then held at its end instead of raising
    assert lrs[0] == lrs[1] < 1e-4  # annealed to its end value (it starts at 0.05 / 25)


def test_progress_shows_a_bar_with_the_loss(capsys):
    net, batches, step, _ = _problem()
    fit_loop(net, batches, step, epochs=2, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), progress=True,
             desc="tiny fit")
    err = capsys.readouterr().err
    assert "tiny fit" in err and "train_loss=" in err
    fit_loop(net, batches, step, epochs=1, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), progress=False)
    assert capsys.readouterr().err == ""


def test_index_batches_keeps_a_short_last_batch_only_when_large_enough():
    order = np.arange(10)
    assert [len(b) for b in index_batches(order, 4)] == [4, 4, 2]
    assert [len(b) for b in index_batches(order, 3, min_size=2)] == [3, 3, 3]
    assert [len(b) for b in index_batches(order, 4, min_size=4)] == [4, 4]
    assert np.array_equal(np.concatenate(list(index_batches(order, 4))), order)


def test_early_stopping_needs_the_network():
    with pytest.raises(ValueError, match="network"):
        fit_loop([], lambda e: [], lambda b: None, epochs=1, optimizer=None,
                 early_stopping=EarlyStopping(lambda: 0.0, 1))


# ---- every torch model trains through the engine ---------------------------------------------------
TORCH_MODELS = {  # name, kind -> tiny params (cf. tests/test_conformance.py's TINY)
    ("cnn", "classifier"): dict(epochs=2, input_size=16, batch_size=16, progress=False, width=4),
    ("multilabel_cnn", "classifier"): dict(epochs=2, input_size=16, batch_size=16, progress=False, width=4),
    ("ae_latent", "classifier"): dict(epochs=1, input_size=16, batch_size=16, progress=False, val_fraction=0.0,
                                      ae_epochs=2, latent_dim=8, ae_width=4, hidden=8),
    ("autoencoder", "detector"): dict(input_size=16, base_channels=4, latent_dim=4, epochs=2, batch_size=8, predict_batch_size=64,
                                      progress=False),
    ("reconpatch", "detector"): dict(backbone="resnet18", pretrained=None, input_size=16, embedding_dim=16,
                                     backbone_kwargs={"width": 0.25, "small_input": True}, coreset_ratio=0.5,
                                     predict_batch_size=16, progress=False, representation_dim=16, projection_dim=8,
                                     epochs=2, steps_per_epoch=2, contrastive_batch_size=32),
}


@pytest.mark.parametrize("name,kind", list(TORCH_MODELS), ids=[n for n, _ in TORCH_MODELS])
def test_torch_models_train_through_the_engine(monkeypatch, name, kind):
    from waferscope.data.synthetic import generate

    calls = []
    real = training.fit_loop

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(result)
        return result

    # every module that trains imported the engine's fit_loop by name: patch it where it is used
    import waferscope.models.classifiers.autoencoder_variants as aev
    import waferscope.models.classifiers.torch_base as tb
    import waferscope.models.detectors.common as dc
    import waferscope.models.detectors.reconpatch.torch_model as rp

    for module, attr in ((tb, "fit_loop"), (aev, "fit_loop"), (dc, "engine_fit_loop"), (rp, "fit_loop")):
        monkeypatch.setattr(module, attr, spy)
    torch.set_num_threads(1)
    data = (generate(36, seed=0, size=(24, 24)) if kind == "classifier"
            else generate(12, seed=1, size=(24, 24), classes=["none"]))
    est = registry.create(name, kind, **TORCH_MODELS[(name, kind)]).fit(data)
    assert calls, f"{name} trained without the engine"
    epochs = est.get_params()["epochs"]
    assert len(calls[-1].history) == epochs
    if name == "ae_latent":  # the autoencoder first, then the classifier: two engine runs
        assert len(calls) == 2 and est.ae_history_ == calls[0].losses


def test_no_torch_training_loop_outside_the_engine():
    """``loss.backward()`` is the engine's: a model that writes its own loop again shows up here."""
    from pathlib import Path

    import waferscope

    package = Path(waferscope.__file__).parent
    allowed = {"models/training.py"}
    found = {str(p.relative_to(package)) for p in package.rglob("*.py") if ".backward(" in p.read_text()}
    assert found - allowed == set(), f"hand-written training loops: {sorted(found - allowed)}"
    assert "models/training.py" in found  # the check sees a loop where there is one
