"""STDF V4 probe-test files (Standard Test Data Format), the usual source of wafer bin maps.

Read with waferscope's own streaming reader (:mod:`waferscope.data.loaders.stdf_reader`): the file
(or its gzip/bzip2/xz/zip-compressed form) is walked once in bounded memory, and only these records
are decoded; every PTR/MPR/FTR/GDR/DTR… is skipped by its header length.

- FAR (file attributes): must come first; its CPU_TYPE gives the byte order, STDF_VER must be 4.
- MIR (master information): ``LOT_ID`` → ``lot``. Required before the first wafer.
- WCR (wafer configuration): ``POS_X``/``POS_Y``/``WF_FLAT`` orient every map, ``DIE_WID``/
  ``DIE_HT`` (in ``WF_UNITS``) give the die pitch (metadata ``die_pitch_x``/``die_pitch_y``, mm).
- WIR / WRR (wafer information / results) bracket one wafer per test head; ``WAFER_ID`` (WIR's,
  else WRR's) → ``wafer_id``; a wafer still open at the end of the file (or when its head starts
  another wafer) is kept (an aborted run). WRR ``PART_CNT``/``GOOD_CNT`` are cross-checked.
- PRR (part results): one die, ``X_COORD``/``Y_COORD``, ``HARD_BIN``, ``SOFT_BIN``, ``PART_FLG``.
- HBR / SBR (bin summaries): ``HBIN_NAM``/``SBIN_NAM`` only.

For the lot views (:mod:`waferscope.lots`): every die's HARD_BIN (of the result kept, see
re-probes) goes to ``dataset.attrs["bins"]`` (wafer id → int array of the map's shape, -1 where no
die) with the HBR names in ``attrs["bin_names"]``; SOFT_BIN to ``attrs["soft_bins"]`` (names in
``attrs["soft_bin_names"]``); WIR ``START_T`` / WRR ``FINISH_T`` to the metadata columns
``start_time`` / ``finish_time`` (UTC, ``yyyy-mm-ddThh:mm:ss``; "" when 0); the die coordinates to
``origin_row`` / ``origin_col`` (:func:`fabcommon.grid_origin`).

Pass/fail: with no ``pass_bins`` the tester's own verdict is used, PART_FLG bit 3 (0 = passed,
1 = failed); when the flag is marked invalid (bit 4) HARD_BIN 1 passes. With ``pass_bins`` the
HARD_BIN is mapped.

Re-probes: a die reported more than once on a wafer. A PRR flagged as a retest (PART_FLG bit 0 or
1) always replaces the earlier result. Testers routinely re-probe without setting those bits; then
``retest`` decides: ``"last"`` (default, the final touch-down wins), ``"first"`` or ``"worst"``
(a fail anywhere fails the die). Metadata ``reprobed_dies`` counts the dies tested more than once.

A file without WIR/WRR whose PRRs carry coordinates is read as one map (``wafer_id`` empty); a
PRR without coordinates (final test of packaged parts) is an error: it has no place on a map.

Orientation: see :func:`orientation_of` and docs/data.md § STDF. Errors name the record by number
(FAR = record 1), type and byte offset.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import MAX_GRID_SPAN, LoadLimits, resolve_limits
from waferscope.data.loaders.fabcommon import (FAIL, PASS, BinMapping, bins_attrs, fab_meta, grid_origin, map_bin,
                                               orient_grid, origin_columns, parse_bin_mapping)
from waferscope.data.loaders.stdf_reader import Fields, Record, StdfStream, record_label
from waferscope.errors import ConfigError, DataError

MISSING_COORD = -32768  # STDF's "no coordinate" value for X_COORD / Y_COORD
MISSING_U4 = 0xFFFFFFFF
FLAG_RETEST = 0x03      # PART_FLG bits 0/1: this part supersedes an earlier result
FLAG_FAILED = 0x08      # bit 3: the part failed
FLAG_NO_VERDICT = 0x10  # bit 4: the pass/fail bit is not valid
RETEST_POLICIES = ("last", "first", "worst")

FAR, MIR, WIR, WRR, WCR, PRR = (0, 10), (1, 10), (2, 10), (2, 20), (2, 30), (5, 20)
HBR, SBR = (1, 40), (1, 50)  # bin summaries: only their names are read (the Pareto's bin_names)
WANTED = frozenset({MIR, WIR, WRR, WCR, PRR, HBR, SBR})

# WCR WF_UNITS → millimetres (0 = unknown units: the pitch is kept as written)
UNIT_MM = {1: 25.4, 2: 10.0, 3: 1.0, 4: 0.0254}
NOTCH = {"U": "up", "D": "down", "L": "left", "R": "right"}
# What a blank (space = unknown) or absent WCR field means: x grows to the right, y grows down the
# wafer (the prober convention of most testers, and the row order waferscope used before WCR was
# read), flat/notch at the bottom.
DEFAULT_POS_X, DEFAULT_POS_Y, DEFAULT_FLAT = "R", "D", "D"

_PRR_HEAD = struct.Struct("<BBBHHHhh")  # HEAD_NUM … Y_COORD: the first 13 bytes of a PRR
_PRR_HEAD_BE = struct.Struct(">BBBHHHhh")


def looks_like_stdf(head: bytes) -> bool:
    """Tell whether the content starts with a FAR record: REC_LEN 2 in either byte order, REC_TYP 0, REC_SUB 10.

    ``head``: the first bytes of the (decompressed) content, so a compressed STDF is
    recognised through it.
    """
    return len(head) >= 4 and head[:2] in (b"\x02\x00", b"\x00\x02") and head[2:4] == b"\x00\x0a"


def check_retest(retest) -> str:
    """``None`` → ``"last"``; one of :data:`RETEST_POLICIES`, else ConfigError."""
    value = "last" if retest is None else str(retest).strip().lower()
    if value not in RETEST_POLICIES:
        raise ConfigError(f"bad retest {retest!r}: expected one of {', '.join(RETEST_POLICIES)} (which result "
                          "of a die probed more than once without a retest flag is kept)")
    return value


@dataclass(slots=True)
class _Wafer:
    wafer_id: str
    lot: str
    head: int | None
    opened_by: Record                              # the WIR (or first PRR) that opened it, for errors
    dies: dict = field(default_factory=dict)       # (x+32768)<<16 | (y+32768) → state | hard<<2 | soft<<18
    reprobed: set = field(default_factory=set)
    prrs: int = 0
    good_prrs: int = 0
    part_cnt: int | None = None
    good_cnt: int | None = None
    closed: bool = False
    grid: np.ndarray | None = None
    n_dies: int = 0            # set when the grid is built (the die dict is then dropped)
    pass_dies: int = 0
    reprobed_count: int = 0
    hard: np.ndarray | None = None  # HARD_BIN / SOFT_BIN per die on the raw grid, -1 where no die
    soft: np.ndarray | None = None
    span: tuple = (0, 0, 0, 0)      # x_min, y_min, x_max, y_max of the die coordinates
    start_t: int = 0                # WIR START_T / WRR FINISH_T, seconds since 1970 (0: not given)
    finish_t: int = 0


@dataclass
class _Wcr:
    pos_x: str = " "
    pos_y: str = " "
    flat: str = " "
    die_wid: float | None = None
    die_ht: float | None = None
    units: int = 0
    seen: bool = False


def orientation_of(wcr: _Wcr | None) -> tuple[dict, str]:
    """``orient_grid`` arguments from the WCR, and a note of what was used for the metadata.

    POS_X ``L``/``R``: the direction positive x points; POS_Y ``U``/``D``: positive y; WF_FLAT
    ``U``/``D``/``L``/``R``: where the flat/notch is, in the same view. A blank (the spec's
    "unknown"), a missing WCR or any other letter falls back to x right, y down, flat down.
    """
    notes = []

    def pick(value: str, allowed: str, default: str, name: str) -> str:
        v = (value or " ").strip().upper()
        if v in allowed and v:
            return v
        notes.append(f"{name} {'blank' if not v else repr(value)}→{default}")
        return default

    wcr = wcr or _Wcr()
    pos_x = pick(wcr.pos_x, "LR", DEFAULT_POS_X, "POS_X")
    pos_y = pick(wcr.pos_y, "UD", DEFAULT_POS_Y, "POS_Y")
    flat = pick(wcr.flat, "UDLR", DEFAULT_FLAT, "WF_FLAT")
    note = f"POS_X={pos_x} POS_Y={pos_y} WF_FLAT={flat}"
    if not wcr.seen:
        note += " (no WCR: defaults)"
    elif notes:
        note += f" ({', '.join(notes)})"
    return {"x_right": pos_x == "R", "y_up": pos_y == "U", "notch": NOTCH[flat]}, note


class _Collector:
    """Turns the wanted records into wafers (one pass; grids built as each wafer closes)."""

    def __init__(self, stream: StdfStream, mapping: BinMapping | None, limits: LoadLimits, retest: str):
        self.stream, self.path, self.mapping, self.limits, self.retest = stream, stream.path, mapping, limits, retest
        self.budget = limits.budget(self.path)
        self.lot: str | None = None
        self.open: dict[int, _Wafer] = {}       # test head → wafer under test
        self.wafers: list[_Wafer] = []          # in WIR order
        self.implicit: _Wafer | None = None     # dies of a file without WIR/WRR
        self.seen_wir = False
        self.wcr: _Wcr | None = None
        self.bin_names: dict = {"hard": {}, "soft": {}}  # HBR/SBR HBIN_NAM/SBIN_NAM
        # a per-load cap on distinct dies held before any grid exists (the grids are bounded by budget.add)
        self.die_cap = limits.max_dies if limits.max_dies is not None else None

    # ---- records ---------------------------------------------------------------------------------
    def run(self) -> None:
        prr_struct = _PRR_HEAD if self.stream.byte_order == "<" else _PRR_HEAD_BE
        unpack = prr_struct.unpack_from
        mapping, cache = self.mapping, {}
        first, worst = self.retest == "first", self.retest == "worst"
        cap = self.die_cap if self.die_cap is not None else -1
        held = 0                     # distinct dies held in the wafers' dicts so far
        head_of = None               # the head whose wafer ``dies``/``wafer`` are (reset by WIR/WRR)
        wafer = dies = None
        for item in self.stream.records(WANTED):
            if item[1] == 5:  # PRR: the per-die path, kept short (a production file has millions)
                body = item[3]
                if len(body) >= 13:
                    head, _site, flg, _num, hard_bin, soft_bin, x, y = unpack(body)
                else:
                    head, flg, hard_bin, soft_bin, x, y = self._short_prr(Record(*item))
                if x == MISSING_COORD or y == MISSING_COORD:
                    raise self.stream.error(Record(*item), "the die has no X_COORD/Y_COORD (-32768): a part without "
                                            "a wafer position (final test of packaged parts?) cannot go on a map")
                if head != head_of:
                    wafer = self.open.get(head) or self._wafer_for_orphan(Record(*item), head)
                    head_of, dies = head, wafer.dies
                if mapping is None:
                    if flg & FLAG_NO_VERDICT:
                        state = PASS if hard_bin == 1 else FAIL
                    else:
                        state = FAIL if flg & FLAG_FAILED else PASS
                else:
                    state = cache.get(hard_bin)
                    if state is None:
                        state = cache[hard_bin] = self._map_bin(hard_bin, Record(*item))
                wafer.prrs += 1
                if state == PASS:
                    wafer.good_prrs += 1
                key = (x + 32768) << 16 | (y + 32768)
                if key in dies:
                    wafer.reprobed.add(key)
                    if not flg & FLAG_RETEST and (first or (worst and dies[key] & 3 == FAIL)):
                        continue
                else:
                    held += 1
                    if held == cap + 1:  # never true without a cap (-1)
                        raise self.stream.error(Record(*item), f"more than {cap:,} dies in the file (max_dies); "
                                                "split it or raise the limit")
                dies[key] = state | hard_bin << 2 | soft_bin << 18  # the bins ride along for the Pareto
            else:
                head_of = None  # a WIR/WRR changes which wafer each head is testing
                if item[1] == 2:
                    {10: self._wir, 20: self._wrr, 30: self._wcr}[item[2]](Record(*item))
                elif item[2] in (40, 50):
                    self._bin_name(Record(*item), "hard" if item[2] == 40 else "soft")
                else:  # MIR
                    f = Fields(Record(*item), self.stream)
                    f.u4(), f.u4(), f.u1(), f.c1(), f.c1(), f.c1(), f.u2(), f.c1()  # SETUP_T … CMOD_COD
                    self.lot = f.need(f.cn("LOT_ID"), "LOT_ID")

    def _map_bin(self, hard_bin: int, rec: Record) -> int:
        try:
            return self.mapping.state(hard_bin)
        except KeyError:
            return map_bin(self.mapping, hard_bin, self.path, self.stream.label(rec.offset, rec.typ, rec.sub))

    def _short_prr(self, rec: Record):
        """Decode a PRR whose REC_LEN ends before Y_COORD: what is there, naming what is missing."""
        f = Fields(rec, self.stream)
        head = f.need(f.u1(), "HEAD_NUM")
        f.u1()  # SITE_NUM
        flg = f.need(f.u1(), "PART_FLG")
        f.u2()  # NUM_TEST
        hard_bin = f.need(f.u2(), "HARD_BIN")
        soft_bin = f.u2()
        x, y = f.need(f.i2(), "X_COORD"), f.need(f.i2(), "Y_COORD")
        return head, flg, hard_bin, soft_bin if soft_bin is not None else 0xFFFF, x, y

    def _bin_name(self, rec: Record, kind: str) -> None:
        """HBR/SBR: HEAD_NUM, SITE_NUM, xBIN_NUM, xBIN_CNT, xBIN_PF, xBIN_NAM; a name only."""
        f = Fields(rec, self.stream)
        f.u1(), f.u1()
        number = f.u2()
        f.u4(), f.c1()
        name = f.cn("BIN_NAM")
        if number is not None and name:
            self.bin_names[kind].setdefault(int(number), name)

    def _wafer_for_orphan(self, rec: Record, head: int) -> _Wafer:
        """Return the wafer a PRR belongs to when no WIR is open for its head."""
        if len(self.open) == 1:  # one wafer under test: some testers number heads differently in PRR and WIR
            return next(iter(self.open.values()))
        if self.open:
            raise self.stream.error(rec, f"die result for head {head}, but the wafers under test are on "
                                    f"heads {sorted(self.open)}")
        if self.seen_wir:
            raise self.stream.error(rec, f"die result outside a wafer (no open WIR for head {head}: the "
                                    "last wafer's WRR came before it)")
        if self.implicit is None:  # no WIR yet: a file without wafer records, one map per file
            if self.lot is None:
                raise self.stream.error(rec, "die result before any MIR record (the lot header)")
            self.implicit = _Wafer("", self.lot, None, rec)
            self.budget.limits.check_count(1, self.path)
        return self.implicit

    def _wir(self, rec: Record) -> None:
        f = Fields(rec, self.stream)
        head = f.need(f.u1(), "HEAD_NUM")
        f.u1()  # SITE_GRP
        start_t = f.u4()
        wafer_id = f.cn("WAFER_ID") or ""
        if self.lot is None:
            raise self.stream.error(rec, "wafer before any MIR record (the lot header)")
        if self.implicit is not None:
            first = self.implicit.opened_by
            raise self.stream.error(rec, f"a wafer (WIR) starts after die results outside any wafer "
                                    f"(the first at {self.stream.label(first.offset, first.typ, first.sub)})")
        self.seen_wir = True
        if head in self.open:  # its WRR never came (aborted wafer): keep it, start the next one
            self._close(self.open.pop(head))
        wafer = _Wafer(wafer_id, self.lot, head, rec)
        wafer.start_t = start_t or 0
        self.wafers.append(wafer)
        self.limits.check_count(len(self.wafers), self.path, "wafers")
        self.open[head] = wafer

    def _wrr(self, rec: Record) -> None:
        f = Fields(rec, self.stream)
        head = f.need(f.u1(), "HEAD_NUM")
        wafer = self.open.pop(head, None)
        if wafer is None:
            if len(self.open) != 1:
                raise self.stream.error(rec, f"WRR for head {head} without a WIR before it")
            wafer = self.open.pop(next(iter(self.open)))
        f.u1()  # SITE_GRP
        wafer.finish_t = f.u4() or 0
        part_cnt, _rtst, _abrt, good_cnt = f.u4(), f.u4(), f.u4(), f.u4()
        f.u4()  # FUNC_CNT
        wafer_id = f.cn("WAFER_ID")
        wafer.wafer_id = wafer.wafer_id or wafer_id or ""
        wafer.part_cnt = None if part_cnt in (None, MISSING_U4) else part_cnt
        wafer.good_cnt = None if good_cnt in (None, MISSING_U4) else good_cnt
        wafer.closed = True
        self._close(wafer)

    def _wcr(self, rec: Record) -> None:
        f = Fields(rec, self.stream)
        _size, die_ht, die_wid, units = f.r4(), f.r4(), f.r4(), f.u1()
        flat, _cx, _cy, pos_x, pos_y = f.c1(), f.i2(), f.i2(), f.c1(), f.c1()
        self.wcr = _Wcr(pos_x or " ", pos_y or " ", flat or " ", die_wid, die_ht, units or 0, True)

    # ---- grids -------------------------------------------------------------------------------------
    def _close(self, wafer: _Wafer) -> None:
        """Build the wafer's raw ``[y - min y, x - min x]`` grid, bounded before it is allocated."""
        def where() -> str:  # numbering a record re-reads the file: only on the way to an error
            rec = wafer.opened_by
            return f"wafer {wafer.wafer_id!r} (opened by {self.stream.label(rec.offset, rec.typ, rec.sub)})"

        if not wafer.dies:
            raise DataError(f"{where()}: no dies (no PRR between its WIR and WRR)", self.path)
        n = len(wafer.dies)
        keys = np.fromiter(wafer.dies.keys(), np.int64, n)
        packed = np.fromiter(wafer.dies.values(), np.int64, n)
        states = (packed & 3).astype(np.uint8)
        xs, ys = (keys >> 16) - 32768, (keys & 0xFFFF) - 32768
        span_x, span_y = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        for axis, values, span in (("x", xs, span_x), ("y", ys, span_y)):
            if span > MAX_GRID_SPAN:
                far = int(values[np.argmax(np.abs(values - np.median(values)))])
                raise DataError(f"{where()}: die {axis} coordinates span {values.min()}..{values.max()}, more than "
                                f"{MAX_GRID_SPAN} dies: the die at {axis} = {far} lies outside any wafer grid", self.path)
        try:
            self.budget.add((span_y, span_x), f"wafer {wafer.wafer_id!r}")
        except DataError as exc:
            raise DataError(exc.problem.replace(f"wafer {wafer.wafer_id!r}", where(), 1), self.path) from None
        grid = np.zeros((span_y, span_x), np.uint8)
        grid[ys - ys.min(), xs - xs.min()] = states
        wafer.grid = grid
        for name, codes in (("hard", (packed >> 2) & 0xFFFF), ("soft", packed >> 18)):
            raw = np.full((span_y, span_x), -1, np.int32)
            raw[ys - ys.min(), xs - xs.min()] = np.where(codes == 0xFFFF, -1, codes)  # 65535: no bin given
            setattr(wafer, name, raw)
        wafer.span = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        wafer.dies = {}  # the dict is the big part; the grid is all that is kept
        wafer.n_dies, wafer.pass_dies = n, int((states == PASS).sum())
        wafer.reprobed_count = len(wafer.reprobed)
        wafer.reprobed = set()

    def finish(self) -> list[_Wafer]:
        for wafer in self.open.values():  # no WRR: the run was cut short, its dies are still results
            self._close(wafer)
        self.open = {}
        if self.implicit is not None:
            self._close(self.implicit)
            self.wafers = [self.implicit]
        if self.lot is None:
            raise DataError("no MIR record (the lot header)", self.path)
        if not self.wafers:
            raise DataError("no wafers: no WIR records and no PRR with die coordinates", self.path)
        return self.wafers


