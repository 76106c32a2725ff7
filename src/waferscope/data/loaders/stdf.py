"""STDF V4 probe-test files (Standard Test Data Format), the usual source of wafer bin maps.

Records used (decoded by the ``pystdf`` reader; this module adds the checks it lacks):

- FAR (file attributes): must come first; its CPU_TYPE gives the byte order, STDF_VER must be 4.
- MIR (master information): ``LOT_ID`` → ``lot``. Required before the first wafer.
- WIR / WRR (wafer information / results) bracket one wafer per test head; ``WAFER_ID`` (WIR's,
  else WRR's) → ``wafer_id``; a wafer still open at the end of the file is kept (an aborted run).
- PRR (part results): one die, ``X_COORD``/``Y_COORD``, ``HARD_BIN``, ``PART_FLG``. PIR and all
  other records are skipped.

Pass/fail: with no ``pass_bins`` the tester's own verdict is used, PART_FLG bit 3 (0 = passed,
1 = failed); when the flag is marked invalid (bit 4) HARD_BIN 1 passes. With ``pass_bins`` the
HARD_BIN is mapped. A PRR flagged as a retest (PART_FLG bit 0 or 1) replaces the earlier result for
its die; any other die reported twice on one wafer is an error.

Grid and orientation: :mod:`waferscope.data.loaders.fabcommon` (row 0 = smallest Y_COORD).
Errors name the record by its number in the file (FAR = record 1) and byte offset.
"""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

from waferscope.data.limits import LoadLimits
from waferscope.data.dataset import WaferDataset
from waferscope.data.loaders.fabcommon import FAIL, PASS, BinMapping, dies_to_grid, fab_meta, map_bin
from waferscope.errors import DataError

FAR_TYPE = (0, 10)
MISSING_COORD = -32768  # STDF's "no coordinate" value for X_COORD / Y_COORD
FLAG_RETEST = 0x03      # PART_FLG bits 0/1: this part supersedes an earlier result
FLAG_FAILED = 0x08      # bit 3: the part failed
FLAG_NO_VERDICT = 0x10  # bit 4: the pass/fail bit is not valid


def looks_like_stdf(head: bytes) -> bool:
    """A FAR record first: REC_LEN 2 in either byte order, REC_TYP 0, REC_SUB 10."""
    return len(head) >= 4 and head[:2] in (b"\x02\x00", b"\x00\x02") and head[2:4] == b"\x00\x0a"


def _scan_records(data: bytes, path: Path) -> list[tuple[int, int, int]]:
    """(offset, REC_TYP, REC_SUB) of every record, after checking each fits in the file.

    pystdf quietly pads a cut-off record with empty fields and stops at a cut-off header, so a
    truncated file would pass as a shorter, valid one; this walk makes truncation an error."""
    if len(data) < 6 or not looks_like_stdf(data):
        raise DataError("not an STDF file: it does not start with a FAR record", path)
    cpu_type, version = data[4], data[5]
    if version != 4:
        raise DataError(f"record 1 (FAR): STDF_VER is {version}; only STDF V4 is supported", path)
    if cpu_type not in (1, 2):
        raise DataError(f"record 1 (FAR): CPU_TYPE {cpu_type} is not supported (1 = big-endian, "
                        "2 = little-endian)", path)
    length_format = "<H" if cpu_type == 2 else ">H"
    records, offset, number = [], 0, 0
    while offset < len(data):
        number += 1
        if len(data) - offset < 4:
            raise DataError(f"record {number} (at byte {offset}): truncated record header "
                            f"({len(data) - offset} of 4 bytes)", path)
        (length,) = struct.unpack_from(length_format, data, offset)
        rec_typ, rec_sub = data[offset + 2], data[offset + 3]
        if offset + 4 + length > len(data):
            raise DataError(f"record {number} ({_name(rec_typ, rec_sub)} at byte {offset}): truncated: "
                            f"REC_LEN says {length} bytes, {len(data) - offset - 4} remain", path)
        records.append((offset, rec_typ, rec_sub))
        offset += 4 + length
    return records


_NAMES = {(0, 10): "FAR", (1, 10): "MIR", (1, 20): "MRR", (2, 10): "WIR", (2, 20): "WRR", (2, 30): "WCR",
          (5, 10): "PIR", (5, 20): "PRR"}


def _name(rec_typ: int, rec_sub: int) -> str:
    return _NAMES.get((rec_typ, rec_sub), f"type {rec_typ}/{rec_sub}")


