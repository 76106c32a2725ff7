"""Multi-lot wafer-map files for the lot browser tests (and the docs' screenshots): synthetic maps
(seeded) grouped into lots of ``per_lot`` wafers, with ids that share a long common prefix (as a
fab's do) and a start time per lot."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def multi_lot(n: int, per_lot: int = 25, seed: int = 0, prefix: str = "fab7_productA_2026w49"):
    """A WaferDataset of ``n`` synthetic wafers in lots of ``per_lot`` (lot k starts k hours after
    the first); ids ``<prefix>_LOT0003_W07``."""
    import pandas as pd

    import waferscope.data as wd

    ds = wd.load(f"synthetic:n={n},seed={seed}")
    k = np.arange(n) // per_lot
    lots = [f"LOT{j:04d}" for j in k]
    ds.meta["lot"] = lots
    ds.meta["wafer_index"] = np.arange(n) % per_lot + 1
    ds.meta["id"] = [f"{prefix}_{lot}_W{w:02d}" for lot, w in zip(lots, ds.meta["wafer_index"])]
    start = pd.Timestamp("2026-12-01T06:00:00")
    ds.meta["start_time"] = [(start + pd.Timedelta(hours=int(j))).isoformat() for j in k]
    return ds


def write_multi_lot(path: Path, n: int, per_lot: int = 25, seed: int = 0, copies: int = 1) -> Path:
    """:func:`multi_lot` as Parquet; ``copies`` > 1 repeats the ``n`` maps that many times under new
    lots and ids (a large file without generating every map)."""
    from waferscope.data.dataset import WaferDataset
    from waferscope.data.io_parquet import write_parquet

    base = multi_lot(n, per_lot, seed)
    parts = []
    for c in range(copies):
        part = base.subset(np.arange(n))
        if c:
            lots_per_copy = -(-n // per_lot)
            part.meta["lot"] = [f"LOT{int(x[3:]) + c * lots_per_copy:04d}" for x in part.meta["lot"]]
            part.meta["id"] = [f"{i.rsplit('_', 2)[0]}_{lot}_{i.rsplit('_', 1)[1]}"
                               for i, lot in zip(part.meta["id"], part.meta["lot"])]
        parts.append(part)
    ds = parts[0] if copies == 1 else WaferDataset.concat(parts, name=base.name)
    write_parquet(ds, path)
    return path
