"""STDF files in the layout of the public demo lots (the ones pystdf, rust-stdf, STDF.RADAR and
stdflib ship), written with waferscope's own :class:`StdfWriter` for the STDF tests.

The demo lots are one probe lot: FAR, ATR, MIR, SDR, PMR/PGR (pin maps), WCR, then per wafer
WIR, per die PIR, PTR/MPR/FTR results, PRR; dies re-probed later in the same wafer with PART_FLG's
retest bits clear; DTR/GDR notes; WRR; and the summaries TSR, HBR, SBR, PCR, MRR at the end.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from waferscope.data.loaders.stdf_writer import StdfWriter


@dataclass
class Die:
    x: int
    y: int
    hard_bin: int = 1
    flags: int | None = None  # PART_FLG; None: bit 3 set when hard_bin != 1


@dataclass
class Wafer:
    wafer_id: str
    dies: list[Die]
    reprobes: list[Die] = field(default_factory=list)  # tested again at the end of the wafer
    wrr: bool = True
    part_cnt: int | None = None  # None: the number of PRRs written
    good_cnt: int | None = None  # None: PRRs that passed
    head: int = 1


def demo_lot(wafers: list[Wafer], order: str = "<", lot: str = "DEMO", wcr: dict | None = None,
             results: bool = True) -> tuple[bytes, list[tuple[int, str]]]:
    """(file bytes, [(offset, record name)] of every record written) — the offsets let tests check
    that errors name the right byte."""
    buf = io.BytesIO()
    w = StdfWriter(buf, order)
    index: list[tuple[int, str]] = []

    def rec(name: str, data_fn, *args, **kwargs):
        index.append((buf.tell(), name))
        data_fn(*args, **kwargs)

    rec("FAR", w.far)
    rec("ATR", w.atr)
    rec("MIR", w.mir, lot)
    rec("SDR", w.sdr, (1, 2))
    for i in (1, 2):
        rec("PMR", w.pmr, i, f"VDD{i}")
    rec("PGR", w.pgr, 100, "SUPPLIES", (1, 2))
    if wcr is not None:
        rec("WCR", w.wcr, **wcr)
    for wafer in wafers:
        rec("WIR", w.wir, wafer.wafer_id, head=wafer.head)
        prrs = good = 0
        for die in wafer.dies + wafer.reprobes:
            rec("PIR", w.pir, head=wafer.head)
            if results:
                rec("PTR", w.ptr, 100, 0.5, head=wafer.head, text="vdd_leak", lo=0.0, hi=1.0)
                rec("PTR", w.ptr, 101, 0.25, head=wafer.head)
                rec("MPR", w.mpr, 200, [0.1, 0.2, 0.3], head=wafer.head)
                rec("FTR", w.ftr, 300, head=wafer.head, failed=die.hard_bin != 1)
            rec("PRR", w.prr, die.x, die.y, die.hard_bin, part_flg=die.flags, head=wafer.head)
            prrs += 1
            passed = (die.flags if die.flags is not None else (0 if die.hard_bin == 1 else 8)) & 0x08 == 0
            good += passed
        rec("DTR", w.dtr, f"wafer {wafer.wafer_id} done")
        rec("GDR", w.gdr, 7, 11)
        if wafer.wrr:
            rec("WRR", w.wrr, wafer.wafer_id, prrs if wafer.part_cnt is None else wafer.part_cnt,
                good if wafer.good_cnt is None else wafer.good_cnt, head=wafer.head)
    rec("TSR", w.tsr, 100, "vdd_leak", 10, 0)
    for b, pf in ((1, "P"), (5, "F")):
        rec("HBR", w.hbr, b, 0, pf, f"bin{b}")
        rec("SBR", w.sbr, b, 0, pf, f"bin{b}")
    rec("PCR", w.pcr, 10, 8)
    rec("MRR", w.mrr)
    return buf.getvalue(), index


def grid_dies(rows: list[str], x0: int = 0, y0: int = 0) -> list[Die]:
    """Dies from a picture: ``"P"`` pass, ``"F"`` fail (bin 5), ``"."`` no die; character c of
    row r is die (x0 + c, y0 + r)."""
    dies = []
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch in "PF":
                dies.append(Die(x0 + c, y0 + r, 1 if ch == "P" else 5))
    return dies
