"""Shared fixtures (keep small): tiny data sets any test can use."""

from __future__ import annotations


import numpy as np
import pytest

from waferscope.data.dataset import WaferDataset
from waferscope.data.paths import DEV_MAPS

DEV_DATA = DEV_MAPS.parent


def _disc_map(rows: int, cols: int, rng: np.random.Generator, fail_rate: float = 0.1) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :cols]
    on = ((yy - (rows - 1) / 2) / (rows / 2)) ** 2 + ((xx - (cols - 1) / 2) / (cols / 2)) ** 2 <= 1
    m = on.astype(np.uint8)
    m[on & (rng.random((rows, cols)) < fail_rate)] = 2
    return m


@pytest.fixture
def tiny_wafers() -> WaferDataset:
    """12 small round maps of mixed sizes, 3 classes, with masks and multi-labels."""
    rng = np.random.default_rng(0)
    shapes = [(25, 27), (30, 30), (41, 38), (26, 26)] * 3
    maps = [_disc_map(r, c, rng) for r, c in shapes]
    labels = ["Center"] * 4 + ["Loc"] * 4 + ["none"] * 4
    masks = [m == 2 for m in maps]
    multilabels = np.zeros((12, 8), dtype=np.uint8)
    multilabels[:4, 0] = 1
    multilabels[4:8, 4] = 1
    meta = {"lot": [f"lot{i // 3}" for i in range(12)], "wafer_index": np.arange(12, dtype=float),
            "die_size": np.full(12, 900.0), "split": ["train", "test"] * 6}
    return WaferDataset.from_maps(maps, labels, multilabels=multilabels, masks=masks, meta=meta,
                                  source="tiny", name="tiny")
