"""STDF V4: waferscope's streaming reader on files in the real demo-lot layout (tests/stdffiles.py),
both byte orders, compressed, re-probed, oriented by WCR, truncated; pystdf as the reference."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import warnings

import numpy as np
import pytest

import stdffiles as S
from clitools import invoke as run
from waferscope.data import load
from waferscope.data.compressed import peek
from waferscope.data.limits import LoadLimits
from waferscope.data.loaders.stdf import load_stdf, looks_like_stdf
from waferscope.data.loaders.stdf_writer import StdfWriter, write_probe_lot
from waferscope.errors import ConfigError, DataError

ORDERS = pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])

# A demo-lot wafer: 9 dies, 3 fail on the first touch-down; dies (2, 0) and (2, 1) are re-probed
# at the end without a retest flag ((2, 0) F→P, (2, 1) P→F), as testers routinely do.
PICTURE = [".PF.",
           "PPPF",
           "FPP."]


def demo_wafer(wafer_id="W01", **kwargs) -> S.Wafer:
    return S.Wafer(wafer_id, S.grid_dies(PICTURE), reprobes=[S.Die(2, 0, 1), S.Die(2, 1, 5)], **kwargs)


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@ORDERS
def test_demo_lot_layout_loads_with_the_counts_the_file_states(tmp_path, order):
    data, _ = S.demo_lot([demo_wafer()], order=order)
    assert data[4] == (2 if order == "<" else 1)  # CPU_TYPE
    ds = load(write(tmp_path, "demo.stdf", data))
    assert len(ds) == 1
    m = ds.maps[0]
    # last touch-down wins: (2, 0) passes now, (2, 1) fails now; row 0 = smallest y (no WCR)
    assert m.tolist() == [[0, 1, 1, 0],
                          [1, 1, 2, 2],
                          [2, 1, 1, 0]]
    row = ds.meta.iloc[0]
    assert (row["lot"], row["wafer_id"], row["id"]) == ("DEMO", "W01", "DEMO-W01")
    assert row["reprobed_dies"] == 2 and row["prr_count"] == 11 and row["wrr_part_cnt"] == 11
    assert row["count_check"] == ""  # PART_CNT counts the re-probes: agrees with the PRRs read
    assert (m > 0).sum() == 9 and (m == 2).sum() == 3


def test_retest_policies_and_flagged_retests(tmp_path):
    wafer = S.Wafer("W1", [S.Die(0, 0, 5), S.Die(1, 0, 1), S.Die(2, 0, 5)],
                    reprobes=[S.Die(0, 0, 1), S.Die(1, 0, 5),
                              S.Die(2, 0, 1, flags=0x02)])  # (2, 0) re-tested WITH PART_FLG bit 1
    path = write(tmp_path, "r.stdf", S.demo_lot([wafer])[0])
    assert load(path).maps[0].tolist() == [[1, 2, 1]]                     # last (default)
    assert load(path, retest="last").maps[0].tolist() == [[1, 2, 1]]
    assert load(path, retest="first").maps[0].tolist() == [[2, 1, 1]]     # flagged retest still replaces
    assert load(path, retest="worst").maps[0].tolist() == [[2, 2, 1]]
    assert load(path).meta.loc[0, "reprobed_dies"] == 3
    with pytest.raises(ConfigError, match="bad retest 'best': expected one of last, first, worst"):
        load(path, retest="best")


def _offset_of(index, name, nth=0):
    return [off for off, n in index if n == name][nth]


@ORDERS
def test_truncated_mpr_names_record_type_number_and_offset(tmp_path, order):
    data, index = S.demo_lot([demo_wafer()], order=order)
    mpr_at = _offset_of(index, "MPR", 3)
    number = [off for off, _ in index].index(mpr_at) + 1
    cut = data[:mpr_at + 9]  # header and 5 of the MPR's bytes
    with pytest.raises(DataError) as exc:
        load_stdf(write(tmp_path, "cut.stdf", cut))
    msg = str(exc.value)
    assert f"record {number:,} (MPR 15/15) at byte {mpr_at:,}: truncated: REC_LEN says" in msg, msg
    assert "5 remain in the file" in msg
    with pytest.raises(DataError, match=rf"record {number:,} at byte {mpr_at:,}: truncated record header \(3 of 4"):
        load_stdf(write(tmp_path, "cut2.stdf", data[:mpr_at + 3]))
    # NUL padding at the end (block-padded writers) is not a cut record
    assert len(load_stdf(write(tmp_path, "pad.stdf", data + bytes(7)))) == 1


def test_count_field_past_the_record_end_is_an_error_not_an_allocation(tmp_path):
    buf = io.BytesIO()
    w = StdfWriter(buf)
    w.far(), w.mir("L")
    wir_at = buf.tell()
    w.record(2, 10, w.pack("BBI", 1, 255, 0) + bytes([200]) + b"W1")  # WAFER_ID says 200 chars, 2 follow
    with pytest.raises(DataError, match=rf"record 3 \(WIR 2/10\) at byte {wir_at}: truncated: its WAFER_ID field "
                                        r"says 200 characters, 2 remain in the record"):
        load_stdf(write(tmp_path, "w.stdf", buf.getvalue()))


def test_wrr_count_mismatch_is_a_warning_in_metadata_not_an_error(tmp_path):
    wafers = [demo_wafer("W1"), demo_wafer("W2", part_cnt=99, good_cnt=3)]
    path = write(tmp_path, "m.stdf", S.demo_lot(wafers)[0])
    with pytest.warns(UserWarning, match="1 of 2 wafers: the WRR counts differ"):
        ds = load(path)
    assert ds.meta["count_check"].tolist() == ["", "WRR PART_CNT 99 vs 11 PRRs on 9 dies; "
                                                   "WRR GOOD_CNT 3 vs 6 passing dies"]
    assert np.array_equal(ds.maps[0], ds.maps[1])


def _expected_oriented(dies, pos_x, pos_y, flat):
    """Where each die must land, from the wafer's geometry (not from the loader's code): the die's
    position in the file's view (x to the right if POS_X is R, y up if POS_Y is U), that view
    turned until the flat is at the bottom, then rows counted from the top."""
    pts = []
    for d in dies:
        px = d.x if pos_x == "R" else -d.x
        py = d.y if pos_y == "U" else -d.y
        px, py = {"D": (px, py), "U": (-px, -py), "L": (-py, px), "R": (py, -px)}[flat]
        pts.append((px, py, 1 if d.hard_bin == 1 else 2))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    grid = np.zeros((max(ys) - min(ys) + 1, max(xs) - min(xs) + 1), np.uint8)
    for px, py, state in pts:
        grid[max(ys) - py, px - min(xs)] = state
    return grid


@pytest.mark.parametrize("pos_x", ["L", "R"])
@pytest.mark.parametrize("pos_y", ["U", "D"])
@pytest.mark.parametrize("flat", ["U", "D", "L", "R"])
def test_wcr_orientation_puts_a_known_die_where_a_viewer_draws_it(tmp_path, pos_x, pos_y, flat):
    # an asymmetric wafer: the fail die (3, 5) is the only one in its row and column
    dies = S.grid_dies(["PPP.", "PPPP", "PP..", "...F"], x0=0, y0=2)
    data, _ = S.demo_lot([S.Wafer("W1", dies)], wcr={"pos_x": pos_x, "pos_y": pos_y, "flat": flat,
                                                     "die_wid": 4.0, "die_ht": 2.0, "units": 3}, results=False)
    ds = load_stdf(write(tmp_path, "o.stdf", data))
    assert np.array_equal(ds.maps[0], _expected_oriented(dies, pos_x, pos_y, flat))
    quarter = flat in "LR"  # the map turned by 90°: its columns run along the die height
    assert (ds.meta.loc[0, "die_pitch_x"], ds.meta.loc[0, "die_pitch_y"]) == ((2.0, 4.0) if quarter else (4.0, 2.0))
    assert ds.meta.loc[0, "orientation"] == f"POS_X={pos_x} POS_Y={pos_y} WF_FLAT={flat}"


def test_blank_wcr_fields_use_the_documented_defaults_and_units_convert(tmp_path):
    dies = S.grid_dies(["PF", "P."])
    data, _ = S.demo_lot([S.Wafer("W1", dies)], wcr={"die_wid": 0.1, "die_ht": 0.05, "units": 1}, results=False)
    ds = load_stdf(write(tmp_path, "b.stdf", data))
    assert ds.maps[0].tolist() == [[1, 2], [1, 0]]  # x right, y down, flat down: as without a WCR
    assert ds.meta.loc[0, "orientation"].startswith("POS_X=R POS_Y=D WF_FLAT=D (POS_X blank→R")
    assert ds.meta.loc[0, "die_pitch_x"] == pytest.approx(2.54) and ds.meta.loc[0, "die_pitch_unit"] == "mm"


@pytest.mark.parametrize("codec", ["gzip", "bz2"])
def test_compressed_stdf_reads_the_same(tmp_path, codec):
    data, _ = S.demo_lot([demo_wafer("W1"), demo_wafer("W2")])
    plain = load_stdf(write(tmp_path, "p.stdf", data))
    packed = gzip.compress(data) if codec == "gzip" else bz2.compress(data)
    path = write(tmp_path, f"p.stdf.{'gz' if codec == 'gzip' else 'bz2'}", packed)
    assert looks_like_stdf(peek(path, 8))  # what load()'s sniffing sees through the compression
    ds = load_stdf(path)
    assert len(ds) == 2 and all(np.array_equal(a, b) for a, b in zip(ds.maps, plain.maps))
    # an error inside the compressed stream names the decompressed offset and the record number
    data2, index = S.demo_lot([demo_wafer("W1")])
    at = _offset_of(index, "PRR", 2)
    cut = gzip.compress(data2[:at + 6])
    with pytest.raises(DataError, match=rf"record {[o for o, _ in index].index(at) + 1} \(PRR 5/20\) at byte {at:,}"):
        load_stdf(write(tmp_path, "cut.stdf.gz", cut))


def test_multi_wafer_multi_head_and_a_wafer_cut_short(tmp_path):
    w1, w2 = demo_wafer("W1", head=1), demo_wafer("W2", head=2)
    w3 = S.Wafer("W3", S.grid_dies(["PF"]), wrr=False)  # the run stopped before its WRR
    ds = load_stdf(write(tmp_path, "mw.stdf", S.demo_lot([w1, w2, w3])[0]))
    assert ds.meta["wafer_id"].tolist() == ["W1", "W2", "W3"] and ds.meta["wafer_index"].tolist() == [1, 2, 3]
    assert ds.maps[2].tolist() == [[1, 2]] and ds.meta.loc[2, "count_check"] == "no WRR (run cut short)"


def test_file_without_wafer_records_is_one_map_and_final_test_is_a_clear_error(tmp_path):
    buf = io.BytesIO()
    w = StdfWriter(buf)
    w.far(), w.mir("FT"), w.pir(), w.prr(0, 0, 1), w.pir(), w.prr(1, 0, 5), w.mrr()
    ds = load_stdf(write(tmp_path, "nowir.stdf", buf.getvalue()))
    assert len(ds) == 1 and ds.maps[0].tolist() == [[1, 2]] and ds.meta.loc[0, "id"] == "FT"
    buf = io.BytesIO()
    w = StdfWriter(buf)
    w.far(), w.mir("FT"), w.pir(), w.prr(-32768, -32768, 1)
    with pytest.raises(DataError, match=r"record 4 \(PRR 5/20\) at byte \d+: the die has no X_COORD/Y_COORD.*final test"):
        load_stdf(write(tmp_path, "ft.stdf", buf.getvalue()))


def test_limits_checked_per_wafer_before_the_grid(tmp_path):
    dies = [S.Die(0, 0), S.Die(50, 0)]
    path = write(tmp_path, "wide.stdf", S.demo_lot([S.Wafer("W1", dies)], results=False)[0])
    with pytest.raises(DataError, match=r"wafer 'W1' \(opened by record \d+ \(WIR 2/10\) at byte \d+\): 1×51, more "
                                        r"than the limit of 40 rows or columns"):
        load_stdf(path, limits=LoadLimits(max_side=40))
    two = write(tmp_path, "two.stdf", S.demo_lot([demo_wafer("A"), demo_wafer("B")], results=False)[0])
    with pytest.raises(DataError, match=r"2 wafers, more than the limit of 1"):
        load_stdf(two, limits=LoadLimits(max_maps=1))
    with pytest.raises(DataError, match=r"more than 5 dies in the file \(max_dies\)"):
        load_stdf(two, limits=LoadLimits(max_dies=5))


@ORDERS
def test_same_wafers_dies_and_bins_as_pystdf(tmp_path, order):
    """pystdf (the kept reference reader) decodes every record; our reader must agree with it on
    the wafers, the dies and each die's bin, re-probes included."""
    from pystdf import V4
    from pystdf.IO import Parser

    path = tmp_path / "ref.stdf"
    with open(path, "wb") as fh:
        # ~250 kB: more than two of the reader's minimum chunks, so records straddle refills
        info = write_probe_lot(fh, n_wafers=3, diameter=31, seed=3, order=order, n_ptr=3, reprobe_rate=0.1,
                               dtr_per_wafer=1)
    assert path.stat().st_size > 200_000

    class Sink:
        def __init__(self):
            self.wafers = []

        def after_send(self, source, data):
            rec, fields = data
            values = dict(zip(rec.fieldNames, fields))
            name = type(rec).__name__
            if name == "Wir":
                self.wafers.append((values["WAFER_ID"], {}, {}))
            elif name == "Prr":
                _, dies, touches = self.wafers[-1]
                key = (values["X_COORD"], values["Y_COORD"])
                touches[key] = touches.get(key, 0) + 1
                dies[key] = values["HARD_BIN"]  # no retest flags: the last one wins

    sink = Sink()
    with open(path, "rb") as fh, warnings.catch_warnings():
        parser = Parser(inp=fh, recTypes=V4.records)
        parser.addSink(sink)
        parser.parse()
    ours = load_stdf(path, pass_bins="1")
    from waferscope.data.loaders.stdf_reader import StdfStream
    with open(path, "rb") as fh:  # the smallest chunk the reader takes: many refills, records across them
        stream = StdfStream(fh, path, chunk=1)
        prr_offsets = [off for off, typ, sub, _ in stream.records({(5, 20)})]
    assert len(prr_offsets) == sum(info["prrs"]) and stream.bytes_read == path.stat().st_size
    cut = tmp_path / "cut.stdf"  # cut inside a PRR past the first chunks: named by its own offset
    cut.write_bytes(path.read_bytes()[:prr_offsets[-5] + 10])
    with pytest.raises(DataError, match=rf"\(PRR 5/20\) at byte {prr_offsets[-5]:,}: truncated: REC_LEN says 20 bytes, 6 remain"):
        load_stdf(cut)
    assert ours.meta["wafer_id"].tolist() == [w[0] for w in sink.wafers] == ["W01", "W02", "W03"]
    for m, (wafer_id, dies, touches), row in zip(ours.maps, sink.wafers, ours.meta.itertuples()):
        xs, ys = [k[0] for k in dies], [k[1] for k in dies]
        ref = np.zeros((max(ys) - min(ys) + 1, max(xs) - min(xs) + 1), np.uint8)
        for (x, y), b in dies.items():
            ref[y - min(ys), x - min(xs)] = 1 if b == 1 else 2
        assert np.array_equal(m, ref), wafer_id
        assert row.reprobed_dies == sum(n > 1 for n in touches.values()) > 0
        assert row.prr_count == sum(touches.values())
    assert [int((m > 0).sum()) for m in ours.maps] == info["dies"]
    assert [int((m == 2).sum()) for m in ours.maps] == info["fails"]


