"""Defect-location atlas: where the failing dies of each pattern concentrate on the wafer.

Every map is resampled to a common S×S grid of normalised wafer coordinates (nearest, so die
states stay exact); per class the atlas holds the share of wafers whose die at that position
fails, minus nothing — the background rate is shown beside it for reading the contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from waferscope.data.classes import CLASSES, FAIL
from waferscope.data.dataset import WaferDataset
from waferscope.data.preprocess import resize_maps
from waferscope.errors import DataError


@dataclass
class Atlas:
    """Where each class's wafers fail: per-class fail shares on a common S×S canvas."""

    classes: list[str]
    fail_share: np.ndarray  # (n_classes, S, S): share of that class's wafers failing at (row, col)
    on_wafer_share: np.ndarray  # (n_classes, S, S): share of wafers with a die there
    counts: np.ndarray  # wafers per class

    def to_frame(self):
        """Return the atlas as a long table (class, row, col, shares)."""
        import pandas as pd

        k, s, _ = self.fail_share.shape
        rr, cc = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
        rows = []
        for i, c in enumerate(self.classes):
            rows.append(pd.DataFrame({
                "class": c, "row": rr.ravel(), "col": cc.ravel(),
                "y": (rr.ravel() + 0.5) / s * 2 - 1, "x": (cc.ravel() + 0.5) / s * 2 - 1,
                "fail_share": self.fail_share[i].ravel().round(6),
                "on_wafer_share": self.on_wafer_share[i].ravel().round(6),
                "wafers": int(self.counts[i]),
            }))
        return pd.concat(rows, ignore_index=True)


def build_atlas(dataset: WaferDataset, size: int = 48) -> Atlas:
    """Build the defect-location atlas of a labelled wafer-map data set at ``size``×``size``."""
    if dataset.kind != "wafer":
        raise DataError("the defect-location atlas needs wafer maps, not images", dataset.name)
    labels = dataset.labels.astype(str)
    present = [c for c in CLASSES if c in set(labels)] + sorted(set(labels) - set(CLASSES) - {""})
    if not present:
        raise DataError("the atlas needs labelled maps; this data set has none", dataset.name)
    grid = resize_maps(dataset.maps, size)
    fail = np.zeros((len(present), size, size))
    on = np.zeros_like(fail)
    counts = np.zeros(len(present), dtype=np.int64)
    for i, c in enumerate(present):
        sel = labels == c
        counts[i] = int(sel.sum())
        fail[i] = (grid[sel] == FAIL).mean(0)
        on[i] = (grid[sel] > 0).mean(0)
    return Atlas(present, fail, on, counts)


def plot_atlas(atlas: Atlas, path: str | Path) -> Path:
    """Draw the atlas (one panel per class) to a PNG at ``path``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waferscope.utils import atomic_path

    k = len(atlas.classes)
    cols = min(k, 5)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, c in enumerate(atlas.classes):
        ax = axes.ravel()[i]
        img = np.ma.masked_where(atlas.on_wafer_share[i] < 0.5, atlas.fail_share[i])
        im = ax.imshow(img, cmap="inferno", vmin=0, vmax=max(0.05, float(atlas.fail_share[i].max())))
        ax.set_title(f"{c} (n={atlas.counts[i]})", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="share failing")
    fig.suptitle("Where failing dies concentrate, per pattern (normalised wafer coordinates)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