class _Collector:
    """pystdf sink keeping the records this loader needs, numbered like :func:`_scan_records`."""

    WANTED = {"Mir", "Wir", "Wrr", "Prr"}

    def __init__(self):
        self.number = 0
        self.records: list[tuple[int, str, dict]] = []

    def after_header(self, source, header):
        self.number += 1

    def after_send(self, source, data):
        rec_type, fields = data
        name = type(rec_type).__name__
        if name in self.WANTED:
            self.records.append((self.number, name.upper(), dict(zip(rec_type.fieldNames, fields))))


def _read_records(data: bytes, path: Path) -> list[tuple[int, str, dict]]:
    from pystdf.IO import Parser
    from pystdf import V4

    parser = Parser(inp=io.BytesIO(data), recTypes=V4.records)
    sink = _Collector()
    parser.addSink(sink)
    try:
        # pystdf prints "Broken header" notes to stderr for records longer than their fields; the
        # records are still read correctly, so the note is noise for a user of waferscope.
        with contextlib.redirect_stderr(io.StringIO()):
            parser.parse()
    except UnicodeDecodeError:
        raise DataError(f"record {sink.number}: a text field is not ASCII", path) from None
    except Exception as exc:  # pystdf raises bare struct/Index errors on corrupt records
        raise DataError(f"record {sink.number}: cannot decode ({type(exc).__name__}: {exc})", path) from None
    return sink.records


def load_stdf(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path) from None
    offsets = _scan_records(data, path)
    lot: str | None = None
    open_wafers: dict[int, dict] = {}  # test head → the wafer being tested on it
    wafers: list[dict] = []

    def where(number: int, name: str) -> str:
        return f"record {number} ({name} at byte {offsets[number - 1][0]})"

    def need(fields: dict, name: str, number: int, rec: str):
        if fields.get(name) is None:
            raise DataError(f"{where(number, rec)}: the record ends before its {name} field", path)
        return fields[name]

    for number, rec, fields in _read_records(data, path):
        if rec == "MIR":
            lot = str(need(fields, "LOT_ID", number, rec)).strip()
        elif rec == "WIR":
            if lot is None:
                raise DataError(f"{where(number, rec)}: wafer before any MIR record (the lot header)", path)
            head = need(fields, "HEAD_NUM", number, rec)
            wafer_id = (fields.get("WAFER_ID") or "").strip()
            if head in open_wafers:
                raise DataError(f"{where(number, rec)}: WIR for head {head} while wafer "
                                f"{open_wafers[head]['id']!r} on it has no WRR yet", path)
            open_wafers[head] = {"id": wafer_id, "lot": lot, "dies": {}}
        elif rec == "WRR":
            head = need(fields, "HEAD_NUM", number, rec)
            if head not in open_wafers:
                raise DataError(f"{where(number, rec)}: WRR for head {head} without a WIR before it", path)
            wafer = open_wafers.pop(head)
            wafer["id"] = wafer["id"] or (fields.get("WAFER_ID") or "").strip()
            wafers.append(wafer)
        elif rec == "PRR":
            head = need(fields, "HEAD_NUM", number, rec)
            wafer = open_wafers.get(head)
            if wafer is None:
                raise DataError(f"{where(number, rec)}: die result outside a wafer (no open WIR for "
                                f"head {head})", path)
            flags = need(fields, "PART_FLG", number, rec)
            hard_bin = need(fields, "HARD_BIN", number, rec)
            x, y = need(fields, "X_COORD", number, rec), need(fields, "Y_COORD", number, rec)
            if MISSING_COORD in (x, y):
                raise DataError(f"{where(number, rec)}: the die has no X_COORD/Y_COORD (-32768)", path)
            if pass_bins is not None:
                state = map_bin(pass_bins, hard_bin, path, where(number, rec))
            elif flags & FLAG_NO_VERDICT:
                state = PASS if hard_bin == 1 else FAIL
            else:
                state = FAIL if flags & FLAG_FAILED else PASS
            label = where(number, rec)
            earlier = wafer["dies"].get((x, y))
            if earlier is not None and not flags & FLAG_RETEST:
                raise DataError(f"{label}: wafer {wafer['id']!r}: die ({x}, {y}) appears twice (first at "
                                f"{earlier[3]}) and is not flagged as a retest", path)
            wafer["dies"][(x, y)] = (x, y, state, label)
    wafers.extend(open_wafers.values())  # no WRR: the run was cut short, its dies are still results
    if lot is None:
        raise DataError("no MIR record (the lot header)", path)
    if not wafers:
        raise DataError("no wafers (no WIR records)", path)
    maps = [dies_to_grid(list(w["dies"].values()), path, w["id"]) for w in wafers]
    meta = fab_meta(path, [w["lot"] for w in wafers], [w["id"] for w in wafers], "stdf")
    return WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