def test_cli_info_reports_reprobed_dies_and_retest_option(capsys, tmp_path):
    path = write(tmp_path, "demo.stdf", S.demo_lot([demo_wafer()])[0])
    code, out, err = run(capsys, "data", "info", path)
    assert code == 0, err
    assert "re-probed dies (tested more than once, last result kept): 2 (DEMO-W01 2)" in out
    code, out, err = run(capsys, "data", "info", path, "--json", "--retest", "first")
    summary = json.loads(out)
    assert code == 0 and summary["reprobed_dies"]["total"] == 2 and summary["reprobed_dies"]["retest"] == "first"
    code, out, err = run(capsys, "data", "info", path, "--retest", "best")
    assert code == 2 and err.strip().startswith("error: bad retest 'best'")


def test_classify_and_detect_take_the_retest_option(capsys, tmp_path):
    path = write(tmp_path, "demo.stdf", S.demo_lot([demo_wafer()], results=False)[0])
    for command in ("classify predict", "detect score"):
        code, _, err = run(capsys, *command.split(), "--data", path, "--retest", "worst", "--out", tmp_path / "o.csv")
        assert code == 0, err
        code, _, err = run(capsys, *command.split(), "--data", path, "--retest", "no", "--out", tmp_path / "x.csv")
        assert code == 2 and "bad retest 'no'" in err and not (tmp_path / "x.csv").exists(), command
