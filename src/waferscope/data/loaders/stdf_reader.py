"""A streaming STDF V4 record reader: headers walked in bounded memory, only wanted records decoded.

An STDF file is a sequence of records, each a 4-byte header (REC_LEN U*2 in the file's byte order,
REC_TYP U*1, REC_SUB U*1) and REC_LEN bytes of fields. A wafer map needs a handful of record types
(FAR, MIR, WCR, WIR, PRR, WRR): production files are mostly PTR/MPR/FTR test results, so
:meth:`StdfStream.records` skips every other record by its header length without decoding it, and
never holds more than one chunk of the file (plus one record, at most 65,535 bytes) in memory. It
reads any binary stream, so a gzip/bzip2/xz/zip file opened with
:func:`waferscope.data.compressed.open_binary` streams the same way.

Errors name the record by its number in the file (FAR = record 1), its type name and
REC_TYP/REC_SUB, and the byte offset of its header in the (decompressed) stream, e.g.
``record 29 (MPR 15/15) at byte 4,812: truncated: REC_LEN says 200 bytes, 37 remain``.

Field decoding (:class:`Fields`) follows STDF V4 § "Data type codes": trailing optional fields may
be omitted by the writer (they read as ``None``, the caller applies the spec's missing value); a
C*n/B*n length byte that points past the end of the record is an error, so no count field can make
the reader take more than the record holds.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple

from waferscope.errors import DataError

CHUNK = 4 << 20  # bytes read per refill; a record (≤ 65,539 bytes with its header) always fits
MAX_RECORD = 4 + 0xFFFF

# STDF V4 (and V4-2007) record types: (REC_TYP, REC_SUB) → name
RECORD_NAMES = {
    (0, 10): "FAR", (0, 20): "ATR", (0, 30): "VUR",
    (1, 10): "MIR", (1, 20): "MRR", (1, 30): "PCR", (1, 40): "HBR", (1, 50): "SBR", (1, 60): "PMR",
    (1, 62): "PGR", (1, 63): "PLR", (1, 70): "RDR", (1, 80): "SDR", (1, 90): "PSR", (1, 91): "NMR",
    (1, 92): "CNR", (1, 93): "SSR", (1, 94): "CDR",
    (2, 10): "WIR", (2, 20): "WRR", (2, 30): "WCR",
    (5, 10): "PIR", (5, 20): "PRR",
    (10, 30): "TSR",
    (15, 10): "PTR", (15, 15): "MPR", (15, 20): "FTR", (15, 30): "STR",
    (20, 10): "BPS", (20, 20): "EPS",
    (50, 10): "GDR", (50, 30): "DTR",
}
CODE = {name: (typ << 8) | sub for (typ, sub), name in RECORD_NAMES.items()}


def record_label(number: int | None, typ: int | None, sub: int | None, offset: int) -> str:
    """``record 29 (MPR 15/15) at byte 4,812``.

    How every error names a record (the type is left out when the header itself is cut
    off, the number when it cannot be counted).
    """
    what = f"record {number:,}" if number is not None else "record"
    if typ is not None:
        what += f" ({RECORD_NAMES.get((typ, sub), 'unknown type')} {typ}/{sub})"
    return f"{what} at byte {offset:,}"


class Record(NamedTuple):
    """One STDF record header: where it is and its type."""

    offset: int   # byte offset of the header in the (decompressed) stream
    typ: int
    sub: int
    body: bytes   # REC_LEN bytes of fields

    @property
    def name(self) -> str:
        """Return the record's name (FAR, PRR, ...)."""
        return RECORD_NAMES.get((self.typ, self.sub), "unknown type")


