"""Fast checks of scripts/realism_check.py's training-side options (tiny data, one epoch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from waferscope.data.synthetic import generate

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "realism_check.py"


@pytest.fixture(scope="module")
def realism():
    spec = importlib.util.spec_from_file_location("realism_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flip_dies_swaps_pass_and_fail_only_on_dies(realism):
    maps = generate(30, seed=3).maps
    noisy = realism.flip_dies(maps, 0.2, np.random.default_rng(0))
    changed = 0
    for before, after in zip(maps, noisy):
        assert np.array_equal(before == 0, after == 0)  # no die is created or removed
        diff = before != after
        assert np.all(before[diff] + after[diff] == 3)  # every change is 1 <-> 2
        changed += diff.sum()
    assert changed > 0


def test_flip_dies_at_rate_zero_changes_nothing(realism):
    maps = generate(5, seed=3).maps
    for before, after in zip(maps, realism.flip_dies(maps, 0.0, np.random.default_rng(0))):
        assert np.array_equal(before, after)


def test_fresh_epochs_use_new_seeds_but_epoch_zero_keeps_the_seed(realism):
    assert realism.epoch_seed(7, 0) == 7
    seeds = {realism.epoch_seed(s, e) for s in range(3) for e in range(6)}
    assert len(seeds) == 18


def test_tiny_run_with_all_training_options_is_deterministic(realism, tmp_path):
    pytest.importorskip("sklearn")
    real = tmp_path / "real.npz"
    _write_real(real)
    args = ["--n", "90", "--epochs", "2", "--width", "4", "--batch", "30", "--size", "32", "--grid", "4",
            "--ema", "0.9", "--die-noise", "0.05", "--real", str(real)]
    first, second = realism.main(args), realism.main(args)
    assert first["args"]["fresh_per_epoch"] is True  # the default since 2026-11-24
    assert first["predicted"] == second["predicted"]
    assert 0.0 <= first["macro_f1"] <= 1.0
    same_maps = realism.main(args + ["--no-fresh-per-epoch", "--no-tta"])
    assert same_maps["args"]["fresh_per_epoch"] is False


def _write_real(path):
    """A small labelled set in the dev-file layout (maps_flat / shapes / labels), made by the
    generator with another seed."""
    ds = generate(36, seed=99)
    np.savez(path, maps_flat=np.concatenate([m.ravel() for m in ds.maps]),
             shapes=np.array([m.shape for m in ds.maps]), labels=np.array(ds.labels, dtype=str))
