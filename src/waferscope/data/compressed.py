"""Transparent decompression of input files, detected by magic bytes, bounded while it inflates.

Fab archives store STDF, KLARF and the rest as ``.gz``, ``.bz2``, ``.xz`` or a zip holding one file.
:func:`open_binary` returns a readable binary stream of the *inner* bytes for any of those (and the
file itself when it is not compressed); :func:`peek` reads the first bytes of that stream so the
format can be sniffed through the compression. A stream stops with a :class:`DataError` as soon as
it has produced more than ``limits.max_decompressed_bytes`` bytes, so a small bomb cannot take the
process's memory or disk: nothing is inflated ahead of what the reader asks for.

A zip whose members are all ``.npy`` is an ``.npz`` archive, not a compressed file: it is opened as
itself (the npz loaders bound their members separately).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path
from typing import BinaryIO

from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.errors import DataError

MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
)


def compression_of(path: str | Path) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zip"`` (one non-npy member) or None, from magic bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise DataError(f"cannot open ({exc.strerror or exc})", path) from None
    for magic, name in MAGIC:
        if head.startswith(magic):
            if name == "zip" and _zip_member(path) is None:
                return None  # an npz archive (or an empty/odd zip the npz reader will explain)
            return name
    return None


def _zip_member(path: Path) -> str | None:
    """Return the one non-directory member of a zip that is not an npz archive, else None."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read the zip archive ({exc})", path) from None
    if names and all(n.endswith(".npy") for n in names):
        return None
    if len(names) != 1:
        raise DataError(f"a zip archive must hold exactly one file to be read as a wafer-map file "
                        f"(it holds {len(names)}: {', '.join(names[:5])})", path)
    return names[0]


class _Bounded(io.RawIOBase):
    """Counts what the inner stream produces; DataError past ``cap`` bytes."""

    def __init__(self, inner: BinaryIO, cap: int | None, path: Path, closers: tuple = ()):
        self._inner, self._cap, self._path, self._closers, self.produced = inner, cap, path, closers, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            n = self._inner.readinto(b)
        except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
            raise DataError(f"cannot decompress at byte {self.produced:,} of the inflated data ({exc})",
                            self._path) from None
        self.produced += n or 0
        if self._cap is not None and self.produced > self._cap:
            raise DataError(f"decompresses to more than {self._cap:,} bytes (max_decompressed_bytes): "
                            "refused as a possible decompression bomb", self._path)
        return n

    def close(self) -> None:
        if not self.closed:
            for c in (self._inner, *self._closers):
                c.close()
        super().close()


def open_binary(path: str | Path, limits: LoadLimits | None = None) -> BinaryIO:
    """Return a buffered binary stream of the file's content, decompressed if it is compressed.

    Use as a context manager. Reading past ``limits.max_decompressed_bytes`` raises DataError.
    """
    path = Path(path)
    limits = resolve_limits(limits)
    kind = compression_of(path)
    if kind is None:
        return open(path, "rb")
    closers: tuple = ()
    if kind == "gzip":
        inner = gzip.open(path, "rb")
    elif kind == "bzip2":
        inner = bz2.open(path, "rb")
    elif kind == "xz":
        inner = lzma.open(path, "rb")
    else:
        z = zipfile.ZipFile(path)
        inner, closers = z.open(_zip_member(path)), (z,)
    return io.BufferedReader(_Bounded(inner, limits.max_decompressed_bytes, path, closers), 1 << 16)


def peek(path: str | Path, n: int = 4096, limits: LoadLimits | None = None) -> bytes:
    """Return the first ``n`` bytes of the (decompressed) content."""
    with open_binary(path, limits) as f:
        return f.read(n)


def inner_suffix(path: str | Path) -> str:
    """Return the suffix that names the inner format: ``lot.stdf.gz`` → ``.stdf``; ``x.zip`` → its member's."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip", ".bz2", ".xz", ".zip") and len(suffixes) > 1:
        return suffixes[-2]
    if suffixes and suffixes[-1] == ".zip":
        member = _zip_member(path)
        return Path(member).suffix.lower() if member else ".npz"
    return path.suffix.lower()
