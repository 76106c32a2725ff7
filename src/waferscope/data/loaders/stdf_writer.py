"""A small STDF V4 writer: the records a probe-test file holds, in either byte order.

Used by the tests (files in the real demo-lot layout, round trips) and by
``benchmarks/bench_stdf.py``, which streams a production-size lot to disk with
:func:`write_probe_lot` (one wafer in memory at a time, seeded). Not a general STDF authoring API:
each record writes the fields a wafer map or a realistic file needs and omits the optional
trailing ones, as the spec allows.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterable

import numpy as np


class StdfWriter:
    """Records appended to a binary stream. ``byte_order``: ``"<"`` (CPU_TYPE 2) or ``">"`` (1)."""

    def __init__(self, fh: BinaryIO, byte_order: str = "<"):
        if byte_order not in "<>" or len(byte_order) != 1:
            raise ValueError("byte_order must be '<' or '>'")
        self.fh, self.order = fh, byte_order

    # ---- encoding helpers -----------------------------------------------------------------------
    def pack(self, fmt: str, *values) -> bytes:
        """Pack ``values`` in the writer's byte order."""
        return struct.pack(self.order + fmt, *values)

    @staticmethod
    def cn(text: str) -> bytes:
        """Return ``text`` as an STDF C*n field (length byte, Latin-1)."""
        raw = text.encode("latin-1")[:255]
        return bytes([len(raw)]) + raw

    def record(self, typ: int, sub: int, body: bytes) -> bytes:
        """Write one record; return its bytes."""
        data = self.pack("HBB", len(body), typ, sub) + body
        self.fh.write(data)
        return data

    # ---- records ----------------------------------------------------------------------------------
    def far(self):
        """Write the FAR (file attributes) record."""
        return self.record(0, 10, bytes([2 if self.order == "<" else 1, 4]))

    def atr(self, text: str = "waferscope test writer"):
        """Write an ATR (audit trail) record."""
        return self.record(0, 20, self.pack("I", 1_700_000_000) + self.cn(text))

    def mir(self, lot: str, part: str = "PART-A", job: str = "job"):
        """Write the MIR (master information) record."""
        body = self.pack("IIBcccHc", 1_700_000_000, 1_700_000_100, 1, b"P", b" ", b" ", 65535, b" ")
        body += self.cn(lot) + self.cn(part) + self.cn("node1") + self.cn("TESTER") + self.cn(job) + self.cn("1")
        return self.record(1, 10, body)

    def sdr(self, sites: Iterable[int] = (1,)):
        """Write an SDR (site description) record."""
        sites = list(sites)
        body = self.pack("BBB", 1, 1, len(sites)) + bytes(sites) + self.cn("HANDLER") + self.cn("h1")
        return self.record(1, 80, body)

    def pmr(self, index: int, name: str):
        """Write a PMR (pin map) record."""
        body = self.pack("HHH", index, 0, 1) + self.cn(name) + self.cn(name) + self.pack("BB", 1, 1)
        return self.record(1, 60, body)

    def pgr(self, index: int, name: str, pins: Iterable[int]):
        """Write a PGR (pin group) record."""
        pins = list(pins)
        body = self.pack("H", index) + self.cn(name) + self.pack("H", len(pins)) + self.pack(f"{len(pins)}H", *pins)
        return self.record(1, 62, body)

    def wcr(self, pos_x: str = " ", pos_y: str = " ", flat: str = " ", die_wid: float = 0.0, die_ht: float = 0.0,
            units: int = 0, size: float = 200.0, center=(-32768, -32768)):
        """Write the WCR (wafer configuration) record."""
        body = self.pack("fffBchhcc", size, die_ht, die_wid, units, flat.encode(), center[0], center[1],
                         pos_x.encode(), pos_y.encode())
        return self.record(2, 30, body)

    def wir(self, wafer_id: str, head: int = 1):
        """Write a WIR (wafer information) record."""
        return self.record(2, 10, self.pack("BBI", head, 255, 1_700_000_200) + self.cn(wafer_id))

    def wrr(self, wafer_id: str, part_cnt: int, good_cnt: int, head: int = 1, retest_cnt: int = 0):
        """Write a WRR (wafer results) record."""
        body = self.pack("BBIIIIII", head, 255, 1_700_000_900, part_cnt, retest_cnt, 0, good_cnt, 0) + self.cn(wafer_id)
        return self.record(2, 20, body)

    def pir(self, head: int = 1, site: int = 1):
        """Write a PIR (part information) record."""
        return self.record(5, 10, self.pack("BB", head, site))

    def prr(self, x: int, y: int, hard_bin: int, soft_bin: int | None = None, part_flg: int | None = None,
            head: int = 1, site: int = 1, num_test: int = 10):
        """Part results; PART_FLG bit 3 set when the die failed (hard bin ≠ 1) unless given."""
        if part_flg is None:
            part_flg = 0 if hard_bin == 1 else 0x08
        body = self.pack("BBBHHHhhI", head, site, part_flg, num_test, hard_bin,
                         hard_bin if soft_bin is None else soft_bin, x, y, 12)
        body += self.cn(f"{x}_{y}") + self.cn("") + b"\x00"  # PART_ID, PART_TXT, empty PART_FIX
        return self.record(5, 20, body)

    def ptr(self, test_num: int, result: float, head: int = 1, site: int = 1, failed: bool = False,
            text: str | None = None, lo: float = 0.0, hi: float = 1.0, units: str = "V"):
        """Return a parametric result; with ``text`` the first-occurrence form carrying the limits and units."""
        body = self.pack("IBBBBf", test_num, head, site, 0x80 if failed else 0, 0, result)
        if text is not None:
            # ALARM_ID, OPT_FLAG (0x0E: RES_SCAL and limits valid, no spec limits), scales, limits, UNITS
            body += self.cn(text) + self.cn("") + self.pack("Bbbbff", 0x0E, 0, 0, 0, lo, hi) + self.cn(units)
        return self.record(15, 10, body)

    def mpr(self, test_num: int, results: Iterable[float], head: int = 1, site: int = 1):
        """Write an MPR (multiple-result parametric) record."""
        results = list(results)
        body = self.pack("IBBBBHH", test_num, head, site, 0, 0, 0, len(results))
        body += self.pack(f"{len(results)}f", *results)
        return self.record(15, 15, body)

    def ftr(self, test_num: int, head: int = 1, site: int = 1, failed: bool = False):
        """Write an FTR (functional test) record."""
        return self.record(15, 20, self.pack("IBBB", test_num, head, site, 0x80 if failed else 0))

    def dtr(self, text: str):
        """Write a DTR (datalog text) record."""
        return self.record(50, 30, self.cn(text))

    def gdr(self, *values: int):
        """Write a GDR (generic data) record of I*4 values."""
        body = self.pack("H", len(values)) + b"".join(bytes([6]) + self.pack("i", v) for v in values)  # 6 = I*4
        return self.record(50, 10, body)

    def tsr(self, test_num: int, name: str, execs: int, fails: int, head: int = 255, site: int = 0):
        """Write a TSR (test synopsis) record."""
        body = self.pack("BBcIIII", head, site, b"P", test_num, execs, fails, 0) + self.cn(name)
        return self.record(10, 30, body)

    def hbr(self, bin_num: int, count: int, pf: str, name: str = "", head: int = 255, site: int = 0):
        """Write an HBR (hardware bin) record."""
        return self.record(1, 40, self.pack("BBHIc", head, site, bin_num, count, pf.encode()) + self.cn(name))

    def sbr(self, bin_num: int, count: int, pf: str, name: str = "", head: int = 255, site: int = 0):
        """Write an SBR (software bin) record."""
        return self.record(1, 50, self.pack("BBHIc", head, site, bin_num, count, pf.encode()) + self.cn(name))

    def pcr(self, parts: int, good: int, retests: int = 0, head: int = 255, site: int = 0):
        """Write a PCR (part count) record."""
        return self.record(1, 30, self.pack("BBIIIII", head, site, parts, retests, 0, good, 0))

    def mrr(self):
        """Write the MRR (master results) record."""
        return self.record(1, 20, self.pack("Ic", 1_700_001_000, b" ") + self.cn("") + self.cn(""))


