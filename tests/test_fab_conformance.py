"""Conformance corpus for the KLARF, SEMI G85, SEMI E142 and CSV die-list readers (issue #26).

Each case is a small file written here in the layout a real writer uses for one quirk (unindented
KLARF defect lists, unquoted ids, a wafer without a DefectList, single-``<Map>`` G85 files with
HexaDecimal rows and no separators or Rows/Columns, E142 without Substrates, CSV exports with
DIE_X/HBIN/PASS_FAIL columns, compressed files...), with the wafer, die and fail-die counts the
file itself states. One parametrised test checks all of them; the orientation tests put a known die
at a known position in each format's own convention and check where the stored map has it."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

import fabfiles as F
from clitools import invoke as run
from waferscope.data import load
from waferscope.data.limits import LoadLimits
from waferscope.data.load import sniff_format
from waferscope.data.render import die_aspect, montage_per_class
from waferscope.errors import DataError

PLAN = [(x, y) for y in range(3) for x in range(4) if (x, y) != (3, 2)]  # 11 inspected dies
DISC = F.sparse_disc(60, 0.015, seed=3)  # a 60×60 sort map with ~1.5 % fails, as in the G85 viewer sample
SMALL = F.disc_bins(9, seed=0)


def counts(bins: np.ndarray) -> tuple[int, int]:
    """(dies, fail dies) a file written from ``bins`` states (bin 1 passes)."""
    return int((bins > 0).sum()), int(((bins > 0) & (bins != 1)).sum())


def _csv(header: str, rows: list[str]) -> str:
    return "\n".join([header] + rows) + "\n"


def _klarf_plan_in_lot_header() -> str:
    """The plan and centre given once before the first WaferID, as some inspection tools write them."""
    text = F.klarf_text("L", {"W1": [(0, 0, 1)], "W2": []}, PLAN, plan_per_wafer=False)
    start = text.index("SampleTestPlan")
    end = text.index(";", start) + 2
    plan = text[start:end]
    text = text[:start] + text[end:]
    centre = "SampleCenterLocation 5.000000e+04 5.000000e+04;\n"
    text = text.replace(centre, "")
    first = text.index("WaferID")
    return text[:first] + centre + plan + text[first:]


def cases() -> dict:
    """name → (file name, content, load kwargs, wafers, dies, fail dies)."""
    d, f = counts(DISC)
    sd, sf = counts(SMALL)
    out = {
        # ---- KLARF --------------------------------------------------------------------------------
        "klarf_unindented_defect_list": ("a.000", F.klarf_text("L", {"W1": [(0, 0, 1), (2, 1, 4)]}, PLAN, indent=""),
                                         {}, 1, 11, 2),
        "klarf_unquoted_ids": ("a.klarf", F.klarf_text("LOT7", {"aWafer": [(1, 1, 1)]}, PLAN, quote_ids=False),
                               {}, 1, 11, 1),
        "klarf_second_wafer_without_defect_list": (
            "a.klarf", F.klarf_text("L", {"W1": [(0, 0, 1), (0, 0, 2)], "W2": None}, PLAN), {}, 2, 22, 1),
        "klarf_plan_given_once_for_the_lot": (
            "a.klarf", F.klarf_text("L", {"W1": [], "W2": [(3, 1, 1)], "W3": []}, PLAN, plan_per_wafer=False),
            {}, 3, 33, 1),
        "klarf_plan_and_centre_in_lot_header": ("a.klarf", _klarf_plan_in_lot_header(), {}, 2, 22, 1),
        "klarf_record_split_over_lines": (
            "a.klarf", F.klarf_text("L", {"W1": [(1, 0, 1)]}, PLAN).replace("DiePitch ", "DiePitch\n  "), {}, 1, 11, 1),
        "klarf_gzip": ("a.klarf.gz", F.compress(F.klarf_text("L", {"W1": [(1, 0, 1)]}, PLAN).encode(), "gzip"),
                       {}, 1, 11, 1),
        # ---- SEMI G85 ----------------------------------------------------------------------------
        "g85_single_map_hex_no_separators_no_rows_columns": (
            "m.xml", F.g85_text(None, {"P6AB36-01": DISC}, root="Map", bin_type="HexaDecimal", separated=False,
                                rows_columns=False, id_attr="WaferId", namespace='xmlns="http://www.semi.org"'),
            {}, 1, d, f),
        "g85_single_map_hex_no_separators_with_rows_columns": (
            "m.xml", F.g85_text("L", {"W1": DISC}, root="Map", bin_type="HexaDecimal", separated=False), {}, 1, d, f),
        "g85_maps_hex_separated": ("m.xml", F.g85_text("L", {"W1": DISC, "W2": SMALL}, bin_type="HexaDecimal"),
                                   {}, 2, d + sd, f + sf),
        "g85_ascii_no_separators": ("m.xml", F.g85_text("L", {"W1": DISC}, root="Map", bin_type="Ascii",
                                                        separated=False, rows_columns=False,
                                                        qualities={1: "Pass", 3: "Fail", 7: "Fail"}), {}, 1, d, f),
        "g85_integer2_no_separators": ("m.xml", F.g85_text("L", {"W1": SMALL}, bin_type="Integer2", separated=False,
                                                           rows_columns=False), {}, 1, sd, sf),
        "g85_decimal_no_separators_with_columns": (
            "m.xml", F.g85_text("L", {"W1": SMALL}, bin_type="Decimal", separated=False), {}, 1, sd, sf),
        "g85_no_lot_no_device_size": ("m.xml", F.g85_text(None, {"W1": SMALL}, root="Map", size=None), {}, 1, sd, sf),
        "g85_bzip2_without_suffix": ("m.bin", F.compress(F.g85_text("L", {"W1": SMALL}).encode(), "bzip2"),
                                     {}, 1, sd, sf),
        # ---- SEMI E142 ---------------------------------------------------------------------------
        "e142_without_substrates": ("e.xml", F.e142_text("L", {"W1": SMALL, "W2": SMALL}, substrates=False),
                                    {}, 2, 2 * sd, 2 * sf),
        "e142_hex_no_separators": ("e.xml", F.e142_text("L", {"W1": DISC}, bin_type="HexaDecimal"), {}, 1, d, f),
        "e142_upper_left_origin": ("e.xml", F.e142_text("L", {"W1": SMALL}, origin="UpperLeft", axis="DownRight"),
                                   {}, 1, sd, sf),
        "e142_xz": ("e.xml.xz", F.compress(F.e142_text("L", {"W1": SMALL}).encode(), "xz"), {}, 1, sd, sf),
        # ---- CSV die lists -----------------------------------------------------------------------
        "csv_upper_case_export_columns": (
            "d.csv", F.dielist_text({"L1": {"W1": SMALL, "W2": DISC}}, header="LOT_ID,WAFER_ID,DIE_X,DIE_Y,HARD_BIN"),
            {}, 2, sd + d, sf + f),
        "csv_hbin_lower_case": ("d.csv", F.dielist_text({"L1": {"W1": SMALL}}, header="lot,wafer,X,Y,hbin"),
                                {}, 1, sd, sf),
        "csv_hard_bin_wins_over_soft_bin": (
            "d.csv", _csv("WAFER,X,Y,SBIN,HBIN", ["1,0,0,1,1", "1,1,0,1,5", "1,2,0,9,1", "2,0,0,1,1"]), {}, 2, 4, 1),
        "csv_soft_bin_only": ("d.csv", _csv("X,Y,sbin", ["0,0,1", "1,0,4", "0,1,1"]), {}, 1, 3, 1),
        "csv_pass_fail_without_bin": (
            "d.csv", _csv("DIE_X,DIE_Y,PASS_FAIL", ["0,0,P", "1,0,F", "2,0,PASS", "0,1,FAIL", "1,1,1", "2,1,0"]),
            {}, 1, 6, 3),
        "csv_columns_option": ("d.csv", _csv("a,b,c,d", ["W1,0,0,1", "W1,1,0,2", "W2,0,0,1"]),
                               {"columns": {"wafer": "a", "x": "b", "y": "c", "bin": "d"}}, 2, 3, 1),
        "csv_columns_option_string": ("d.csv", _csv("col_a,col_b,sort", ["0,0,1", "1,0,2"]),
                                      {"columns": "x=col_a,y=col_b,bin=sort"}, 1, 2, 1),
        "csv_named_txt_read_through_columns": ("export.txt", _csv("COLX,ROWY,SORT", ["0,0,1", "1,0,5"]),
                                               {"columns": "x=COLX,y=ROWY,bin=SORT"}, 1, 2, 1),
        "csv_in_zip": ("d.zip", F.compress(F.dielist_text({"L": {"W1": SMALL}}).encode(), "zip", "dies.csv"),
                       {}, 1, sd, sf),
    }
    return out


CASES = cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_conformance_corpus_counts(tmp_path, case):
    name, content, kwargs, wafers, dies, fails = CASES[case]
    ds = load(F.write(tmp_path / name, content), **kwargs)
    assert len(ds) == wafers
    assert sum(int((m > 0).sum()) for m in ds.maps) == dies
    assert sum(int((m == 2).sum()) for m in ds.maps) == fails


def test_corpus_counts_are_what_the_files_state():
    # the fixtures themselves: the G85 disc is a realistic sparse-fail map (not the 23 % a mis-split gives)
    d, f = counts(DISC)
    assert 2000 < d < 3000 and 0.005 < f / d < 0.03
    text = F.g85_text(None, {"W": DISC}, root="Map", bin_type="HexaDecimal", separated=False, rows_columns=False)
    assert "Rows=" not in text and "LotId" not in text and text.count("<Row>") == 60


def test_g85_hex_rows_keep_their_width(tmp_path):
    path = F.write(tmp_path / "m.xml", F.g85_text(None, {"W": DISC}, root="Map", bin_type="HexaDecimal",
                                                  separated=False, rows_columns=False))
    m = load(path).maps[0]
    assert m.shape == (60, 60) and np.array_equal(m, F.states(DISC))


# ---- KLARF count cross-checks: a mismatch names the line, never a silent zero --------------------------------


def test_klarf_summary_count_mismatch_names_the_defect_list_line(tmp_path):
    text = F.klarf_text("L", {"W1": [(0, 0, 1), (1, 1, 1)]}, PLAN, summary_counts={"W1": 3})
    line = text.splitlines().index("DefectList") + 1
    with pytest.raises(DataError, match=rf"line {line}: wafer 'W1': the DefectList holds 2 defect rows, "
                                        r"the SummaryList \(line \d+\) counts 3"):
        load(F.write(tmp_path / "k.klarf", text))


def test_klarf_summary_counting_defects_without_a_defect_list_is_an_error(tmp_path):
    text = F.klarf_text("L", {"W1": [(0, 0, 1)]}, PLAN).replace("DefectList\n 1 ", "Junk\n 1 ")
    with pytest.raises(DataError, match=r"line \d+: wafer 'W1': the SummaryList counts 1 defects but the wafer "
                                        "has no DefectList"):
        load(F.write(tmp_path / "k.klarf", text))


def test_klarf_test_plan_count_mismatch(tmp_path):
    text = F.klarf_text("L", {"W1": []}, PLAN).replace(f"SampleTestPlan {len(PLAN)}", "SampleTestPlan 12")
    with pytest.raises(DataError, match=r"line \d+: SampleTestPlan says 12 dies but lists 11"):
        load(F.write(tmp_path / "k.klarf", text))


def test_klarf_unclosed_record_and_spec_count(tmp_path):
    good = F.klarf_text("L", {"W1": [(0, 0, 1)]}, PLAN)
    with pytest.raises(DataError, match=r"line \d+: the EndOfFile record has no closing ';'"):
        load(F.write(tmp_path / "a.klarf", good.replace("EndOfFile;", "EndOfFile")))
    with pytest.raises(DataError, match=r"DefectRecordSpec says 16 columns but names 17"):
        load(F.write(tmp_path / "b.klarf", good.replace("DefectRecordSpec 17", "DefectRecordSpec 16")))


def test_xml_errors_name_the_element_path(tmp_path):
    text = F.g85_text("L", {"W1": SMALL, "W2": SMALL})
    second = text.index("<Map ", text.index("<Map ") + 1)
    bad = text[:second] + re.sub(r"(<Row><!\[CDATA\[)\d+", r"\g<1>1Q1", text[second:], count=1)
    with pytest.raises(DataError, match=r"Maps/Map\[2\]/Device\[1\]/Data/Row\[1\], column 1: bin code '1Q1'"):
        load(F.write(tmp_path / "m.xml", bad))


# ---- orientation: a known die lands at a known array position -------------------------------------------------
# 3 columns × 2 rows of dies; the die at (x=2, y=1) in the file's own (y-up) view fails. Stored: notch down,
# front view, row 0 on top, so with the notch down in the file too it is the top-right element.


def _klarf_one_fail(tmp_path, mark: str, pitch=(10000.0, 5000.0)):
    plan = [(x, y) for y in range(2) for x in range(3)]
    return load(F.write(tmp_path / f"k{mark}.klarf", F.klarf_text("L", {"W1": [(2, 1, 1)]}, plan, mark=mark,
                                                                  pitch=pitch)))


@pytest.mark.parametrize("mark, shape, where", [("DOWN", (2, 3), (0, 2)), ("UP", (2, 3), (1, 0)),
                                                ("LEFT", (3, 2), (0, 0)), ("RIGHT", (3, 2), (2, 1))])
def test_klarf_orientation(tmp_path, mark, shape, where):
    ds = _klarf_one_fail(tmp_path, mark)
    m = ds.maps[0]
    assert m.shape == shape and m[where] == 2 and (m == 2).sum() == 1
    # non-square dies: the pitch follows the turn (a quarter turn swaps width and height)
    px, py = (10000.0, 5000.0) if mark in ("DOWN", "UP") else (5000.0, 10000.0)
    assert ds.meta.loc[0, "die_pitch_x"] == px and ds.meta.loc[0, "die_pitch_y"] == py
    assert die_aspect(ds.meta, 0) == py / px


FILE_ARRAY = np.array([[1, 1, 3], [1, 1, 1]])  # as written in the file: the fail is the first row's last code


@pytest.mark.parametrize("angle, shape, where", [(0, (2, 3), (0, 2)), (180, (2, 3), (1, 0)),
                                                 (90, (3, 2), (0, 0)), (270, (3, 2), (2, 1))])
def test_g85_orientation_rows_as_drawn_notch_at_the_angle(tmp_path, angle, shape, where):
    text = F.g85_text("L", {"W1": FILE_ARRAY}).replace('Orientation="0"', f'Orientation="{angle}"')
    m = load(F.write(tmp_path / "m.xml", text)).maps[0]
    assert m.shape == shape and m[where] == 2 and (m == 2).sum() == 1


@pytest.mark.parametrize("origin, axis, where", [("LowerLeft", "UpRight", (1, 2)), ("UpperLeft", "DownRight", (0, 2)),
                                                 ("LowerRight", "UpLeft", (1, 0)), ("UpperRight", "DownLeft", (0, 0))])
def test_e142_orientation_rows_from_the_origin(tmp_path, origin, axis, where):
    # write FILE_ARRAY's rows exactly as given (file_array would undo the axes): BinCode[1] = [1 1 3]
    text = F.e142_text("L", {"W1": FILE_ARRAY[::-1]}, origin="LowerLeft", axis="UpRight")
    text = text.replace('OriginLocation="LowerLeft" AxisDirection="UpRight"',
                        f'OriginLocation="{origin}" AxisDirection="{axis}"')
    assert text.split("<BinCode>", 1)[1].split("</BinCode>")[0] == "001 001 003"  # BinCode[1] holds the fail
    ds = load(F.write(tmp_path / "e.xml", text))
    m = ds.maps[0]
    assert m.shape == (2, 3) and m[where] == 2 and (m == 2).sum() == 1


def test_e142_die_pitch_and_orientation_angle(tmp_path):
    bins = np.array([[1, 3, 1], [1, 1, 1]])
    ds = load(F.write(tmp_path / "e.xml", F.e142_text("L", {"W1": bins}, orientation=90, device_size=(4.0, 2.0))))
    assert np.array_equal(ds.maps[0], F.states(bins))  # the writer turned it; the reader turns it back
    assert (ds.meta.loc[0, "die_pitch_x"], ds.meta.loc[0, "die_pitch_y"]) == (2.0, 4.0)  # swapped by the turn


def test_csv_orientation_y_up_and_y_axis_down(tmp_path):
    path = F.write(tmp_path / "d.csv", _csv("x,y,bin", [f"{x},{y},{3 if (x, y) == (2, 1) else 1}"
                                                       for y in range(2) for x in range(3)]))
    assert load(path).maps[0][0, 2] == 2
    assert load(path, columns={"y_axis": "down"}).maps[0][1, 2] == 2


def test_g85_die_size_becomes_the_pitch_and_show_draws_its_aspect(tmp_path):
    ds = load(F.write(tmp_path / "m.xml", F.g85_text("L", {"W1": SMALL}, size=(6, 3))))
    assert (ds.meta.loc[0, "die_pitch_x"], ds.meta.loc[0, "die_pitch_y"]) == (6.0, 3.0)
    assert die_aspect(ds.meta, 0) == 0.5
    out = montage_per_class(ds, tmp_path / "show.png", per_class=1)
    assert out.exists() and out.stat().st_size > 0


# ---- limits before allocation -----------------------------------------------------------------------------------


def test_hostile_csv_span_refused_before_the_grid_is_allocated(tmp_path):
    path = F.write(tmp_path / "h.csv", "lot,wafer,x,y,bin\nL,1,0,0,1\nL,1,4095,4095,1\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"max_dies") as exc:
            load(path, limits=LoadLimits(max_dies=100_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(exc.value).startswith(f"{path}: ")
    assert peak < 4 << 20  # a 4096×4096 grid would be 16 MB


@pytest.mark.parametrize("name, content, limits, message", [
    ("k.klarf", F.klarf_text("L", {"W1": [], "W2": [], "W3": []}, PLAN), LoadLimits(max_maps=2), "max_maps"),
    ("m.xml", F.g85_text("L", {"W1": DISC}), LoadLimits(max_side=50), "max_side"),
    ("e.xml", F.e142_text("L", {"W1": SMALL, "W2": SMALL}), LoadLimits(max_dies=100), "max_dies"),
    ("d.csv", F.dielist_text({"L": {str(i): SMALL for i in range(3)}}), LoadLimits(max_maps=2), "max_maps"),
])
def test_limits_each_format(tmp_path, name, content, limits, message):
    with pytest.raises(DataError, match=message):
        load(F.write(tmp_path / name, content), limits=limits)


def test_decompression_bomb_refused(tmp_path):
    text = F.dielist_text({"L": {"W1": SMALL}}) + "\n" * 2_000_000
    path = F.write(tmp_path / "d.csv.gz", F.compress(text.encode(), "gzip"))
    with pytest.raises(DataError, match="max_decompressed_bytes"):
        load(path, limits=LoadLimits(max_decompressed_bytes=100_000))


# ---- compressed input for every format ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zip"])
def test_compressed_binary_formats_are_inflated(tmp_path, kind):
    from waferscope.data.io_parquet import write_parquet

    ds = load(F.write(tmp_path / "d.csv", F.dielist_text({"L": {"W1": SMALL, "W2": DISC}})))
    pq = tmp_path / "x.parquet"
    write_parquet(ds, pq)
    npy = tmp_path / "x.npy"
    np.save(npy, np.stack([F.states(SMALL)] * 2))
    # a zip holding one .npy is an npz archive by definition, not a compressed .npy
    for src, fmt in ((pq, "parquet"),) + (((npy, "npy"),) if kind != "zip" else ()):
        packed = F.write(tmp_path / f"{src.name}.{kind}", F.compress(src.read_bytes(), kind, src.name))
        assert sniff_format(packed) == fmt
        back = load(packed)
        assert len(back) == 2 and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert all(np.array_equal(a, b) for a, b in zip(load(tmp_path / f"x.parquet.{kind}").maps, ds.maps))


def test_cli_columns_option_and_compressed_info(capsys, tmp_path):
    path = F.write(tmp_path / "d.csv.gz", F.compress(_csv("a,b,c", ["0,0,1", "1,0,2", "2,0,1"]).encode(), "gzip"))
    code, text, err = run(capsys, "data", "info", path, "--columns", "x=a,y=b,bin=c", "--json")
    assert code == 0, err
    code, _, err = run(capsys, "data", "info", path)
    assert code == 2 and "line 1: the header lacks column(s) x, y, bin" in err and "columns option" in err
    code, _, err = run(capsys, "data", "info", path, "--columns", "z=a")
    assert code == 2 and "unknown column role(s) z" in err


def test_cli_detect_score_reads_a_csv_export_with_columns(capsys, tmp_path):
    bins = F.disc_bins(30, seed=2)
    text = F.dielist_text({"L": {"W1": bins}}, header="LOTNAME,WF,COL_X,ROW_Y,SORT")
    path = F.write(tmp_path / "export.csv", text)
    out = tmp_path / "s.csv"
    code, _, err = run(capsys, "detect", "score", "--data", path, "--columns",
                       "lot=LOTNAME,wafer=WF,x=COL_X,y=ROW_Y,bin=SORT", "--out", out)
    assert code == 0, err
    assert out.read_text().splitlines()[1].startswith("L-W1,")
    code, _, err = run(capsys, "detect", "score", "--data", path, "--columns", "x=COL_X", "--engine", "dask",
                       "--out", tmp_path / "dask_out")
    assert code == 2 and "--columns" in err