class StdfStream:
    """Records of one STDF V4 stream.

    The FAR is read on construction (``cpu_type``, ``byte_order``); :meth:`records` then
    walks the rest once.

    ``stream``: any binary file object (``read``); ``path``: named in errors; ``reopen``: a
    callable giving the same content from its start again, used only to number the record an
    error is about (the walk does not count records: that would cost a tenth of its speed).
    """

    def __init__(self, stream: BinaryIO, path: str | Path, reopen: Callable[[], BinaryIO] | None = None,
                 chunk: int = CHUNK):
        self._f, self.path, self._reopen, self._chunk = stream, Path(path), reopen, max(int(chunk), 2 * MAX_RECORD)
        head = self._f.read(6)
        if len(head) < 6 or head[:2] not in (b"\x02\x00", b"\x00\x02") or head[2:4] != b"\x00\x0a":
            raise DataError("not an STDF file: it does not start with a FAR record", self.path)
        cpu_type, version = head[4], head[5]
        if version != 4:
            raise DataError(f"{record_label(1, 0, 10, 0)}: STDF_VER is {version}; only STDF V4 is supported",
                            self.path)
        if cpu_type not in (0, 1, 2):
            raise DataError(f"{record_label(1, 0, 10, 0)}: CPU_TYPE {cpu_type} is not an STDF V4 value "
                            "(0 = VAX/PDP-11, 1 = Sun 68k/SPARC big-endian, 2 = little-endian)", self.path)
        # The FAR's own REC_LEN (2) shows the byte order unambiguously; it must agree with CPU_TYPE.
        little = head[:2] == b"\x02\x00"
        if little != (cpu_type != 1):
            raise DataError(f"{record_label(1, 0, 10, 0)}: CPU_TYPE {cpu_type} says "
                            f"{'big' if cpu_type == 1 else 'little'}-endian, but the REC_LEN of this record "
                            f"is {'little' if little else 'big'}-endian", self.path)
        self.cpu_type = cpu_type
        self.byte_order = "<" if little else ">"
        self.bytes_read = 6

    # ---- errors ----------------------------------------------------------------------------------
    def number_at(self, offset: int) -> int | None:
        """Return the number (FAR = 1) of the record whose header starts at ``offset``.

        The headers are walked again from the start (only on the way to an error). None
        without ``reopen``.
        """
        if self._reopen is None:
            return None
        little = self.byte_order == "<"
        number, pos_file = 0, 0
        with self._reopen() as f:
            buf, base, pos = b"", 0, 0
            while True:
                n = len(buf)
                while pos + 4 <= n and base + pos < offset:
                    length = buf[pos] | buf[pos + 1] << 8 if little else buf[pos] << 8 | buf[pos + 1]
                    if pos + 4 + length > n:
                        break
                    pos += 4 + length
                    number += 1
                pos_file = base + pos
                if pos_file >= offset:
                    return number + 1
                more = f.read(self._chunk)
                if not more:
                    return number + 1
                base, buf, pos = base + pos, buf[pos:] + more, 0

    def label(self, offset: int, typ: int | None, sub: int | None) -> str:
        """Return a record's label for error messages (its number, type and offset)."""
        return record_label(self.number_at(offset), typ, sub, offset)

    def error(self, rec: Record, problem: str) -> DataError:
        """Return a DataError naming ``rec`` by number, type and offset."""
        return DataError(f"{self.label(rec.offset, rec.typ, rec.sub)}: {problem}", self.path)

    # ---- the walk ----------------------------------------------------------------------------------
    def records(self, wanted: set[tuple[int, int]] | frozenset) -> Iterator[tuple[int, int, int, bytes]]:
        """``(offset, REC_TYP, REC_SUB, body)`` of each record whose (REC_TYP, REC_SUB) is in ``wanted``.

        In file order (``Record(*item)`` names the fields); every other record is skipped by
        its REC_LEN. A file that ends inside a record header or body is an error naming that
        record. Can be called once.
        """
        codes = frozenset((t << 8) | s for t, s in wanted)
        skip = 15 if all(t != 15 for t, _ in wanted) else -1  # PTR/MPR/FTR: most of a file, tested first
        little = self.byte_order == "<"
        read, chunk = self._f.read, self._chunk
        buf, pos, base = b"", 0, self.bytes_read
        while True:
            n = len(buf)
            # The hot loops: a few byte lookups per record, written out per byte order (an index
            # offset per REC_LEN byte costs a tenth of the speed). Up to ``safe`` any record fits in
            # the buffer (REC_LEN ≤ 65,535), so the first loop needs no end-of-buffer check; the
            # second one walks the buffer's last 64 kB with it.
            safe, lim = n - MAX_RECORD, n - 3
            if little:
                while pos < safe:
                    if buf[pos + 2] != skip and (buf[pos + 2] << 8 | buf[pos + 3]) in codes:
                        yield base + pos, buf[pos + 2], buf[pos + 3], buf[pos + 4:pos + 4 + (buf[pos] | buf[pos + 1] << 8)]
                    pos += 4 + (buf[pos] | buf[pos + 1] << 8)
                while pos < lim:
                    end = pos + 4 + (buf[pos] | buf[pos + 1] << 8)
                    if end > n:
                        break
                    if buf[pos + 2] != skip and (buf[pos + 2] << 8 | buf[pos + 3]) in codes:
                        yield base + pos, buf[pos + 2], buf[pos + 3], buf[pos + 4:end]
                    pos = end
            else:
                while pos < safe:
                    if buf[pos + 2] != skip and (buf[pos + 2] << 8 | buf[pos + 3]) in codes:
                        yield base + pos, buf[pos + 2], buf[pos + 3], buf[pos + 4:pos + 4 + (buf[pos] << 8 | buf[pos + 1])]
                    pos += 4 + (buf[pos] << 8 | buf[pos + 1])
                while pos < lim:
                    end = pos + 4 + (buf[pos] << 8 | buf[pos + 1])
                    if end > n:
                        break
                    if buf[pos + 2] != skip and (buf[pos + 2] << 8 | buf[pos + 3]) in codes:
                        yield base + pos, buf[pos + 2], buf[pos + 3], buf[pos + 4:end]
                    pos = end
            more = read(chunk)
            if not more:
                self.bytes_read = base + pos
                self._check_end(buf, pos, base, little)
                return
            base += pos
            buf = buf[pos:] + more
            pos = 0

    def _check_end(self, buf: bytes, pos: int, base: int, little: bool) -> None:
        """At the end of the file: accept what is left after ``pos`` (nothing, or NUL padding), or name the cut record."""
        rest = len(buf) - pos
        if rest == 0 or not buf[pos:].strip(b"\x00"):  # some writers pad the file's end with NULs
            return
        if rest < 4:
            raise DataError(f"{self.label(base + pos, None, None)}: truncated record header ({rest} of "
                            "4 bytes at the end of the file)", self.path)
        length = buf[pos] | buf[pos + 1] << 8 if little else buf[pos] << 8 | buf[pos + 1]
        raise DataError(f"{self.label(base + pos, buf[pos + 2], buf[pos + 3])}: truncated: REC_LEN says "
                        f"{length:,} bytes, {rest - 4:,} remain in the file", self.path)


