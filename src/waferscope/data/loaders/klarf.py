"""KLARF (KLA Results File) 1.1/1.2 defect-inspection files, parsed here record by record.

Syntax read: a KLARF 1.x file is a sequence of records ``Keyword value value … ;`` separated by
white space, with ``"quoted strings"``. Line breaks and indentation carry no meaning: a DefectList
whose rows are not indented, or a record split over lines, reads the same (klarf-reader, used
before, kept only lines starting with a space and dropped the others silently). Ids may be quoted
or not (``WaferID "W1";`` or ``WaferID W1;``). Unknown records are skipped.

Read: ``LotID`` → ``lot``; ``DiePitch`` → ``die_pitch_x``/``die_pitch_y``; ``OrientationMarkLocation``
and ``SampleOrientationMarkType``; ``StepID``; ``SampleSize`` and ``DieOrigin``. Each ``WaferID``
starts a wafer (every wafer of the file is kept; one without a ``DefectList`` is a clean wafer),
with its ``Slot``, ``SampleCenterLocation``, ``SampleTestPlan``, ``DefectRecordSpec``,
``DefectList`` and ``SummarySpec``/``SummaryList``; a ``SampleCenterLocation``, ``SampleTestPlan`` or
``DefectRecordSpec`` given before the first WaferID serves the wafers after it.

Cross-checks (a mismatch is a DataError naming the line, never a silent zero):
``DefectRecordSpec N c1 … cN`` names N columns; every DefectList row has at least N values (one row
per line; rows wrapped over lines must then have exactly N values each); ``SampleTestPlan n`` lists
n dies; the ``NDEFECT`` column of the wafer's ``SummaryList`` (summed over its tests) equals the
number of defect rows read; a SummaryList counting defects with no DefectList is an error.

Die states: a die with a failing defect → fail; an inspected die without one → pass; any other
position → no die. The inspected dies are the wafer's ``SampleTestPlan`` (else the last plan given
before it, else the file's first plan; a defect on a die outside the plan is an error). Without a plan, the inspected dies are
those whose centre lies on the wafer: a disc of diameter ``SampleSize`` (mm) around
``SampleCenterLocation``, dies of ``DiePitch`` (µm) numbered from index 0 at the die origin.

Bins: KLARF defects carry a class, not a test bin, so ``pass_bins`` applies to ``CLASSNUMBER``:
defects of a pass class (e.g. nuisance) do not fail their die. Default: every defect fails its die.

Lot views (:mod:`waferscope.lots`): ``ResultTimestamp`` (mm-dd-yy hh:mm:ss) → ``start_time``; the
die indices give ``origin_row``/``origin_col`` (:func:`fabcommon.grid_origin`); when the defects
carry a ``CLASSNUMBER``, ``dataset.attrs["bins"]`` holds per die the class of its first failing
defect (else of its first defect; -1 for a die without defects), so the bin Pareto counts failing
dies by defect class.

Orientation: KLARF die indices are y-up (``YINDEX`` grows upwards, ``XINDEX`` to the right) in the
view where the orientation mark is at ``OrientationMarkLocation`` (UP/DOWN/LEFT/RIGHT; DOWN when
absent); :func:`fabcommon.orient_grid` turns that view notch down.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.loaders.fabcommon import (FAIL, MAX_GRID_SPAN, PASS, BinMapping, bins_attrs, dies_to_grid, fab_meta,
                                               grid_origin, map_bin, orient_grid, oriented_pitch, origin_columns,
                                               pitch_columns, read_text)
from waferscope.errors import DataError

_TOKEN = re.compile(r'"([^"]*)"|(;)|([^\s;"]+)|(")')
_MARKS = {"DOWN": "down", "UP": "up", "LEFT": "left", "RIGHT": "right", "BOTTOM": "down", "TOP": "up"}


def looks_like_klarf(text: str) -> bool:
    """KLARF 1.x opens with ``FileVersion``; 1.8 opens with ``Record FileRecord``."""
    start = text.lstrip().lower()
    return start.startswith("fileversion") or start.startswith("record filerecord")


@dataclass
class _Record:
    keyword: str
    line: int
    values: list  # (text, line, quoted) per value


def _records(text: str, path: Path) -> Iterator[_Record]:
    """Return the file's records; each value keeps the line it is on."""
    current: _Record | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in _TOKEN.finditer(line):
            quoted, semi, word, stray = m.groups()
            if stray:
                raise DataError(f"line {lineno}: a quote '\"' is not closed on its line", path)
            if semi:
                if current is not None:
                    yield current
                current = None
            elif current is None:
                if quoted is not None:
                    raise DataError(f"line {lineno}: a record starts with a quoted string, not a keyword", path)
                current = _Record(word, lineno, [])
            else:
                current.values.append((quoted if quoted is not None else word, lineno, quoted is not None))
    if current is not None:
        raise DataError(f"line {current.line}: the {current.keyword} record has no closing ';' (file truncated?)", path)