def _count_check(w: _Wafer, mapping_given: bool) -> str:
    """'' when the WRR counts agree with the dies read, else what differs (kept as metadata).

    PART_CNT may count every touch-down (re-probes included) or every die, GOOD_CNT the passing
    touch-downs or the dies passing in the end: testers differ, so either reading agrees.
    """
    if not w.closed:
        return "no WRR (run cut short)"
    notes = []
    if w.part_cnt is not None and w.part_cnt not in (w.prrs, w.n_dies):
        notes.append(f"WRR PART_CNT {w.part_cnt:,} vs {w.prrs:,} PRRs on {w.n_dies:,} dies")
    # GOOD_CNT is the tester's own verdict: only comparable when its verdict is the one used
    if not mapping_given and w.good_cnt is not None and w.good_cnt not in (w.good_prrs, w.pass_dies):
        notes.append(f"WRR GOOD_CNT {w.good_cnt:,} vs {w.pass_dies:,} passing dies")
    return "; ".join(notes)


def load_stdf(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None,
              retest: str | None = "last") -> WaferDataset:
    """Return the wafer maps of an STDF V4 file (plain or gzip/bzip2/xz/zip-compressed).

    See the module docstring for the records read, ``pass_bins`` and ``retest``.
    """
    from waferscope.data.compressed import open_binary

    path = Path(path)
    limits = resolve_limits(limits)
    policy = check_retest(retest)
    pass_bins = parse_bin_mapping(pass_bins)  # a BinMapping from load(); a string or bins when called directly
    try:
        stream_file = open_binary(path, limits)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path) from None
    with stream_file as fh:
        try:
            stream = StdfStream(fh, path, reopen=lambda: open_binary(path, limits))
            collector = _Collector(stream, pass_bins, limits, policy)
            collector.run()
        except OSError as exc:
            raise DataError(f"cannot read ({exc.strerror or exc})", path) from None
    wafers = collector.finish()
    kwargs, orientation = orientation_of(collector.wcr)
    maps = [orient_grid(w.grid, **kwargs) for w in wafers]
    origins = [grid_origin(*w.span, **kwargs) for w in wafers]
    pitch_x, pitch_y, unit = _pitch(collector.wcr)
    if kwargs["notch"] in ("left", "right"):  # the map is turned a quarter: its columns run along the die height
        pitch_x, pitch_y = pitch_y, pitch_x
    checks = [_count_check(w, pass_bins is not None) for w in wafers]
    n = len(wafers)
    meta = fab_meta(path, [w.lot for w in wafers], [w.wafer_id for w in wafers], "stdf",
                    reprobed_dies=[w.reprobed_count for w in wafers], prr_count=[w.prrs for w in wafers],
                    wrr_part_cnt=[np.nan if w.part_cnt is None else w.part_cnt for w in wafers],
                    wrr_good_cnt=[np.nan if w.good_cnt is None else w.good_cnt for w in wafers],
                    count_check=checks, die_pitch_x=[pitch_x] * n, die_pitch_y=[pitch_y] * n,
                    die_pitch_unit=unit, orientation=orientation, retest=policy,
                    start_time=[_time(w.start_t) for w in wafers], finish_time=[_time(w.finish_t) for w in wafers],
                    **origin_columns(origins))
    differing = sum(bool(c) and not c.startswith("no WRR") for c in checks)
    if differing:
        warnings.warn(f"{path}: {differing} of {n} wafers: the WRR counts differ from the dies read "
                      "(see the count_check column)", stacklevel=2)
    ds = WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
    # the lot views' bin Pareto (waferscope.lots): HARD_BIN per die, and SOFT_BIN beside it
    ids = list(meta["id"])
    ds.attrs.update(bins_attrs(ids, [orient_grid(w.hard, **kwargs) for w in wafers], collector.bin_names["hard"]))
    ds.attrs["soft_bins"] = {i: orient_grid(w.soft, **kwargs) for i, w in zip(ids, wafers)}
    if collector.bin_names["soft"]:
        ds.attrs["soft_bin_names"] = dict(collector.bin_names["soft"])
    return ds


def _time(seconds: int) -> str:
    """Return an STDF U4 time (seconds since 1970) as ``yyyy-mm-ddThh:mm:ss``; "" for 0/missing."""
    import datetime

    if not seconds or seconds == MISSING_U4:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _pitch(wcr: _Wcr | None) -> tuple[float, float, str]:
    """(die_pitch_x, die_pitch_y, unit): DIE_WID/DIE_HT in mm, or as written when WF_UNITS is 0."""
    if wcr is None or wcr.die_wid is None or wcr.die_ht is None or \
            not (np.isfinite(wcr.die_wid) and np.isfinite(wcr.die_ht) and wcr.die_wid > 0 and wcr.die_ht > 0):
        return np.nan, np.nan, ""
    scale = UNIT_MM.get(wcr.units)
    if scale is None:
        return float(wcr.die_wid), float(wcr.die_ht), "unknown"
    return float(wcr.die_wid) * scale, float(wcr.die_ht) * scale, "mm"


__all__ = ["load_stdf", "looks_like_stdf", "check_retest", "RETEST_POLICIES", "FAR", "record_label"]
