"""waferscope.evaluate.synthetic (was scripts/realism_check.py, calibrate_synthetic.py) on tiny data,
and the bad-option errors of `waferscope evaluate realism | synthetic-vs-real`."""

from __future__ import annotations

import numpy as np
import pytest

from clitools import invoke
from waferscope.data.synthetic import generate
from waferscope.evaluate import synthetic as es


def test_flip_dies_swaps_pass_and_fail_only_on_dies():
    maps = generate(30, seed=3).maps
    noisy = es.flip_dies(maps, 0.2, np.random.default_rng(0))
    changed = 0
    for before, after in zip(maps, noisy):
        assert np.array_equal(before == 0, after == 0)  # no die is created or removed
        diff = before != after
        assert np.all(before[diff] + after[diff] == 3)  # every change is 1 <-> 2
        changed += diff.sum()
    assert changed > 0


def test_flip_dies_at_rate_zero_changes_nothing():
    maps = generate(5, seed=3).maps
    for before, after in zip(maps, es.flip_dies(maps, 0.0, np.random.default_rng(0))):
        assert np.array_equal(before, after)


def test_fresh_epochs_use_new_seeds_but_epoch_zero_keeps_the_seed():
    assert es.epoch_seed(7, 0) == 7
    assert len({es.epoch_seed(s, e) for s in range(3) for e in range(6)}) == 18


def test_tiny_run_with_all_training_options_is_deterministic():
    pytest.importorskip("sklearn")
    real = generate(36, seed=99)  # a small labelled "real" set made by the generator with another seed
    kwargs = dict(n=90, epochs=2, width=4, batch=30, size=32, grid=4, ema=0.9, die_noise=0.05, real=real,
                  progress=False)
    first, second = es.realism_check(**kwargs), es.realism_check(**kwargs)
    assert first["args"]["fresh_per_epoch"] is True  # the default since 2026-11-24
    assert first["predicted"] == second["predicted"]
    assert 0.0 <= first["macro_f1"] <= 1.0
    same_maps = es.realism_check(**kwargs, fresh_per_epoch=False, tta=False)
    assert same_maps["args"]["fresh_per_epoch"] is False
    assert "macro-F1 on 36 real maps" in es.realism_summary(first)


def test_compare_to_real_tables_and_figures(tmp_path):
    real = generate(90, seed=98)
    table = es.compare_to_real(real, n=90, seed=0, img_dir=tmp_path)
    assert "| Center |" in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic_montage.png", "synthetic_sizes.png",
                                                          "synthetic_vs_real.png"]


@pytest.mark.parametrize("args, message", [
    (["realism", "--n", "10", "--batch", "128"], "at least one batch"),
    (["realism", "--ema", "1.5"], "ema must be in [0, 1)"),
    (["realism", "--no-fresh-per-epoch", "--n", "10", "--batch", "128"], "at least one batch"),  # old spelling of --same-maps
    (["realism", "--data", "/nonexistent/x.npz"], ""),
    (["synthetic-vs-real", "--data", "/nonexistent/x.npz"], ""),
])
def test_bad_realism_options_give_one_error_and_write_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "out.json"
    flag = "--json" if args[0] == "realism" else "--out-md"
    code, _, err = invoke(capsys, "evaluate", *args, flag, out)
    assert code == 2 and err.strip().startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_missing_shared_data_says_what_where_and_how_to_pass_ones_own(monkeypatch, tmp_path, capsys):
    """A fresh clone (no ../shared): the library and `evaluate realism` / `synthetic-vs-real` name the
    dev file, where it was looked for, WAFERSCOPE_SHARED_DATA and the way to give one's own maps."""
    from waferscope.data import paths

    missing = tmp_path / "shared" / "wm811k" / "wm811k_dev.npz"
    monkeypatch.setattr(paths, "DEV_MAPS", missing)
    for call in (lambda: es.realism_check(n=90, batch=30, epochs=1), lambda: es.compare_to_real(n=10)):
        with pytest.raises(paths.SharedDataMissing) as info:
            call()
        text = str(info.value)
        assert all(w in text for w in ("wm811k_dev.npz", str(missing), "WAFERSCOPE_SHARED_DATA", "real=", "load()"))
    for args in (["realism", "--n", "90", "--batch", "30"], ["synthetic-vs-real", "--n", "10"]):
        code, _, err = invoke(capsys, "evaluate", *args)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
        assert all(w in err for w in ("wm811k_dev.npz", str(missing), "WAFERSCOPE_SHARED_DATA", "--data SPEC")), err