def _num(value, path: Path, what: str, kind=float):
    text, line, _ = value
    try:
        return kind(text)
    except ValueError:
        raise DataError(f"line {line}: {what}: {text!r} is not a number", path) from None


def _need(rec: _Record, n: int, path: Path) -> list:
    if len(rec.values) < n:
        raise DataError(f"line {rec.line}: {rec.keyword} has {len(rec.values)} value(s), expected {n}", path)
    return rec.values


@dataclass
class _Wafer:
    id: str
    line: int
    slot: int | None = None
    centre: tuple | None = None
    plan: list | None = None
    defects: list = field(default_factory=list)  # (xindex, yindex, class or None, where)
    defect_line: int | None = None
    summary_count: int | None = None
    summary_line: int | None = None


@dataclass
class _Lot:
    lot_id: str = ""
    step_id: str = ""
    pitch: tuple | None = None
    origin: tuple = (0.0, 0.0)
    diameter_mm: float | None = None
    mark: str = "down"
    mark_type: str = ""
    timestamp: str = ""  # ResultTimestamp as ISO 8601 ("" when absent or unreadable)
    wafers: list = field(default_factory=list)


def _defect_rows(rec: _Record, columns: list, path: Path) -> list[tuple[list, int]]:
    """DefectList values → rows (values, line).

    One row per line when every line holds at least the spec's column count (IMAGELIST may
    add values); else consecutive chunks of exactly N.
    """
    n = len(columns)
    by_line: dict[int, list] = {}
    for v in rec.values:
        by_line.setdefault(v[1], []).append(v)
    if all(len(vs) >= n for vs in by_line.values()):
        return [(vs, line) for line, vs in by_line.items()]
    if len(rec.values) % n:
        bad = next(line for line, vs in by_line.items() if len(vs) != n)
        raise DataError(f"line {bad}: DefectList row with {len(by_line[bad])} values, the DefectRecordSpec "
                        f"names {n} columns ({len(rec.values)} values in all are not a whole number of rows)", path)
    return [(rec.values[i:i + n], rec.values[i][1]) for i in range(0, len(rec.values), n)]


def _check_version(rec: _Record, path: Path) -> None:
    """Refuse a file whose first record is not a KLARF 1.x ``FileVersion``."""
    key = rec.keyword.lower()
    if key == "record":
        raise DataError(f"line {rec.line}: only KLARF 1.1/1.2 files can be read (this is a KLARF 1.8 "
                        "'Record FileRecord' file)", path)
    if key != "fileversion":
        raise DataError(f"line {rec.line}: a KLARF file starts with FileVersion, not {rec.keyword!r}", path)
    major = _need(rec, 1, path)[0][0]
    if major != "1":
        raise DataError(f"line {rec.line}: only KLARF 1.1/1.2 files can be read (FileVersion "
                        f"{' '.join(v[0] for v in rec.values)})", path)


