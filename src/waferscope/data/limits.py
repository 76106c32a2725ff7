"""Bounds on what one ``load()`` may allocate, checked *before* the allocation.

Untrusted files (service uploads, files from another site) can state sizes that would take the
process to many gigabytes: a 5 kB Parquet holding 80 maps of 5000×5000 dies, a zip bomb, a CSV die
list whose coordinates span 0–4095. Every loader learns the number of maps and each map's extent from
the file's headers or metadata first (Parquet row groups and stored shapes, npz member headers, the
CSV's coordinate span, STDF/KLARF/XML as they stream) and asks a :class:`LoadLimits` before it
allocates; a :class:`DieBudget` adds up the dies of one load so the total is bounded too.

``load(path)`` without ``limits`` uses :data:`DEFAULT_LIMITS`, generous enough for any real wafer
archive that fits in memory; the service and the CLI pass tighter ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from waferscope.errors import DataError

# A larger span than this is a corrupt coordinate, not a wafer: 300 mm at a 0.1 mm die pitch is 3000.
MAX_GRID_SPAN = 4096


@dataclass(frozen=True)
class LoadLimits:
    """What one load may hold. ``None`` = unbounded (only for trusted, local data).

    - ``max_maps``: maps (wafers, images) in the data set.
    - ``max_side``: rows or columns of one map.
    - ``max_dies``: dies (array elements; pixels × channels for images) summed over all maps.
    - ``max_decompressed_bytes``: bytes a compressed input (``.gz``/``.bz2``/``.xz``/zip member,
      npz member) may inflate to; reading stops with an error as soon as it is exceeded.
    """

    max_maps: int | None = None
    max_side: int | None = MAX_GRID_SPAN
    max_dies: int | None = 2_000_000_000
    max_decompressed_bytes: int | None = 8 << 30

    def __post_init__(self):
        """Check that every limit is a positive integer or None."""
        for name in ("max_maps", "max_side", "max_dies", "max_decompressed_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"LoadLimits.{name} must be a positive int or None, got {value!r}")

    def check_count(self, n: int, path: str | Path | None, what: str = "maps") -> None:
        """Refuse a data set that states more than ``max_maps`` maps."""
        if self.max_maps is not None and n > self.max_maps:
            raise DataError(f"{n} {what}, more than the limit of {self.max_maps} (max_maps)", path)

    def check_shape(self, shape, path: str | Path | None, where: str = "map") -> None:
        """Refuse one map whose stated rows or columns exceed ``max_side``."""
        if self.max_side is not None and len(shape) >= 2 and max(int(shape[0]), int(shape[1])) > self.max_side:
            raise DataError(f"{where}: {int(shape[0])}×{int(shape[1])}, more than the limit of "
                            f"{self.max_side} rows or columns (max_side)", path)

    def budget(self, path: str | Path | None) -> "DieBudget":
        """Return a running total of dies for one load."""
        return DieBudget(self, path)


class DieBudget:
    """Adds up the dies a load is about to allocate; raises once ``max_dies`` would be passed.

    Call :meth:`add` with each map's shape *before* allocating it (it also checks ``max_side``).
    """

    def __init__(self, limits: LoadLimits, path: str | Path | None):
        self.limits, self.path, self.total, self.maps = limits, path, 0, 0

    def add(self, shape, where: str = "map") -> None:
        """Charge the budget with a map of ``shape`` (checked against the per-map limits first)."""
        self.limits.check_shape(shape, self.path, where)
        n = 1
        for s in shape:
            n *= int(s)
        self.total += n
        self.maps += 1
        self.limits.check_count(self.maps, self.path)
        if self.limits.max_dies is not None and self.total > self.limits.max_dies:
            raise DataError(f"{where}: the data set holds more than {self.limits.max_dies:,} dies in all "
                            "(max_dies); split it or raise the limit", self.path)


DEFAULT_LIMITS = LoadLimits()
UNLIMITED = LoadLimits(max_maps=None, max_side=None, max_dies=None, max_decompressed_bytes=None)


def read_npy_header(f):
    """``(shape, dtype)`` from the header of an ``.npy`` stream at its start.

    Reading no data (so a loader can check the stated size before numpy allocates it); None for a
    format version other than 1.0/2.0 (numpy's own reader then decides). ValueError/EOFError for a
    malformed header.
    """
    from numpy.lib import format as npformat

    version = npformat.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npformat.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npformat.read_array_header_2_0(f)
    else:
        return None
    return shape, dtype


def resolve_limits(limits: LoadLimits | None) -> LoadLimits:
    """Return ``limits``, or the default limits when None."""
    return DEFAULT_LIMITS if limits is None else limits