class Fields:
    """Sequential decoder of one record's fields (STDF V4 data types), in the file's byte order.

    Each getter returns ``None`` once the record has ended (a trailing optional field the writer
    left out); :meth:`need` turns that into an error for a required field.
    """

    __slots__ = ("body", "pos", "order", "record", "stream")

    def __init__(self, record: Record, stream: StdfStream):
        self.body, self.pos, self.order, self.record, self.stream = record.body, 0, stream.byte_order, record, stream

    def _num(self, fmt: str, size: int):
        if self.pos + size > len(self.body):
            self.pos = len(self.body)
            return None
        (value,) = struct.unpack_from(self.order + fmt, self.body, self.pos)
        self.pos += size
        return value

    def u1(self):
        """Read a U*1 field (None past the record's end)."""
        return self._num("B", 1)

    def u2(self):
        """Read a U*2 field (None past the record's end)."""
        return self._num("H", 2)

    def u4(self):
        """Read a U*4 field (None past the record's end)."""
        return self._num("I", 4)

    def i2(self):
        """Read an I*2 field (None past the record's end)."""
        return self._num("h", 2)

    def r4(self):
        """Read an R*4 field (None past the record's end or when not IEEE)."""
        value = self._num("f", 4)
        # CPU_TYPE 0 (VAX) stores R*4 in VAX F-floating, not IEEE: not decoded, reported as unknown
        return None if value is None or self.stream.cpu_type == 0 else value

    def c1(self) -> str | None:
        """Read a C*1 field (None past the record's end)."""
        if self.pos >= len(self.body):
            return None
        self.pos += 1
        return chr(self.body[self.pos - 1])

    def cn(self, name: str) -> str | None:
        """C*n: a length byte, then that many characters (Latin-1: testers write any 8-bit text)."""
        if self.pos >= len(self.body):
            return None
        length = self.body[self.pos]
        start = self.pos + 1
        if start + length > len(self.body):
            raise self.stream.error(self.record, f"truncated: its {name} field says {length} characters, "
                                    f"{len(self.body) - start} remain in the record")
        self.pos = start + length
        return self.body[start:self.pos].decode("latin-1").replace("\x00", "").strip()

    def need(self, value, name: str):
        """Return ``value``, or raise a clear error that the record ends before field ``name``."""
        if value is None:
            raise self.stream.error(self.record, f"the record ends before its {name} field")
        return value
