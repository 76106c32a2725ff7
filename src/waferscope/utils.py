"""Small helpers shared across waferscope."""

from __future__ import annotations

import contextlib
import os
import re
import functools
import tempfile
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it into place only if the block succeeds.

    A crash mid-write leaves no file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``.

    An existing ``dest`` is moved aside first and removed only once ``tmp`` stands in its place,
    so ``dest`` is never half old, half new.
    """
    import shutil

    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def anomaly_map_names(ids) -> list[str]:
    """Return the ``<name>.npy`` file of each sample's anomaly map (``detect score --maps``).

    The id made file-safe; a name met again gets ``_2``, ``_3``, … in the order of ``ids``.
    """
    seen: dict[str, int] = {}
    names = []
    for sample_id in ids:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample_id)).strip("._") or "sample"
        seen[base] = seen.get(base, 0) + 1
        names.append(f"{base if seen[base] == 1 else f'{base}_{seen[base]}'}.npy")
    return names


def save_npy(path: str | Path, array) -> None:
    """``array`` as float32 ``.npy`` at ``path``, written to a temp name beside it and renamed."""
    import numpy as np

    # Not atomic_path: that creates missing parent folders, and a Dask task still running after its
    # run failed would then re-create the staging folder the driver has just removed.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array, dtype=np.float32))
    os.replace(tmp, path)


def parse_params(pairs) -> dict:
    """``["key=value", ...]`` → model parameters.

    Each value parsed as JSON when it is (``3`` → 3, ``false`` → False, ``[1, 2]`` → a
    list) and kept as a string otherwise.
    """
    import json

    from waferscope.errors import ConfigError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"a parameter setting must be key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def n_workers(n_jobs: int = -1) -> int:
    """Return the number of workers joblib's ``n_jobs`` convention means here (-1 = every core), at least 1.

    Cached: joblib reads the cgroup files to count the cores on every call, a cost a service paid on
    every request batch, three times.
    """
    from joblib import effective_n_jobs

    return max(1, effective_n_jobs(n_jobs))


def shared_pool(n_jobs: int = -1):
    """One long-lived thread pool per worker count (joblib's ``n_jobs`` convention: -1 = every core).

    Shared by the compiled kernels that release the GIL (features, tree walks). Creating threads per
    call cost more than a small batch's work; a service calls these for every request batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = n_workers(n_jobs)
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="waferscope")
        return _POOLS[workers]
