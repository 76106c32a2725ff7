"""Small synthetic grey images for the image-detector tests (shared by several test files)."""

from __future__ import annotations

import numpy as np

from waferscope.data.dataset import WaferDataset


def textures(n, seed, defect=False, shape=(30, 44)):
    """Grey stripe textures with random brightness; ``defect`` adds a dark blob (and its mask)."""
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(n):
        base = 0.5 + 0.2 * np.sin(xx * 1.3 + rng.uniform(0, 6)) + rng.normal(0, 0.03, shape) + rng.uniform(-0.1, 0.1)
        m = np.zeros(shape, bool)
        if defect:
            cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
            base = np.where(m, 0.05, base)
        imgs.append(np.clip(base * 255, 0, 255).astype(np.uint8))
        masks.append(m)
    return imgs, masks


def image_sets(n_train=12, n_test=6):
    """(train, test): normal training textures; test = normal ones + ones with a dark blob (masks)."""
    tr, _ = textures(n_train, 0)
    good, _ = textures(n_test, 1)
    bad, masks = textures(n_test, 2, defect=True)
    train = WaferDataset.from_maps(tr, ["good"] * n_train, kind="image", name="train")
    test = WaferDataset.from_maps(good + bad, ["good"] * n_test + ["blob"] * n_test,
                                  masks=[None] * n_test + masks, kind="image", name="test")
    return train, test
