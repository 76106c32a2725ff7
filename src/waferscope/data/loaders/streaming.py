"""Any loadable spec → canonical Parquet, in batches, with a progress bar (``waferscope data import``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.data.load import load, sniff_format


def iter_batches(spec: str | Path, batch_size: int = 8192, progress: bool = True,
                 pass_bins=None, retest: str | None = None, columns=None) -> tuple[int, Iterator[WaferDataset]]:
    """(total rows, batches).

    Pickles and Parquet files stream; other sources load then split (``pass_bins``: the
    fab formats' bin mapping, see :func:`waferscope.data.load`).
    """
    spec_s = str(spec)
    if not spec_s.startswith("synthetic:"):
        path = Path(spec_s).expanduser()
        from waferscope.data.compressed import compression_of

        # a compressed pickle/Parquet is not seekable: load() inflates it into a temporary file
        if path.exists() and path.is_file() and compression_of(path) is None:
            fmt = sniff_format(path)
            if fmt == "pickle":
                from waferscope.data.loaders.lswmd import iter_lswmd

                return iter_lswmd(path, batch_size, importing=True, progress=None if progress else False)
            if fmt == "parquet":
                from waferscope.data.io_parquet import iter_parquet, parquet_count

                return parquet_count(path), iter_parquet(path, batch_size)
    ds = load(spec, pass_bins=pass_bins, retest=retest, columns=columns)

    def split() -> Iterator[WaferDataset]:
        for start in range(0, len(ds), batch_size):
            yield ds.subset(np.arange(start, min(start + batch_size, len(ds))))

    return len(ds), split()


def import_to_parquet(spec: str | Path, out: str | Path, batch_size: int = 8192, progress: bool = True,
                      pass_bins=None, retest: str | None = None, columns=None) -> int:
    """Convert ``spec`` to Parquet at ``out`` (atomic); returns the number of rows written."""
    from tqdm import tqdm

    from waferscope.data.io_parquet import write_parquet

    total, batches = iter_batches(spec, batch_size, progress, pass_bins, retest, columns)
    count = 0
    bar = tqdm(total=total, unit="map", desc=f"import {Path(str(spec)).name}", disable=not progress,
               file=None, dynamic_ncols=True, mininterval=0.5)

    def counted() -> Iterator[WaferDataset]:
        nonlocal count
        for batch in batches:
            count += len(batch)
            yield batch
            bar.update(len(batch))

    try:
        write_parquet(counted(), out, row_group_size=batch_size)
    finally:
        bar.close()
    return count