# ---- a production-size probe lot, written fast ------------------------------------------------------


def disc_dies(diameter: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the dies of a round wafer ``diameter`` dies across, in serpentine probe order."""
    r = (diameter - 1) / 2
    ys, xs = np.mgrid[:diameter, :diameter]
    xs = np.where(ys % 2 == 1, xs[:, ::-1], xs)  # odd rows are probed right to left
    on = (xs - r) ** 2 + (ys - r) ** 2 <= (r + 0.5) ** 2
    return (xs[on] - int(r)).astype(np.int16), (ys[on] - int(r)).astype(np.int16)


def _die_block_dtype(order: str, n_ptr: int, mpr_results: int) -> np.dtype:
    """One die as PIR, ``n_ptr`` short PTRs, one MPR, one PRR, as a packed numpy record."""
    fields = [("pir_h", order + "u2"), ("pir_t", "u1"), ("pir_s", "u1"), ("pir_head", "u1"), ("pir_site", "u1")]
    for k in range(n_ptr):
        fields += [(f"p{k}_h", order + "u2"), (f"p{k}_t", "u1"), (f"p{k}_s", "u1"), (f"p{k}_num", order + "u4"),
                   (f"p{k}_head", "u1"), (f"p{k}_site", "u1"), (f"p{k}_tf", "u1"), (f"p{k}_pf", "u1"),
                   (f"p{k}_res", order + "f4")]
    fields += [("m_h", order + "u2"), ("m_t", "u1"), ("m_s", "u1"), ("m_num", order + "u4"), ("m_head", "u1"),
               ("m_site", "u1"), ("m_tf", "u1"), ("m_pf", "u1"), ("m_icnt", order + "u2"), ("m_rcnt", order + "u2"),
               ("m_res", order + "f4", (mpr_results,))]
    fields += [("r_h", order + "u2"), ("r_t", "u1"), ("r_s", "u1"), ("head", "u1"), ("site", "u1"), ("flg", "u1"),
               ("ntest", order + "u2"), ("hbin", order + "u2"), ("sbin", order + "u2"), ("x", order + "i2"),
               ("y", order + "i2"), ("ttime", order + "u4"), ("pid", "u1"), ("ptxt", "u1"), ("pfix", "u1")]
    return np.dtype(fields)  # packed: numpy structured dtypes have no padding unless align=True


def die_blocks(x, y, hard_bins, rng: np.random.Generator, order: str = "<", n_ptr: int = 12,
               mpr_results: int = 4, part_flg=None) -> bytes:
    """Return the records of these dies (PIR, PTRs, MPR, PRR each), built as one numpy array.

    A fast path for large generated files. ``part_flg``: per die (default: bit 3 set where the
    bin is not 1).
    """
    n = len(x)
    dt = _die_block_dtype(order, n_ptr, mpr_results)
    a = np.zeros(n, dt)
    a["pir_h"], a["pir_t"], a["pir_s"], a["pir_head"], a["pir_site"] = 2, 5, 10, 1, 1
    results = rng.normal(0.5, 0.1, size=(n, n_ptr)).astype(np.float32)
    for k in range(n_ptr):
        a[f"p{k}_h"], a[f"p{k}_t"], a[f"p{k}_s"], a[f"p{k}_num"] = 12, 15, 10, 1000 + k
        a[f"p{k}_head"], a[f"p{k}_site"] = 1, 1
        a[f"p{k}_res"] = results[:, k]
    a["m_h"], a["m_t"], a["m_s"], a["m_num"], a["m_head"], a["m_site"] = 12 + 4 * mpr_results, 15, 15, 2000, 1, 1
    a["m_rcnt"] = mpr_results
    a["m_res"] = rng.normal(1.0, 0.05, size=(n, mpr_results)).astype(np.float32)
    hard_bins = np.asarray(hard_bins)
    a["r_h"], a["r_t"], a["r_s"], a["head"], a["site"] = 20, 5, 20, 1, 1
    a["flg"] = np.where(hard_bins == 1, 0, 0x08) if part_flg is None else part_flg
    a["ntest"], a["hbin"], a["sbin"], a["x"], a["y"] = n_ptr + 1, hard_bins, hard_bins, x, y
    a["ttime"] = 120
    return a.tobytes()


def write_probe_lot(fh: BinaryIO, n_wafers: int, diameter: int, seed: int = 0, order: str = "<", n_ptr: int = 12,
                    mpr_results: int = 4, reprobe_rate: float = 0.01, dtr_per_wafer: int = 3,
                    lot: str = "BENCHLOT", wcr: dict | None = None) -> dict:
    """Return a probe-test lot in the usual record order.

    FAR, ATR, MIR, SDR, PMR, PGR, WCR, then per wafer WIR, a first die with full PTRs,
    PIR/PTR…/MPR/PRR per die, re-probes of ``reprobe_rate`` of the dies at the end without a retest
    flag, DTRs, WRR; then TSR, HBR, SBR, PCR, MRR, streamed to ``fh`` one wafer at a time. Returns
    what was written per wafer: ``dies``, ``fails`` (final, last result wins), ``prrs``,
    ``reprobed``.
    """
    rng = np.random.default_rng(seed)
    w = StdfWriter(fh, order)
    w.far(), w.atr(), w.mir(lot), w.sdr((1,))
    for i in range(1, 5):
        w.pmr(i, f"P{i}")
    w.pgr(100, "ALL", range(1, 5))
    w.wcr(**({"pos_x": "R", "pos_y": "D", "flat": "D", "die_wid": 2.0, "die_ht": 1.5, "units": 3} | (wcr or {})))
    xs, ys = disc_dies(diameter)
    n = len(xs)
    info = {"dies": [], "fails": [], "prrs": [], "reprobed": []}
    total_parts = total_good = 0
    for wafer in range(1, n_wafers + 1):
        wafer_id = f"W{wafer:02d}"
        w.wir(wafer_id)
        for k in range(n_ptr):  # the first occurrence of each test carries its text, limits and units
            w.ptr(1000 + k, 0.5, text=f"test_{k}", lo=0.1, hi=0.9)
        bins = np.where(rng.random(n) < 0.08, rng.choice([3, 5, 7], size=n), 1)
        fh.write(die_blocks(xs, ys, bins, rng, order, n_ptr, mpr_results))
        again = np.flatnonzero(rng.random(n) < reprobe_rate)  # re-probed at the end, no retest flag
        rebins = np.where(rng.random(len(again)) < 0.5, 1, bins[again])
        if len(again):
            fh.write(die_blocks(xs[again], ys[again], rebins, rng, order, n_ptr, mpr_results))
        final = bins.copy()
        final[again] = rebins
        for k in range(dtr_per_wafer):
            w.dtr(f"wafer {wafer_id} note {k}: chuck temperature 25.0 C")
        prrs = n + len(again)
        good = int((final == 1).sum())
        w.wrr(wafer_id, prrs, good, retest_cnt=len(again))
        total_parts += prrs
        total_good += good
        info["dies"].append(n), info["fails"].append(n - good), info["prrs"].append(prrs)
        info["reprobed"].append(len(again))
    for k in range(n_ptr):
        w.tsr(1000 + k, f"test_{k}", total_parts, 0)
    for b, pf in ((1, "P"), (3, "F"), (5, "F"), (7, "F")):
        w.hbr(b, 0, pf, f"bin{b}")
        w.sbr(b, 0, pf, f"bin{b}")
    w.pcr(total_parts, total_good)
    w.mrr()
    return info