class _Parser:
    """One pass over a KLARF file's records after its FileVersion: one handler per keyword.

    Keywords no handler knows are skipped. ``wafer`` is the wafer the records belong to (the last
    WaferID); a plan or centre given before any WaferID (in the lot header) serves the wafers after it.
    """

    def __init__(self, path: Path, limits: LoadLimits):
        self.path, self.limits = path, limits
        self.lot = _Lot()
        self.wafer: _Wafer | None = None
        self.columns: list[str] | None = None
        self.summary_columns: list[str] | None = None
        self.last_plan: list | None = None
        self.first_plan: list | None = None
        self.lot_centre: tuple | None = None
        self.handlers = {
            "lotid": self._lot_id, "resulttimestamp": self._result_timestamp, "stepid": self._step_id,
            "diepitch": self._die_pitch, "dieorigin": self._die_origin, "samplesize": self._sample_size,
            "orientationmarklocation": self._mark_location, "sampleorientationmarktype": self._mark_type,
            "waferid": self._wafer_id, "samplecenterlocation": self._centre, "slot": self._slot,
            "sampletestplan": self._test_plan, "defectrecordspec": self._defect_spec, "defectlist": self._defect_list,
            "summaryspec": self._summary_spec, "summarylist": self._summary_list,
        }

    def feed(self, rec: _Record) -> None:
        """Apply one record."""
        handler = self.handlers.get(rec.keyword.lower())
        if handler is not None:
            handler(rec)

    def finish(self) -> _Lot:
        """Return the lot, each wafer before the file's first plan given that plan (as klarf-reader did)."""
        for w in self.lot.wafers:
            if w.plan is None:
                w.plan = self.first_plan
        return self.lot

    # ---- the lot header ----------------------------------------------------------------------------
    def _pair(self, rec: _Record, what: str) -> tuple:
        v = _need(rec, 2, self.path)
        return _num(v[0], self.path, f"{what} x"), _num(v[1], self.path, f"{what} y")

    def _lot_id(self, rec: _Record) -> None:
        self.lot.lot_id = _need(rec, 1, self.path)[0][0].strip()

    def _result_timestamp(self, rec: _Record) -> None:
        self.lot.timestamp = _timestamp(rec)

    def _step_id(self, rec: _Record) -> None:
        self.lot.step_id = _need(rec, 1, self.path)[0][0].strip()

    def _die_pitch(self, rec: _Record) -> None:
        self.lot.pitch = self._pair(rec, "DiePitch")

    def _die_origin(self, rec: _Record) -> None:
        self.lot.origin = self._pair(rec, "DieOrigin")

    def _sample_size(self, rec: _Record) -> None:
        v = _need(rec, 2, self.path)  # SampleSize <shape code> <diameter mm>
        self.lot.diameter_mm = _num(v[1], self.path, "SampleSize diameter")

    def _mark_location(self, rec: _Record) -> None:
        mark = _need(rec, 1, self.path)[0][0].upper()
        if mark not in _MARKS:
            raise DataError(f"line {rec.line}: OrientationMarkLocation {mark!r} is not UP, DOWN, LEFT or RIGHT",
                            self.path)
        self.lot.mark = _MARKS[mark]

    def _mark_type(self, rec: _Record) -> None:
        self.lot.mark_type = _need(rec, 1, self.path)[0][0].upper()

    # ---- wafers ------------------------------------------------------------------------------------
    def _wafer_id(self, rec: _Record) -> None:
        self.wafer = _Wafer(_need(rec, 1, self.path)[0][0].strip(), rec.line, plan=self.last_plan,
                            centre=self.lot_centre)
        self.lot.wafers.append(self.wafer)
        self.limits.check_count(len(self.lot.wafers), self.path, "wafers")

    def _current_wafer(self, rec: _Record) -> _Wafer:
        if self.wafer is None:
            raise DataError(f"line {rec.line}: {rec.keyword} before any WaferID", self.path)
        return self.wafer

    def _centre(self, rec: _Record) -> None:
        centre = self._pair(rec, "SampleCenterLocation")
        if self.wafer is None:  # some writers give it once, in the lot header
            self.lot_centre = centre
        else:
            self.wafer.centre = centre

    def _slot(self, rec: _Record) -> None:
        wafer = self._current_wafer(rec)
        wafer.slot = _num(_need(rec, 1, self.path)[0], self.path, "Slot", int)

    def _test_plan(self, rec: _Record) -> None:
        path = self.path
        v = _need(rec, 1, path)
        n = _num(v[0], path, "SampleTestPlan count", int)
        if len(v) - 1 != 2 * n:
            raise DataError(f"line {rec.line}: SampleTestPlan says {n} dies but lists "
                            f"{(len(v) - 1) / 2:g}", path)
        plan = [(_num(v[i], path, "SampleTestPlan XINDEX", int), _num(v[i + 1], path, "SampleTestPlan YINDEX", int))
                for i in range(1, len(v), 2)]
        seen: dict = {}
        for i, die in enumerate(plan):
            if die in seen:
                raise DataError(f"line {v[1 + 2 * i][1]}: SampleTestPlan: die ({die[0]}, {die[1]}) is listed "
                                "twice", path)
            seen[die] = i
        if self.wafer is not None:
            self.wafer.plan = plan
        self.last_plan = plan  # a plan before any WaferID (in the lot header) serves the wafers after it
        self.first_plan = self.first_plan or plan

    # ---- defects -----------------------------------------------------------------------------------
    def _defect_spec(self, rec: _Record) -> None:
        v = _need(rec, 1, self.path)
        n = _num(v[0], self.path, "DefectRecordSpec count", int)
        columns = [c[0].upper() for c in v[1:]]
        self.columns = columns
        if len(columns) != n:
            raise DataError(f"line {rec.line}: DefectRecordSpec says {n} columns but names {len(columns)}", self.path)
        missing = [c for c in ("XINDEX", "YINDEX") if c not in columns]
        if missing:
            raise DataError(f"line {rec.line}: DefectRecordSpec lacks column(s) {', '.join(missing)}", self.path)

    def _defect_list(self, rec: _Record) -> None:
        path = self.path
        wafer = self._current_wafer(rec)
        if wafer.defect_line is not None:
            raise DataError(f"line {rec.line}: a second DefectList for wafer {wafer.id!r} (first at line "
                            f"{wafer.defect_line})", path)
        wafer.defect_line = rec.line
        if not rec.values:
            return
        columns = self.columns
        if columns is None:
            raise DataError(f"line {rec.line}: DefectList before any DefectRecordSpec", path)
        ix, iy = columns.index("XINDEX"), columns.index("YINDEX")
        ic = columns.index("CLASSNUMBER") if "CLASSNUMBER" in columns else None
        iid = columns.index("DEFECTID") if "DEFECTID" in columns else None
        for values, line in _defect_rows(rec, columns, path):
            did = values[iid][0] if iid is not None else str(len(wafer.defects) + 1)
            wafer.defects.append((_num(values[ix], path, "XINDEX", int), _num(values[iy], path, "YINDEX", int),
                                  _num(values[ic], path, "CLASSNUMBER", int) if ic is not None else None,
                                  f"line {line}: wafer {wafer.id!r}: defect {did}"))

    def _summary_spec(self, rec: _Record) -> None:
        v = _need(rec, 1, self.path)
        self.summary_columns = [c[0].upper() for c in v[1:]]

    def _summary_list(self, rec: _Record) -> None:
        wafer = self._current_wafer(rec)
        columns = self.summary_columns
        if not columns or "NDEFECT" not in columns or not rec.values:
            return
        n = len(columns)
        if len(rec.values) % n:
            raise DataError(f"line {rec.line}: SummaryList holds {len(rec.values)} values, not a whole number "
                            f"of {n}-column rows (SummarySpec)", self.path)
        k = columns.index("NDEFECT")
        wafer.summary_count = (wafer.summary_count or 0) + sum(
            _num(rec.values[i + k], self.path, "SummaryList NDEFECT", int) for i in range(0, len(rec.values), n))
        wafer.summary_line = rec.line


