"""The PNG of a search: one row per query, the query map first, then its neighbours, each titled with its lot.

Distance and (if known) class.
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.render import render_map
from waferscope.errors import DataError
from waferscope.utils import atomic_path


def search_montage(query_maps, query_ids, neighbour_maps, result: dict, path: str | Path,
                   max_rows: int = 20, max_cols: int = 10, query_labels=None) -> Path:
    """Draw each query wafer beside its neighbours' maps to the PNG ``path``.

    ``neighbour_maps[i][j]``: the map of query i's j-th neighbour (None when the index has no map
    for it, e.g. a position -1). At most ``max_rows`` queries and ``max_cols`` neighbours are drawn.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    n_rows = min(len(query_maps), max_rows)
    if n_rows == 0:
        raise DataError("nothing to draw: no queries")
    n_cols = 1 + min(result["ids"].shape[1], max_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols, 1.75 * n_rows + 0.4), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            m = query_maps[r] if c == 0 else neighbour_maps[r][c - 1]
            if m is not None:
                ax.imshow(render_map(m), interpolation="nearest")
            if c == 0:
                known = "" if query_labels is None else str(query_labels[r])
                ax.set_title(f"query {known}".strip() + f"\n{str(query_ids[r])[:28]}", fontsize=7, color="#0b5394")
                for spine in ax.spines.values():
                    spine.set_color("#0b5394")
                    spine.set_linewidth(2)
            elif result["positions"][r, c - 1] >= 0:
                label = result["labels"][r, c - 1]
                ax.set_title(f"{result['lots'][r, c - 1] or '?'}  d={result['distances'][r, c - 1]:.2f}"
                             + (f"\n{label}" if label else ""), fontsize=6.5)
            else:
                ax.axis("off")
    fig.suptitle("query (left) and its nearest archive wafers: lot, distance, class", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close(fig)
    return path
