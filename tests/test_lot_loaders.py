"""What the fab loaders keep for the lot views (waferscope.lots): every die's bin code
(``attrs["bins"]``, names in ``attrs["bin_names"]``), die-coordinate origins (``origin_row`` /
``origin_col``) and the start time, checked against what the fixture files say."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import fabfiles as ff
import stdffiles as sf
import waferscope.data as wd
from clitools import call
from waferscope import lots


def _codes(bins: np.ndarray) -> Counter:
    return Counter(int(v) for v in bins[bins >= 0].ravel())


def test_stdf_keeps_hard_and_soft_bins_origins_and_times(tmp_path):
    b1, b2 = ff.disc_bins(9, seed=1), ff.disc_bins(9, seed=2)
    path = ff.write(tmp_path / "lot.stdf", ff.stdf_bytes("L1", {"W1": b1, "W2": b2}, x0=-4, y0=2))
    ds = wd.load(path)
    for wid, b in (("L1-W1", b1), ("L1-W2", b2)):
        kept = ds.attrs["bins"][wid]
        # no WCR: x right, y down, so die (row r, column c) of the written array is stored at [r, c]
        assert np.array_equal(kept, np.where(b == 0, -1, b))
        assert np.array_equal(ds.attrs["soft_bins"][wid], kept)  # the writer repeats HARD_BIN as SOFT_BIN
    # the file's own counts: WRR PART_CNT - GOOD_CNT fail dies = what the Pareto counts per lot
    pareto = lots.bin_pareto(ds)
    fails = int((ds.meta["wrr_part_cnt"] - ds.meta["wrr_good_cnt"]).sum())
    assert pareto["dies"].sum() == fails
    assert dict(zip(pareto["bin"], pareto["dies"])) == {k: v for k, v in (_codes(b1) + _codes(b2)).items() if k > 1}
    # WIR START_T 1_700_000_200 / WRR FINISH_T 1_700_000_900 (seconds since 1970, UTC)
    assert set(ds.meta["start_time"]) == {pd.Timestamp(1_700_000_200, unit="s").strftime("%Y-%m-%dT%H:%M:%S")}
    assert set(ds.meta["finish_time"]) == {pd.Timestamp(1_700_000_900, unit="s").strftime("%Y-%m-%dT%H:%M:%S")}
    # y down: row coordinate = y, column = x; element [0, 0] is die (x0, y0)
    assert set(ds.meta["origin_row"]) == {2} and set(ds.meta["origin_col"]) == {-4}


def test_stdf_origins_align_wafers_of_different_extent_and_names_bins():
    # W2 covers only the dies (1..2, 1..2) of W1's grid: origins put them on the same cells
    w1 = sf.Wafer("W1", sf.grid_dies([".PF.", "PFFP", ".PP."]))
    w2 = sf.Wafer("W2", sf.grid_dies(["PF", "FP"], x0=1, y0=1))
    data, _ = sf.demo_lot([w1, w2], wcr=dict(pos_x="R", pos_y="U", flat="D"))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        ds = wd.load(ff.write(Path(d) / "demo.stdf", data))
    assert ds.attrs["bin_names"] == {1: "bin1", 5: "bin5"}  # HBR HBIN_NAM
    # y up: stored row 0 is the largest y, so origin_row = -max(y) and origin_col = min(x)
    assert ds.meta[["origin_row", "origin_col"]].values.tolist() == [[-2, 0], [-2, 1]]
    stack = lots.lot_stacks(ds)["DEMO"]
    assert stack.rule == "origin"
    # cell of die (x, y) holds W1's and W2's fails there: (1,1) F+P, (2,1) F+F, (1,2) P+F, (2,2) P+P
    assert stack.fails[stack.tested == 2].sum() == 4
    assert stack.fails.sum() == (ds.maps[0] == 2).sum() + (ds.maps[1] == 2).sum()
    p = lots.bin_pareto(ds)
    assert p[["bin", "bin_name", "dies"]].values.tolist() == [[5, "bin5", 5]]


def test_stdf_worst_retest_keeps_the_failing_results_bin(tmp_path):
    dies = [sf.Die(0, 0, 1), sf.Die(1, 0, 1)]
    reprobes = [sf.Die(0, 0, 7), sf.Die(1, 0, 1)]  # die (0, 0) fails its re-probe with bin 7
    data, _ = sf.demo_lot([sf.Wafer("W1", dies, reprobes=reprobes)])
    path = ff.write(tmp_path / "r.stdf", data)
    assert wd.load(path, retest="worst").attrs["bins"]["DEMO-W1"].tolist() == [[7, 1]]
    assert wd.load(path, retest="first").attrs["bins"]["DEMO-W1"].tolist() == [[1, 1]]


@pytest.mark.parametrize("fmt,orientation", [("g85", 0), ("g85", 90), ("e142", 0), ("e142", 180)])
def test_array_formats_keep_bin_codes_as_the_file_counts_them(tmp_path, fmt, orientation):
    b1, b2 = ff.disc_bins(9, seed=3), ff.disc_bins(9, seed=4)
    text = (ff.g85_text("L2", {"W1": b1, "W2": b2}, orientation=orientation) if fmt == "g85"
            else ff.e142_text("L2", {"W1": b1, "W2": b2}, orientation=orientation))
    ds = wd.load(ff.write(tmp_path / f"m.{fmt}.xml", text))
    for wid, b in (("L2-W1", b1), ("L2-W2", b2)):
        assert np.array_equal(ds.attrs["bins"][wid], np.where(b == 0, -1, b))  # turned with the map
    # the file's BinCount attributes (per wafer, per code) equal the codes kept
    stated = Counter()
    for element in re.findall(r"<Bin(?:Definition)? [^>]*>", text):
        code, count = re.search(r'BinCode="(\w+)"', element).group(1), re.search(r'BinCount="(\d+)"', element).group(1)
        stated[int(code)] += int(count)
    stated = +stated  # codes the file lists with count 0 are not kept
    kept = sum((_codes(v) for v in ds.attrs["bins"].values()), Counter())
    assert kept == stated
    assert ds.attrs["bin_names"][3] == "bin 3"
    pareto = lots.bin_pareto(ds)
    assert pareto["dies"].sum() == sum(int((m == 2).sum()) for m in ds.maps)


def test_g85_ascii_codes_are_counted_by_code_point(tmp_path):
    b = ff.disc_bins(9, seed=5)
    ds = wd.load(ff.write(tmp_path / "a.xml", ff.g85_text("L3", {"W1": b}, bin_type="Ascii")))
    kept = ds.attrs["bins"]["L3-W1"]
    want = np.vectorize(lambda v: ord(ff.ASCII_CODES[v]) if v else -1)(b)
    assert np.array_equal(kept, want)
    p = lots.bin_pareto(ds)
    assert set(p["bin"]) == {ord("X"), ord("Z")} and set(p["bin_name"]) == {"bin 3", "bin 7"}


def test_klarf_bins_are_defect_classes_with_origins_and_time(tmp_path):
    plan = [(x, y) for x in range(-2, 3) for y in range(-2, 3)]
    defects = {"W1": [(0, 0, 12), (0, 0, 40), (1, -2, 40)], "W2": [(2, 2, 12)]}
    text = ff.klarf_text("K1", defects, plan)
    ds = wd.load(ff.write(tmp_path / "k.klarf", text))
    # the file's ResultTimestamp 12-02-26 19:30:00 (mm-dd-yy)
    assert set(ds.meta["start_time"]) == {"2026-12-02T19:30:00"}
    # y up, mark down: origin_row = -max(YINDEX), origin_col = min(XINDEX)
    assert ds.meta[["origin_row", "origin_col"]].values.tolist() == [[-2, -2], [-2, -2]]
    b = ds.attrs["bins"]["K1-W1"]
    assert b[2, 2] == 12  # die (0, 0): its first failing defect's class
    assert b[4, 3] == 40  # die (1, -2): row = 2 - (-2) = 4, column = 1 - (-2) = 3
    assert (b >= 0).sum() == 2 and (ds.attrs["bins"]["K1-W2"] >= 0).sum() == 1
    p = lots.bin_pareto(ds)
    assert p[["bin", "dies"]].values.tolist() == [[12, 2], [40, 1]]  # the dies failing per class


def test_dielist_keeps_bins_origins_and_time(tmp_path):
    b1, b2 = ff.disc_bins(9, seed=6), ff.disc_bins(9, seed=7)
    text = ff.dielist_text({"L1": {"W1": b1}}, x0=10, y0=-3) + \
        ff.dielist_text({"L1": {"W2": b2[2:, 1:]}}, x0=11, y0=-3).split("\n", 1)[1]
    lines = text.strip().split("\n")
    text = "\n".join([lines[0] + ",test_time"] + [ln + f",2026-12-0{1 + ('W2' in ln)} 08:00" for ln in lines[1:]]) + "\n"
    ds = wd.load(ff.write(tmp_path / "d.csv", text))
    assert np.array_equal(ds.attrs["bins"]["L1-W1"], np.where(b1 == 0, -1, b1))
    assert ds.meta["start_time"].tolist() == ["2026-12-01 08:00", "2026-12-02 08:00"]
    # y up: origin_row = -(max y); W2 is b2 without its top two rows, one column to the right
    assert ds.meta[["origin_row", "origin_col"]].values.tolist() == [[-(-3 + 8), 10], [-(-3 + 6), 11]]
    stack = lots.lot_stacks(ds)["L1"]
    assert stack.rule == "origin" and stack.tested.max() == 2
    # the cell of die (x, y) holds both wafers' dies there
    assert stack.tested.sum() == (b1 > 0).sum() + (b2[2:, 1:] > 0).sum()
    counts = _codes(ds.attrs["bins"]["L1-W1"]) + _codes(ds.attrs["bins"]["L1-W2"])
    assert counts == _codes(np.where(b1 == 0, -1, b1)) + _codes(np.where(b2[2:, 1:] == 0, -1, b2[2:, 1:]))


def test_lots_command_on_a_multi_lot_stdf_set_writes_a_bin_pareto(tmp_path):
    files = [ff.write(tmp_path / f"lot{k}.stdf", ff.stdf_bytes(f"LOT{k}", {f"W{i}": ff.disc_bins(9, seed=10 * k + i)
                                                                          for i in range(3)})) for k in range(3)]
    out = tmp_path / "report"
    args = ["lots", "--out", out, "--no-predict", "--min-wafers", "1"]
    for f in files:
        args += ["--data", f]
    assert call(*args) == 0
    pareto = pd.read_csv(out / "pareto.csv")
    assert set(pareto["lot"]) == {"LOT0", "LOT1", "LOT2"}
    total = sum(int((ff.disc_bins(9, seed=10 * k + i) > 1).sum()) for k in range(3) for i in range(3))
    assert pareto["dies"].sum() == total
    assert (out / "pareto.png").is_file()


def test_lots_command_on_a_klarf_set_writes_a_pareto_of_defect_classes(tmp_path):
    plan = [(x, y) for x in range(-3, 4) for y in range(-3, 4)]
    sets = {"K1": {"W1": [(0, 0, 12), (1, 1, 40)], "W2": [(2, 2, 12)]}, "K2": {"W1": [(-1, 0, 40), (-2, 0, 40)]}}
    files = [ff.write(tmp_path / f"{lot}.klarf", ff.klarf_text(lot, wafers, plan)) for lot, wafers in sets.items()]
    out = tmp_path / "report"
    assert call("lots", "--out", out, "--no-predict", "--min-wafers", "1", "--data", files[0], "--data", files[1]) == 0
    pareto = pd.read_csv(out / "pareto.csv")
    assert pareto[["lot", "bin", "dies"]].values.tolist() == [["K1", 12, 2], ["K1", 40, 1], ["K2", 40, 2]]