def _parse(text: str, path: Path, limits: LoadLimits) -> _Lot:
    """Read the lot of a KLARF 1.x text: its header, wafers, plans and defect rows (see :class:`_Parser`)."""
    parser = _Parser(path, limits)
    first = True
    for rec in _records(text, path):
        if first:
            first = False
            _check_version(rec, path)
            continue
        parser.feed(rec)
    if first:
        raise DataError("the file is empty", path)
    return parser.finish()


def _timestamp(rec: _Record) -> str:
    """``ResultTimestamp mm-dd-yy hh:mm:ss`` (KLARF 1.x) → ``yyyy-mm-ddThh:mm:ss``.

    "" when it is not in that form (the time only orders lots: an unreadable one is left out,
    not guessed).
    """
    m = re.match(r"^(\d{1,2})-(\d{1,2})-(\d{2}|\d{4})$", rec.values[0][0]) if rec.values else None
    t = re.match(r"^(\d{1,2}):(\d{2}):(\d{2})$", rec.values[1][0]) if len(rec.values) > 1 else None
    if not m:
        return ""
    month, day, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
    year += 2000 if year < 100 else 0  # KLARF 1.x writes two-digit years
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return ""
    clock = f"{int(t.group(1)):02d}:{t.group(2)}:{t.group(3)}" if t else "00:00:00"
    return f"{year:04d}-{month:02d}-{day:02d}T{clock}"


def _check_counts(wafer: _Wafer, path: Path) -> None:
    if wafer.summary_count is None or wafer.summary_count == len(wafer.defects):
        return
    if wafer.defect_line is None:
        raise DataError(f"line {wafer.summary_line}: wafer {wafer.id!r}: the SummaryList counts "
                        f"{wafer.summary_count} defects but the wafer has no DefectList", path)
    raise DataError(f"line {wafer.defect_line}: wafer {wafer.id!r}: the DefectList holds {len(wafer.defects)} "
                    f"defect rows, the SummaryList (line {wafer.summary_line}) counts {wafer.summary_count}", path)


