"""Preprocessing shared by every model: resize to S×S, channel encodings, augmentation, splits.

Resizing uses nearest-neighbour sampling so the three die states stay exact (no blending of
"pass" and "fail" into a meaningless 1.5). Non-square die grids are stretched to a square: a real
wafer is round, and its die grid is only rectangular because dies are, so stretching restores the
circle.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from waferscope.errors import DataError

ENCODINGS = ("onehot", "single", "onehot3")


@lru_cache(maxsize=4096)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # Sample at pixel centres: output pixel j covers input coordinate (j + 0.5) * n_in / n_out.
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def resize_map(m: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one map (or mask, or H×W×C image) to ``size``."""
    h_out, w_out = (size, size) if isinstance(size, int) else size
    ri = nearest_index(m.shape[0], h_out)
    ci = nearest_index(m.shape[1], w_out)
    return m[ri[:, None], ci[None, :]]


@lru_cache(maxsize=4096)
def _flat_index(h: int, w: int, size: int) -> np.ndarray:
    return (nearest_index(h, size)[:, None] * w + nearest_index(w, size)[None, :]).ravel()


def resize_maps(maps: Sequence[np.ndarray], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize every map to size×size; returns an (N, size, size[, C]) array of the input dtype.

    One cached flat gather index per input shape makes this ~3× faster than 2-D fancy indexing
    (see benchmarks/bench_data.py).
    """
    if not len(maps):
        return np.zeros((0, size, size), dtype=np.uint8)
    first = maps[0]
    if out is None:
        out = np.empty((len(maps), size, size) + first.shape[2:], dtype=first.dtype)
    if first.ndim != 2:  # images with channels: the plain path
        for i, m in enumerate(maps):
            out[i] = resize_map(m, size)
        return out
    flat = out.reshape(len(maps), -1)
    for i, m in enumerate(maps):
        np.take(np.ascontiguousarray(m).ravel(), _flat_index(m.shape[0], m.shape[1], size), out=flat[i])
    return out


def encode(batch: np.ndarray, encoding: str = "onehot") -> np.ndarray:
    """Turn an (N, S, S) uint8 batch of die states into float32 network input (N, C, S, S).

    - ``onehot``: 2 channels, pass and fail (no-die is the zero vector)
    - ``onehot3``: 3 channels, no-die, pass, fail
    - ``single``: 1 channel, state / 2 (0, 0.5, 1)
    """
    if batch.ndim == 2:
        batch = batch[None]
    if encoding == "onehot":
        return np.stack([batch == 1, batch == 2], axis=1).astype(np.float32)
    if encoding == "onehot3":
        return np.stack([batch == 0, batch == 1, batch == 2], axis=1).astype(np.float32)
    if encoding == "single":
        return (batch.astype(np.float32) / 2.0)[:, None]
    raise DataError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def channels(encoding: str) -> int:
    return {"onehot": 2, "onehot3": 3, "single": 1}[encoding]


def encode_images(batch: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) uint8 images → float32 (N, C, H, W) in [0, 1]."""
    x = batch.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x)


def dihedral(batch: np.ndarray, k: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """The k-th of the 8 rotations/flips of a square (k in 0..7)."""
    out = np.rot90(batch, k % 4, axes=axes)
    if k >= 4:
        out = np.flip(out, axis=axes[1])
    return out


def augment_dihedral(batch: np.ndarray, rng: np.random.Generator, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Apply an independent random rotation/flip to each item of a batch (first axis)."""
    ks = rng.integers(0, 8, size=len(batch))
    out = np.empty_like(batch)
    item_axes = tuple(a if a < 0 else a - 1 for a in axes)  # the same axes, within one item
    for k in range(8):
        sel = np.flatnonzero(ks == k)
        if len(sel):
            out[sel] = dihedral(batch[sel], k, axes=tuple(a if a < 0 else a + 1 for a in item_axes))
    return out


def stratified_split(labels: np.ndarray, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test index split; classes with a single sample go to train."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels).astype(str)
    idx = np.arange(len(labels))
    vals, counts = np.unique(labels, return_counts=True)
    rare = np.isin(labels, vals[counts < 2])
    tr, te = train_test_split(idx[~rare], test_size=test_size, random_state=seed, stratify=labels[~rare])
    return np.sort(np.concatenate([tr, idx[rare]])), np.sort(te)


def stratified_kfold(labels: np.ndarray, n_splits: int = 5, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold over labels (yields train, test index arrays)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels).astype(str)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    yield from skf.split(np.zeros(len(labels)), labels)


def grouped_stratified_kfold(labels: np.ndarray, groups: np.ndarray, n_splits: int = 5,
                             seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold that keeps every group (e.g. a wafer lot) on one side of each split,
    so maps of one lot never sit in training and test at once."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels).astype(str)
    n_groups = len(np.unique(np.asarray(groups).astype(str)))
    if n_groups < n_splits:  # sklearn would raise a bare ValueError deep inside the first split
        raise DataError(f"{n_splits}-fold grouped splits need at least {n_splits} groups (lots), and the "
                        f"{len(labels)} maps given come from {n_groups}; give maps from more lots")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    yield from sgkf.split(np.zeros(len(labels)), labels, np.asarray(groups).astype(str))
