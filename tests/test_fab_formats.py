"""Fab wafer-map formats in data.load: STDF V4, SEMI E142, SEMI G85, KLARF 1.2 and a CSV die list.

Every file is written in its format's real layout by tests/fabfiles.py (STDF as packed binary
records), read back through ``load``, and compared with the die grid it was written from."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest

import fabfiles as F
from clitools import invoke as run
from waferscope.data import load
from waferscope.data.io_parquet import read_parquet
from waferscope.data.load import sniff_format
from waferscope.data.loaders.fabcommon import BinMapping, parse_bin_mapping
from waferscope.errors import DataError

B1, B2 = F.disc_bins(9, seed=0), F.disc_bins(11, seed=1)


def two_wafer_file(tmp_path, fmt: str):
    """(path, expected bins per wafer) of a two-wafer file in ``fmt``."""
    if fmt == "stdf":
        return F.write(tmp_path / "lot.stdf", F.stdf_bytes("LOT1", {"W01": B1, "W02": B2})), [B1, B2]
    if fmt == "dielist":
        return F.write(tmp_path / "dies.csv", F.dielist_text({"LOT1": {"W01": B1, "W02": B2}})), [B1, B2]
    if fmt == "g85":
        return F.write(tmp_path / "map.xml", F.g85_text("LOT1", {"W01": B1, "W02": B2})), [B1, B2]
    b2 = F.disc_bins(9, seed=5)  # E142 wafers share one layout: same dimensions
    return F.write(tmp_path / "map.xml", F.e142_text("LOT1", {"W01": B1, "W02": b2})), [B1, b2]


# ---- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["stdf", "dielist", "g85", "e142"])
def test_round_trip_same_die_grid_and_metadata(tmp_path, fmt):
    path, bins = two_wafer_file(tmp_path, fmt)
    assert sniff_format(path) == fmt
    ds = load(path)
    assert len(ds) == 2 and ds.kind == "wafer"
    for got, want in zip(ds.maps, bins):
        assert got.dtype == np.uint8 and np.array_equal(got, F.states(want))
    assert ds.meta["lot"].tolist() == ["LOT1", "LOT1"]
    assert ds.meta["wafer_id"].tolist() == ["W01", "W02"]
    assert ds.meta["wafer_index"].tolist() == [1, 2]
    assert ds.meta["id"].tolist() == ["LOT1-W01", "LOT1-W02"]
    assert set(ds.meta["source"]) == {path.name}


@pytest.mark.parametrize("fmt", ["stdf", "dielist", "g85", "e142"])
def test_pass_bins_option_remaps_and_strict_mapping_rejects_unknown_bins(tmp_path, fmt):
    path, bins = two_wafer_file(tmp_path, fmt)
    ds = load(path, pass_bins="1,3")
    assert np.array_equal(ds.maps[0], F.states(bins[0], pass_bins=(1, 3)))
    strict = load(path, pass_bins="1/3,7")  # every bin in the file is listed: same as the default
    assert np.array_equal(strict.maps[0], F.states(bins[0]))
    with pytest.raises(DataError, match=r"bin 7 is in neither the pass nor the fail bins of the strict mapping 1/3") as exc:
        load(path, pass_bins="1/3")
    assert str(exc.value).startswith(str(path))


def test_dielist_many_lots_and_offsets_map_min_xy_to_zero(tmp_path):
    path = F.write(tmp_path / "d.csv", F.dielist_text({"A": {"1": B1}, "B": {"1": B2, "2": B1}}, x0=-50, y0=200))
    ds = load(path)
    assert ds.meta["id"].tolist() == ["A-1", "B-1", "B-2"] and ds.meta["lot"].tolist() == ["A", "B", "B"]
    assert [m.shape for m in ds.maps] == [B1.shape, B2.shape, B1.shape]
    assert np.array_equal(ds.maps[1], F.states(B2))


def test_dielist_orientation_y_grows_upwards(tmp_path):
    # changed deliberately: the old reader put the smallest y on top (upside down against probers'
    # y-up die coordinates); now y grows upwards unless y_axis=down says otherwise
    path = F.write(tmp_path / "d.csv", "lot,wafer,x,y,bin\nL,1,5,7,1\nL,1,6,8,2\n")
    assert load(path).maps[0].tolist() == [[0, 2], [1, 0]]  # (6,8) top-right, (5,7) bottom-left
    assert load(path, columns={"y_axis": "down"}).maps[0].tolist() == [[1, 0], [0, 2]]


def test_dielist_header_any_order_extra_columns_bom(tmp_path):
    path = F.write(tmp_path / "d.csv", "\ufeffBin,X,Y,Wafer,Lot,test_time\n1,0,0,W1,L,3\n4,1,0,W1,L,3\n")
    assert sniff_format(path) == "dielist"
    assert load(path).maps[0].tolist() == [[1, 2]]


def test_stdf_default_uses_part_flag_verdict_and_retests_replace(tmp_path):
    data = [F.far(), F.mir("LOTX"), F.wir("7"),
            F.pir(), F.prr(0, 0, hard_bin=5, part_flg=0x00),       # bin 5 but the tester says passed
            F.pir(), F.prr(1, 0, hard_bin=1, part_flg=0x08),       # bin 1 but failed
            F.pir(), F.prr(2, 0, hard_bin=1, part_flg=0x10),       # verdict invalid → HARD_BIN 1 passes
            F.pir(), F.prr(3, 0, hard_bin=2, part_flg=0x08),
            F.pir(), F.prr(3, 0, hard_bin=1, part_flg=0x01),       # retest of (3, 0): now passes
            F.wrr("7", 5, 3), F.mrr()]
    path = F.write(tmp_path / "t.std", b"".join(data))
    ds = load(path)
    assert ds.maps[0].tolist() == [[1, 2, 1, 1]]
    assert ds.meta.loc[0, "lot"] == "LOTX" and ds.meta.loc[0, "wafer_index"] == 7
    assert load(path, pass_bins="1").maps[0].tolist() == [[2, 1, 1, 1]]  # explicit bins: HARD_BIN decides


def test_stdf_wafer_without_wrr_is_kept_and_unknown_records_skipped(tmp_path):
    unknown = F.stdf_record(50, 30, b"free text")  # a GDR-like record the loader does not use
    data = [F.far(), F.mir("L"), unknown, F.wir("W1"), F.pir(), F.prr(0, 0, 1), F.pir(), F.prr(0, 1, 9)]
    ds = load(F.write(tmp_path / "cut.stdf", b"".join(data)))
    assert ds.maps[0].tolist() == [[1], [2]]


def test_stdf_detected_without_suffix_and_other_versions_rejected_clearly(tmp_path):
    path = F.write(tmp_path / "noext", F.stdf_bytes("L", {"W1": B1}))
    assert sniff_format(path) == "stdf" and len(load(path)) == 1
    v3 = F.write(tmp_path / "v3.stdf", struct.pack("<HBBBB", 2, 0, 10, 2, 3))
    with pytest.raises(DataError, match=r"record 1 \(FAR 0/10\) at byte 0: STDF_VER is 3"):
        load(v3)


def test_stdf_big_endian_file_reads_the_same(tmp_path):
    with F.big_endian():
        data = F.stdf_bytes("LOT1", {"W01": B1})
    assert data[:4] == b"\x00\x02\x00\x0a" and data[4] == 1  # REC_LEN big-endian, CPU_TYPE 1
    ds = load(F.write(tmp_path / "be.stdf", data))
    assert np.array_equal(ds.maps[0], F.states(B1)) and ds.meta.loc[0, "id"] == "LOT1-W01"


def test_e142_fixed_width_hex_and_integer2_codes(tmp_path):
    for bin_type in ("HexaDecimal", "Integer2"):
        path = F.write(tmp_path / f"{bin_type}.xml", F.e142_text("L", {"W1": B1}, bin_type=bin_type))
        assert np.array_equal(load(path).maps[0], F.states(B1)), bin_type


def test_e142_and_g85_use_the_files_bin_quality_by_default(tmp_path):
    qualities = {1: "Pass", 3: "Pass", 7: "Fail"}
    for name, text in (("g.xml", F.g85_text("L", {"W1": B1}, qualities=qualities)),
                       ("e.xml", F.e142_text("L", {"W1": B1}, qualities=qualities))):
        ds = load(F.write(tmp_path / name, text))
        assert np.array_equal(ds.maps[0], F.states(B1, pass_bins=(1, 3))), name


def test_e142_other_qualities_are_no_die(tmp_path):
    text = F.e142_text("L", {"W1": B1}, qualities={1: "Pass", 3: "Skip", 7: "Fail"})
    got = load(F.write(tmp_path / "e.xml", text)).maps[0]
    want = F.states(B1)
    want[B1 == 3] = 0
    assert np.array_equal(got, want)


def test_g85_written_by_the_g85_library_reads_back(tmp_path):
    from g85.main import Device, Map
    from g85.write import write

    codes = np.where(B1 == 0, 255, B1)
    device = Device(BinType="Decimal", NullBin=255, LotId="LOTG", bin_pass={1: True, 3: False, 7: False},
                    map=codes.tolist())
    path = tmp_path / "lib.xml"
    with open(path, "wb") as fh:  # ElementTree writes bytes when no encoding is given
        write([Map(SubstrateId="W05", devices=[device])], fh)
    ds = load(path)
    assert np.array_equal(ds.maps[0], F.states(B1)) and ds.meta.loc[0, "id"] == "LOTG-W05"


# ---- KLARF ------------------------------------------------------------------------------------------------

PLAN = [(x, y) for y in range(3) for x in range(4) if (x, y) != (3, 2)]  # 3×4 dies, one corner not inspected


def test_klarf_sample_plan_pass_defects_fail_rest_no_die(tmp_path):
    wafers = {"W01": [(0, 0, 1), (0, 0, 4), (2, 1, 1)], "W02": []}
    path = F.write(tmp_path / "insp.000", F.klarf_text("LOTK", wafers, PLAN))
    assert sniff_format(path) == "klarf"
    ds = load(path)
    # YINDEX grows upwards (notch DOWN): y = 2 is the top row (changed deliberately: the old reader
    # drew KLARF maps upside down)
    assert ds.maps[0].tolist() == [[1, 1, 1, 0], [1, 1, 2, 1], [2, 1, 1, 1]]
    assert ds.maps[1].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert ds.meta["id"].tolist() == ["LOTK-W01", "LOTK-W02"] and ds.meta["slot"].tolist() == [1, 2]


def test_klarf_pass_bins_apply_to_defect_classes(tmp_path):
    path = F.write(tmp_path / "k.klarf", F.klarf_text("L", {"W1": [(0, 0, 1), (1, 0, 9)]}, PLAN))
    assert load(path).maps[0][-1].tolist() == [2, 2, 1, 1]  # default: every defect fails its die (y = 0: bottom row)
    assert load(path, pass_bins="9").maps[0][-1].tolist() == [2, 1, 1, 1]  # class 9 = nuisance: die passes
    with pytest.raises(DataError, match=r"wafer 'W1': defect 2 \(CLASSNUMBER\): bin 9 is in neither"):
        load(path, pass_bins="0/1")


def test_klarf_without_plan_places_dies_on_the_wafer_disc(tmp_path):
    path = F.write(tmp_path / "k.klarf", F.klarf_text("L", {"W1": [(5, 5, 1)]}, plan=None, pitch=10000,
                                                        diameter_mm=100, centre=50000))
    m = load(path).maps[0]
    # die (5, 5): column 5, and row 9 - 5 = 4 because YINDEX grows upwards
    assert m.shape == (10, 10) and m[4, 5] == 2 and m[0, 0] == 0 and (m == 1).sum() + 1 == (m > 0).sum()
    yy, xx = np.mgrid[:10, :10]
    on = (xx + 0.5 - 5) ** 2 + (9 - yy + 0.5 - 5) ** 2 <= 25  # die centres within the 50 mm radius
    assert np.array_equal(m > 0, on)


# ---- bin-mapping option -------------------------------------------------------------------------------------


def test_parse_bin_mapping_forms():
    assert parse_bin_mapping(None) is None
    assert parse_bin_mapping("1,2,5-7") == BinMapping(frozenset({1, 2, 5, 6, 7}))
    assert parse_bin_mapping("1/2-4").fail_bins == frozenset({2, 3, 4})
    assert parse_bin_mapping([1, 2]) == parse_bin_mapping("1-2")
    assert parse_bin_mapping(3).pass_bins == frozenset({3})
    for bad in ("a", "1/2/3", "/2", "5-3", "1,2/2"):
        with pytest.raises(DataError, match="bad pass_bins"):
            parse_bin_mapping(bad)


# ---- bad files: one DataError naming the file and the line / record -------------------------------------------

BAD_CSV = {
    "missing_column": ("lot,wafer,x,bin\nL,1,0,1\n", r"line 1: the header lacks column\(s\) y"),
    "non_numeric_bin": ("lot,wafer,x,y,bin\nL,1,0,0,1\nL,1,1,0,x\n", r"line 3: bin 'x' is not a number"),
    "non_numeric_x": ("lot,wafer,x,y,bin\nL,1,1.5,0,1\n", r"line 2: x '1.5' is not a number"),
    "empty_y": ("lot,wafer,x,y,bin\nL,1,0,,1\n", r"line 2: y is empty"),
    "short_row": ("lot,wafer,x,y,bin\nL,1,0\n", r"line 2: 3 fields, the header has 5"),
    "duplicate_die": ("lot,wafer,x,y,bin\nL,1,0,0,1\nL,2,0,0,1\nL,1,0,0,2\n",
                      r"line 4: wafer '1': die \(0, 0\) appears twice \(first at line 2\)"),
    "outside_grid": ("lot,wafer,x,y,bin\nL,1,0,0,1\nL,1,1,0,1\nL,1,30000,0,1\n",
                     r"line 4: wafer '1': die x coordinates span 0..30000.*die at \(30000, 0\) lies outside any wafer grid"),
    "no_rows": ("lot,wafer,x,y,bin\n", r"no die rows after the header"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_dielist(tmp_path, case):
    text, message = BAD_CSV[case]
    path = F.write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message) as exc:
        load(path)
    assert str(exc.value).startswith(f"{path}: ")


def _good_stdf(**kwargs) -> list[bytes]:
    return [F.far(), F.mir("L"), F.wir("W1"), F.pir(), F.prr(0, 0, 1), F.pir(), F.prr(1, 0, 2), F.wrr("W1", 2, 1), F.mrr()]


def _stdf_case(case: str) -> tuple[bytes, str]:
    recs = _good_stdf()
    if case == "truncated_record":
        data = b"".join(recs[:5])
        return data[:-7], r"record 5 \(PRR 5/20\) at byte \d+: truncated: REC_LEN says \d+ bytes, \d+ remain"
    if case == "truncated_header":
        return b"".join(recs[:5]) + b"\x10\x00", r"record 6 at byte \d+: truncated record header \(2 of 4 bytes"
    if case == "short_prr":  # a PRR whose REC_LEN ends before X_COORD: a record missing its fields
        short = F.stdf_record(5, 20, struct.pack("<BBBHHH", 1, 1, 0, 1, 1, 1))
        return b"".join(recs[:3] + [short]), r"record 4 \(PRR 5/20\) at byte \d+: the record ends before its X_COORD field"
    if case == "no_mir":
        return b"".join([recs[0]] + recs[2:]), r"record 2 \(WIR 2/10\) at byte 6: wafer before any MIR record"
    if case == "prr_outside_wafer":
        return b"".join(recs[:8] + [F.pir(), F.prr(0, 0, 1)]), r"record 10 \(PRR 5/20\) at byte \d+: die result outside a wafer"
    if case == "missing_coordinates":
        return b"".join(recs[:3] + [F.prr(-32768, 0, 1)]), r"record 4 \(PRR 5/20\) at byte \d+: the die has no X_COORD/Y_COORD"
    if case == "not_stdf":
        return b"\x02\x00\x00\x0a", r"not an STDF file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated_record", "truncated_header", "short_prr", "no_mir", "prr_outside_wafer",
                                  "missing_coordinates", "not_stdf"])
def test_bad_stdf(tmp_path, case):
    data, message = _stdf_case(case)
    path = F.write(tmp_path / "bad.stdf", data)
    with pytest.raises(DataError, match=message) as exc:
        load(path)
    assert str(exc.value).startswith(f"{path}: ")


def _bad_xml(case: str) -> tuple[str, str]:
    g85, e142 = F.g85_text("L", {"W1": B1}), F.e142_text("L", {"W1": B1})
    if case == "g85_truncated":
        return g85[: len(g85) // 2], r"not well-formed XML \(.*line \d+, column \d+\)"
    if case == "g85_short_row":
        return re.sub(r"(<Row><!\[CDATA\[)\d+ ", r"\g<1>", g85, count=1), \
            r"Maps/Map\[1\]/Device\[1\]/Data/Row\[1\]: 8 dies, expected 9 \(the header's column count\)"
    if case == "g85_rows_count":
        return g85.replace('Rows="9"', 'Rows="10"'), r"Maps/Map\[1\]/Device\[1\]/Data: 9 rows of bin codes, the header says 10"
    if case == "g85_no_bintype":
        return g85.replace('BinType="Decimal" ', ""), r"Maps/Map\[1\]/Device\[1\]: the Device lacks its BinType attribute"
    if case == "g85_bad_code":
        return re.sub(r"(<Row><!\[CDATA\[)\d+", r"\g<1>0x1", g85, count=1), \
            r"Maps/Map\[1\]/Device\[1\]/Data/Row\[1\], column 1: bin code '0x1' is not a Decimal code"
    if case == "e142_bad_code":
        return re.sub(r"(<BinCode>\d+ )\d+", r"\g<1>0Z1", e142, count=1), \
            (r"MapData/SubstrateMaps/SubstrateMap\[1\]/Overlay\[1\]/BinCodeMap\[1\]/BinCode\[1\], column 2: "
             r"bin code '0Z1' is not a Decimal code")
    if case == "e142_wide_row":
        return e142.replace("<BinCode>", "<BinCode>255 ", 1), r"BinCodeMap\[1\]/BinCode\[1\]: 10 dies, expected 9"
    if case == "e142_bad_axis":
        return e142.replace('AxisDirection="UpRight"', 'AxisDirection="Sideways"'), \
            r"MapData/SubstrateMaps/SubstrateMap\[1\]: AxisDirection 'sideways' is not UpRight"
    if case == "e142_no_bintype":
        return e142.replace('BinType="Decimal" ', ""), r"BinCodeMap\[1\]: no BinType attribute"
    if case == "xml_entity_bomb":
        return ('<?xml version="1.0"?><!DOCTYPE Maps [<!ENTITY a "aaaa">]><Maps>&a;</Maps>',
                r"refused unsafe XML")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["g85_truncated", "g85_short_row", "g85_rows_count", "g85_no_bintype", "g85_bad_code",
                                  "e142_bad_code", "e142_wide_row", "e142_bad_axis", "e142_no_bintype",
                                  "xml_entity_bomb"])
def test_bad_xml_maps(tmp_path, case):
    text, message = _bad_xml(case)
    path = F.write(tmp_path / "bad.xml", text)
    with pytest.raises(DataError, match=message) as exc:
        load(path)
    assert str(exc.value).startswith(f"{path}: ")


# the line of the one defect in _bad_klarf's good file (1-based)
DEFECT_LINE = F.klarf_text("L", {"W1": [(0, 0, 1)]}, PLAN).splitlines().index("DefectList") + 2


def _bad_klarf(case: str) -> tuple[str, str]:
    good = F.klarf_text("L", {"W1": [(0, 0, 1)]}, PLAN)
    if case == "no_die_pitch":  # needed only without a SampleTestPlan
        return F.klarf_text("L", {"W1": []}, None).replace("DiePitch", "#DiePitch"), \
            r"line \d+: wafer 'W1': no SampleTestPlan and no DiePitch line"
    if case == "non_numeric_index":
        return good.replace(" 1 1.250e+03 2.500e+03 0 0 ", " 1 1.250e+03 2.500e+03 a 0 "), \
            rf"line {DEFECT_LINE}: XINDEX: 'a' is not a number"
    if case == "defect_outside_plan":
        return F.klarf_text("L", {"W1": [(9, 9, 1)]}, PLAN), \
            r"wafer 'W1': defect 1: its die \(9, 9\) is outside the SampleTestPlan"
    if case == "duplicate_plan_die":
        return F.klarf_text("L", {"W1": []}, PLAN + [(0, 0)]), r"SampleTestPlan: die \(0, 0\) is listed twice"
    if case == "klarf_1_8":
        return 'Record FileRecord "1.8"\n{\n}\nEndOfFile;\n', r"line 1: only KLARF 1.1/1.2 files can be read"
    if case == "truncated_defect_line":
        return good.replace(" 1 1.250e+03 2.500e+03 0 0 5.0 5.0 25.0 5.0 1 1 0 0 0 0 0 0;", " 1 1.250e+03 2.500e+03 0;"), \
            rf"line {DEFECT_LINE}: DefectList row with 4 values, the DefectRecordSpec names 17 columns"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["no_die_pitch", "non_numeric_index", "defect_outside_plan", "duplicate_plan_die",
                                  "klarf_1_8", "truncated_defect_line"])
def test_bad_klarf(tmp_path, case):
    text, message = _bad_klarf(case)
    path = F.write(tmp_path / "bad.klarf", text)
    with pytest.raises(DataError, match=message) as exc:
        load(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_mislabelled_suffixes_say_what_the_file_is_not(tmp_path):
    for name, text, message in (("a.stdf", "hello", "not an STDF file"),
                                ("a.xml", "<Other/>", "neither MapData"),
                                ("a.csv", "a,b\n1,2\n", r"line 1: the header lacks column\(s\) x, y, bin")):
        with pytest.raises(DataError, match=message):
            load(F.write(tmp_path / name, text))


# ---- through the CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["stdf", "dielist", "g85", "e142", "klarf"])
def test_cli_import_and_info_for_each_format(capsys, tmp_path, fmt):
    if fmt == "klarf":
        path = F.write(tmp_path / "k.klarf", F.klarf_text("LOT1", {"W01": [(0, 0, 1)], "W02": []}, PLAN))
    else:
        path, _ = two_wafer_file(tmp_path, fmt)
    out = tmp_path / "x.parquet"
    code, _, err = run(capsys, "data", "import", path, "--out", out, "--pass-bins", "1,3")
    assert code == 0, err
    back, direct = read_parquet(out), load(path, pass_bins="1,3")
    assert all(np.array_equal(a, b) for a, b in zip(back.maps, direct.maps))
    assert back.meta["id"].tolist() == direct.meta["id"].tolist() and back.meta["lot"].tolist() == ["LOT1"] * 2
    assert back.meta["wafer_id"].tolist() == ["W01", "W02"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind
    code, text, err = run(capsys, "data", "info", path, "--json")
    assert code == 0 and json.loads(text)["count"] == 2


@pytest.mark.parametrize("name, content, message", [
    ("bad.csv", "lot,wafer,x,y,bin\nL,1,0,0,1\nL,1,1,0,x\n", "line 3: bin 'x' is not a number"),
    ("bad.stdf", b"".join(_good_stdf()[:5])[:-7], "record 5 (PRR 5/20) at byte 72: truncated"),
    ("bad.xml", F.g85_text("L", {"W1": B1}).replace('Rows="9"', 'Rows="4"'), "9 rows of bin codes, the header says 4"),
    ("bad.klarf", F.klarf_text("L", {"W1": [(9, 9, 1)]}, PLAN), "outside the SampleTestPlan"),
    ("e142.xml", F.e142_text("L", {"W1": B1}).replace('Dimension X="9"', 'Dimension X="8"'),
     "MapData/SubstrateMaps/SubstrateMap[1]/Overlay[1]/BinCodeMap[1]/BinCode[1]: 9 dies, expected 8 "
     "(the header's column count)"),
])
def test_cli_bad_file_is_one_error_line_exit_2(capsys, tmp_path, name, content, message):
    path = F.write(tmp_path / name, content)
    code, out, err = run(capsys, "data", "info", path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0], err


def test_cli_strict_pass_bins_error_and_failed_import_writes_nothing(capsys, tmp_path):
    path, _ = two_wafer_file(tmp_path, "stdf")
    out = tmp_path / "x.parquet"
    code, _, err = run(capsys, "data", "import", path, "--out", out, "--pass-bins", "1/3")
    assert code == 2 and "bin 7 is in neither the pass nor the fail bins" in err and not out.exists()
    code, _, err = run(capsys, "data", "info", path, "--pass-bins", "x")
    assert code == 2 and err.strip().splitlines() == ["error: bad pass_bins value 'x': expected bin numbers or "
                                                      "ranges like 1,2,5-7 (and optionally /FAIL-BINS for a strict mapping)"]


def test_classify_predict_and_detect_score_read_fab_files_with_pass_bins(capsys, tmp_path):
    path = F.write(tmp_path / "lot.stdf", F.stdf_bytes("LOT1", {"W01": F.disc_bins(30, 0), "W02": F.disc_bins(30, 1)}))
    for command, out in (("classify predict", "p.csv"), ("detect score", "s.csv")):
        code, _, err = run(capsys, *command.split(), "--data", path, "--pass-bins", "1,3", "--out", tmp_path / out)
        assert code == 0, err
        ids = [line.split(",")[0] for line in (tmp_path / out).read_text().splitlines()[1:]]
        assert ids == ["LOT1-W01", "LOT1-W02"], command
    code, _, err = run(capsys, "detect", "score", "--data", path, "--pass-bins", "1/3", "--out", tmp_path / "x.csv")
    assert code == 2 and err.startswith(f"error: {path}: record ") and not (tmp_path / "x.csv").exists()