def _dies_on_wafer(lot: _Lot, wafer: _Wafer, path: Path) -> list[tuple[int, int]]:
    """Die indices whose centre lies on the wafer disc (used when there is no SampleTestPlan)."""
    where = f"line {wafer.line}: wafer {wafer.id!r}"
    if lot.pitch is None:
        raise DataError(f"{where}: no SampleTestPlan and no DiePitch line: the inspected dies are unknown", path)
    pitch_x, pitch_y = lot.pitch
    if not (pitch_x > 0 and pitch_y > 0):
        raise DataError(f"DiePitch must be positive, got {pitch_x} {pitch_y}", path)
    if not lot.diameter_mm or lot.diameter_mm <= 0:
        raise DataError(f"{where}: SampleSize must give a positive diameter to place dies without a SampleTestPlan", path)
    if wafer.centre is None:
        raise DataError(f"{where}: no SampleTestPlan and no SampleCenterLocation: the inspected dies are unknown", path)
    radius = lot.diameter_mm * 1000 / 2  # SampleSize is the diameter in mm; coordinates are µm
    if 2 * radius / min(pitch_x, pitch_y) > MAX_GRID_SPAN:
        raise DataError(f"a {2 * radius / 1000:g} mm wafer at DiePitch {pitch_x:g} x {pitch_y:g} µm is more "
                        f"than {MAX_GRID_SPAN} dies across (units not µm?)", path)
    cx, cy = wafer.centre
    dies = []
    for i in range(math.floor((cx - radius) / pitch_x) - 1, math.ceil((cx + radius) / pitch_x) + 1):
        for j in range(math.floor((cy - radius) / pitch_y) - 1, math.ceil((cy + radius) / pitch_y) + 1):
            dx = i * pitch_x + pitch_x / 2 - cx
            dy = j * pitch_y + pitch_y / 2 - cy
            if dx * dx + dy * dy <= radius * radius:
                dies.append((i, j))
    return dies


def load_klarf(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    """Read the wafer maps of a KLARF file."""
    path = Path(path)
    limits = resolve_limits(limits)
    lot = _parse(read_text(path, limits), path, limits)
    if not lot.wafers:
        raise DataError("no wafers (no WaferID record)", path)
    budget = limits.budget(path)
    has_classes = any(cls is not None for w in lot.wafers for _, _, cls, _ in w.defects)
    maps, origins, codes = [], [], []
    for wafer in lot.wafers:
        _check_counts(wafer, path)
        from_plan = wafer.plan is not None
        inspected = wafer.plan if from_plan else _dies_on_wafer(lot, wafer, path)
        states = {die: PASS for die in inspected}
        classes: dict = {}  # die → the CLASSNUMBER it is binned under (see the module docstring)
        for x, y, cls, where in wafer.defects:
            die = (x, y)
            if from_plan and die not in states:
                raise DataError(f"{where}: its die ({x}, {y}) is outside the SampleTestPlan", path)
            fails = pass_bins is None or cls is None or map_bin(pass_bins, cls, path, f"{where} (CLASSNUMBER)") == FAIL
            if cls is not None and (die not in classes or (fails and states[die] != FAIL)):
                classes[die] = cls  # the first failing defect's class; else the first defect's
            if fails:
                states[die] = FAIL
        dies = [(x, y, state, f"die ({x}, {y})") for (x, y), state in states.items()]
        grid = dies_to_grid(dies, path, wafer.id, budget=budget)
        xs, ys = [d[0] for d in dies], [d[1] for d in dies]
        turn = dict(y_up=True, x_right=True, notch=lot.mark)
        maps.append(orient_grid(grid, **turn))
        x0, y0 = min(xs), min(ys)  # once: inside the loop below it cost O(dies) per defect (10 s a 300-across wafer)
        origins.append(grid_origin(x0, y0, max(xs), max(ys), **turn))
        if has_classes:
            raw = np.full(grid.shape, -1, np.int32)
            for (x, y), cls in classes.items():
                raw[y - y0, x - x0] = cls
            codes.append(orient_grid(raw, **turn))
    n = len(lot.wafers)
    extra = origin_columns(origins)
    if lot.timestamp:
        extra["start_time"] = lot.timestamp
    if lot.pitch is not None:
        extra.update(pitch_columns([oriented_pitch(*lot.pitch, lot.mark)] * n))
    meta = fab_meta(path, [lot.lot_id] * n, [w.id for w in lot.wafers], "klarf",
                    slot=[w.slot if w.slot is not None else -1 for w in lot.wafers], step_id=lot.step_id,
                    orientation_mark=lot.mark_type, **extra)
    ds = WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
    if has_classes:
        ds.attrs.update(bins_attrs(meta["id"], codes))  # the lot views' bin Pareto (waferscope.lots)
    return ds
