"""waferscope.lots and `waferscope lots`: every view against numbers worked out by hand on tiny lots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clitools import invoke
from waferscope import lots
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, DataError
from waferscope.lots.geometry import placements, zone_masks

FULL5 = np.ones((5, 5), np.uint8)


def _ds(maps, lots_, labels=None, **meta):
    return WaferDataset.from_maps(maps, labels, meta={"lot": lots_, **meta}, source="hand", name="hand")


@pytest.fixture
def three_wafers():
    """Lot A: two full 3×3 wafers and a 5-die cross; lot B: one 5×5 wafer. Hand counts in the tests."""
    a1 = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 1]], np.uint8)  # 8 pass, 1 fail
    a2 = np.array([[2, 1, 1], [1, 2, 1], [1, 1, 1]], np.uint8)  # 7 pass, 2 fail
    a3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # 5 pass
    b1 = FULL5.copy()
    b1[0, 0] = b1[2, 2] = b1[1, 3] = 2  # 22 pass, 3 fail
    return _ds([a1, a2, a3, b1], ["A", "A", "A", "B"], ["Center", "Center", "none", "Loc"])


# ---- summary ------------------------------------------------------------------------------------
def test_summary_by_hand(three_wafers):
    s = lots.lot_summary(three_wafers).set_index("lot")
    assert s.loc["A", ["wafers", "dies", "pass_dies", "fail_dies"]].tolist() == [3, 23, 20, 3]
    assert s.loc["A", "yield"] == pytest.approx(20 / 23)  # pooled dies, not the mean of wafer yields
    assert s.loc["A", "wafer_yield_min"] == pytest.approx(7 / 9)
    assert s.loc["A", "share_Center"] == pytest.approx(2 / 3) and s.loc["A", "share_none"] == pytest.approx(1 / 3)
    assert s.loc["A", "top_class"] == "Center" and s.loc["B", "top_class"] == "Loc"
    assert s.loc["B", "yield"] == pytest.approx(22 / 25)
    assert s.attrs["class_source"] == "label"
    assert "anomalous_share" not in s


def test_summary_takes_predictions_over_labels(three_wafers):
    pred = pd.DataFrame({"predicted": ["Scratch", "none", "none", "none"], "score": [1.0, 2.0, 3.0, 9.0],
                         "anomalous": [True, False, False, True]})
    s = lots.lot_summary(three_wafers, pred).set_index("lot")
    assert s.loc["A", "share_Scratch"] == pytest.approx(1 / 3) and "share_Center" not in s
    assert s.loc["A", "anomalous_share"] == pytest.approx(1 / 3) and s.loc["B", "anomalous_share"] == 1.0
    assert s.loc["A", "score_mean"] == pytest.approx(2.0)
    with pytest.raises(DataError, match="3 prediction rows for 4 wafers"):
        lots.lot_summary(three_wafers, pred.head(3))


def test_summary_of_wafers_none_of_them_classified_yet(three_wafers):
    """A class column with no class in it (a lot browser's first summary): no class mix, no crash."""
    table = lots.wafer_table(three_wafers).assign(**{"class": ""})
    s = lots.lot_summary(three_wafers, wafers=table).set_index("lot")
    assert s["classified"].tolist() == [0, 0] and s["top_class"].tolist() == ["", ""]
    assert not [c for c in s if c.startswith("share_")]


def test_lot_order_time_column_then_first_appearance():
    maps = [FULL5] * 5
    ds = _ds(maps, ["L1", "L2", "L1", "L3", "L4"],
             start_time=["2026-01-03", "2026-01-01T08:00", "2026-01-02", None, "2026-01-01T09:00"])
    # L1's earliest wafer is Jan 2; L3 has no time and goes last
    assert lots.lot_order(ds) == ["L2", "L4", "L1", "L3"]
    plain = _ds(maps, ["L1", "L2", "L1", "L3", "L4"])
    assert lots.lot_order(plain) == ["L1", "L2", "L3", "L4"]
    with pytest.raises(ConfigError, match="no time column 'shift'"):
        lots.lot_order(plain, "shift")
    bad = _ds(maps[:2], ["L1", "L2"], start_time=["2026-01-01", "yesterday-ish"])
    with pytest.raises(DataError, match="neither a number nor a date"):
        lots.lot_order(bad)


# ---- stacked maps and alignment -----------------------------------------------------------------
def test_stacked_frequency_by_hand(three_wafers):
    st = lots.lot_stacks(three_wafers, ["A"])["A"]
    assert st.rule == "centre" and st.wafers == 3
    np.testing.assert_array_equal(st.tested, [[2, 3, 2], [3, 3, 3], [2, 3, 2]])
    np.testing.assert_array_equal(st.fails, [[1, 0, 0], [0, 2, 0], [0, 0, 0]])
    f = st.frequency
    assert f[0, 0] == pytest.approx(0.5) and f[1, 1] == pytest.approx(2 / 3) and f[0, 1] == 0
    assert st.max_frequency == pytest.approx(2 / 3)


def test_alignment_of_different_extents_by_centre():
    small = np.zeros((5, 5), np.uint8)
    small[:3, :3] = 1  # a 3×3 die area in the top-left corner of a 5×5 array
    small[1, 1] = 2  # its centre die fails
    big = FULL5.copy()
    big[2, 2] = 2
    st = lots.stack_maps([small, big])
    assert st.tested.shape == (5, 5)
    expected = np.ones((5, 5), int)
    expected[1:4, 1:4] = 2  # the small die area lands on the big one's centre
    np.testing.assert_array_equal(st.tested, expected)
    assert st.fails[2, 2] == 2 and st.fails.sum() == 2  # both centre dies on one cell
    # an even extent: the centre index is (h - 1) // 2, so a 4×4 area sits one up-left of the exact middle
    place, shape, rule = placements([np.ones((4, 4), np.uint8), FULL5])
    assert rule == "centre" and shape == (5, 5) and (place[0].row, place[0].col) == (1, 1)


def test_alignment_by_die_origins():
    a, b = np.ones((3, 3), np.uint8), np.ones((3, 3), np.uint8)
    b[0, 0] = 2
    ds = _ds([a, b], ["L", "L"], origin_row=[10, 11], origin_col=[10, 10])
    st = lots.lot_stacks(ds)["L"]
    assert st.rule == "origin" and st.tested.shape == (4, 3)
    np.testing.assert_array_equal(st.tested[:, 0], [1, 2, 2, 1])
    assert st.fails[1, 0] == 1  # b's [0, 0] is wafer-fixed die (11, 10): canvas row 1
    # an origin missing on one wafer of lot M: M is centred, lot L (origins complete) is not
    ds2 = _ds([a, b, a, b], ["L", "L", "M", "M"], origin_row=[10, 11, 10, None], origin_col=[10, 10, 10, 10])
    stacks = lots.lot_stacks(ds2)
    assert stacks["L"].rule == "origin" and stacks["M"].rule == "centre" and stacks["M"].tested.shape == (3, 3)


def test_empty_wafer_and_unknown_lot():
    ds = _ds([np.zeros((3, 3), np.uint8), FULL5], ["L", "L"])
    st = lots.lot_stacks(ds)["L"]
    assert st.offsets[0] is None and st.tested.max() == 1
    with pytest.raises(DataError, match="no lot 'X'"):
        lots.lot_stacks(ds, ["X"])


# ---- zones --------------------------------------------------------------------------------------
def test_zone_masks_on_a_full_5x5():
    z = zone_masks(FULL5, rings=3, edge_width=1)
    # ρ: centre 0; 4 neighbours 0.4; 4 diagonals 0.566; the outer 16 ≥ 0.8
    assert [int(z[("ring", f"ring {k}")].sum()) for k in (1, 2, 3)] == [1, 8, 16]
    assert [int(zone_masks(FULL5, rings=2)[("ring", f"ring {k}")].sum()) for k in (1, 2)] == [5, 20]
    # the centre row counts as bottom, the centre column as right
    assert [int(z[("quadrant", q)].sum()) for q in lots.QUADRANTS] == [4, 6, 6, 9]
    assert int(z[("edge", "edge")].sum()) == 16 and int(z[("edge", "inner")].sum()) == 9
    z2 = zone_masks(FULL5, edge_width=2)
    assert int(z2[("edge", "edge")].sum()) == 24 and z2[("edge", "inner")][2, 2]


def test_zone_yield_by_hand(three_wafers):
    ds = WaferDataset.concat([three_wafers.subset([3]), _ds([FULL5], ["B"])])  # lot B: fails + a clean wafer
    z = lots.zone_yield(ds, rings=3, edge_width=1).set_index("zone")
    # fails at (0,0): ring 3, top-left, edge; (2,2): ring 1, bottom-right, inner; (1,3): ring 2, top-right, inner
    assert z.loc["ring 1", ["dies", "fail_dies"]].tolist() == [2, 1] and z.loc["ring 1", "yield"] == 0.5
    assert z.loc["ring 2", "yield"] == pytest.approx(15 / 16)
    assert z.loc["ring 3", "yield"] == pytest.approx(31 / 32)
    assert z.loc["top-left", "yield"] == pytest.approx(7 / 8)
    assert z.loc["top-right", "yield"] == pytest.approx(11 / 12)
    assert z.loc["bottom-left", "yield"] == 1.0
    assert z.loc["bottom-right", "yield"] == pytest.approx(17 / 18)
    assert z.loc["edge", "yield"] == pytest.approx(31 / 32) and z.loc["inner", "yield"] == pytest.approx(16 / 18)
    assert z.loc["ring 2", "rho_from"] == pytest.approx(1 / 3) and math.isnan(z.loc["edge", "rho_from"])
    with pytest.raises(ConfigError):
        lots.zone_yield(ds, rings=0)


def test_zone_yield_matches_masks_on_many_wafers(tiny_wafers):
    # the die-area cache and the bincounts against plain per-wafer masks (same die areas, other fails)
    ds = WaferDataset.concat([tiny_wafers, tiny_wafers.subset(np.arange(12)[::-1])])
    ds.meta["lot"] = "one"
    got = lots.zone_yield(ds, rings=4, edge_width=2).set_index("zone")
    for zone in got.index:
        fails = passes = 0
        for m in ds.maps:
            mask = next(v for (k, z), v in zone_masks(m, 4, 2).items() if z == zone)
            fails += int((m[mask] == 2).sum())
            passes += int((m[mask] == 1).sum())
        assert got.loc[zone, ["pass_dies", "fail_dies"]].tolist() == [passes, fails], zone


# ---- bin Pareto ---------------------------------------------------------------------------------
@pytest.fixture
def binned():
    m1, b1 = np.array([[1, 2], [2, 2]], np.uint8), np.array([[1, 5], [5, 7]])
    m2, b2 = np.array([[2, 0], [1, 2]], np.uint8), np.array([[7, -1], [1, 5]])
    ds = _ds([m1, m2], ["P", "P"], id=["w1", "w2"])
    ds.attrs["bins"] = {"w1": b1, "w2": b2}
    ds.attrs["bin_names"] = {5: "CONT", 7: "LEAK"}
    return ds


def test_bin_pareto_by_hand(binned):
    p = lots.bin_pareto(binned)
    assert p["bin"].tolist() == [5, 7] and p["dies"].tolist() == [3, 2] and p["rank"].tolist() == [1, 2]
    assert p["share"].tolist() == pytest.approx([0.6, 0.4]) and p["cum_share"].tolist() == pytest.approx([0.6, 1.0])
    assert p["bin_name"].tolist() == ["CONT", "LEAK"]
    every = lots.bin_pareto(binned, fail_only=False)
    assert every["bin"].tolist() == [5, 1, 7] and every["dies"].tolist() == [3, 2, 2]  # tie 1/7 by bin code


def test_bin_pareto_two_lots_and_pooled(binned):
    from waferscope.lots.report import pareto_totals

    extra = _ds([np.array([[2, 2], [1, 2]], np.uint8)], ["Q"], id=["w3"])
    ds = WaferDataset.concat([binned, extra])
    ds.attrs["bins"] = {**binned.attrs["bins"], "w3": np.array([[9, 7], [1, 7]])}
    p = lots.bin_pareto(ds)
    q = p[p["lot"] == "Q"]
    assert q["bin"].tolist() == [7, 9] and q["dies"].tolist() == [2, 1]
    pooled = pareto_totals(p)
    assert pooled["bin"].tolist() == [7, 5, 9] and pooled["dies"].tolist() == [4, 3, 1]  # 7: 2 + 2
    assert pooled["cum_share"].tolist() == pytest.approx([0.5, 7 / 8, 1.0])


def test_bin_pareto_absent_and_bad_bins(binned, three_wafers):
    assert lots.bin_pareto(three_wafers).empty
    binned.attrs["bins"]["w2"] = np.zeros((3, 3), int)
    with pytest.raises(DataError, match="wafer w2: its bins"):
        lots.bin_pareto(binned)
    binned.attrs["bins"]["w2"] = np.array([[-1, -1], [1, 5]])  # a failing die at [0, 0] without a bin
    with pytest.raises(DataError, match="wafer w2: a die has no bin"):
        lots.bin_pareto(binned)


def test_report_writes_pareto_figure_and_table(binned, tmp_path):
    from waferscope.lots.report import write_report

    out = write_report(lots.analyse(binned), tmp_path / "r")
    assert (out / "pareto.png").is_file()
    assert pd.read_csv(out / "pareto.csv")["dies"].tolist() == [3, 2]
    html = (out / "index.html").read_text()
    assert 'src="pareto.png"' in html and "LEAK" in html


# ---- control limits -----------------------------------------------------------------------------
def test_p_chart_by_hand():
    c = lots.p_chart([1, 2, 7], [10, 20, 10])
    assert c["p_bar"] == pytest.approx(0.25)
    assert c["ucl"] == pytest.approx([0.25 + 3 * math.sqrt(0.1875 / 10), 0.25 + 3 * math.sqrt(0.1875 / 20),
                                      0.25 + 3 * math.sqrt(0.1875 / 10)])
    assert c["lcl"].tolist() == [0.0, 0.0, 0.0]  # 0.25 - 0.41 clipped at 0
    assert c["state"].tolist() == ["", "", "high"]  # 0.7 > 0.6608
    low = lots.p_chart([30, 30, 3], [100, 100, 100])
    assert low["p_bar"] == pytest.approx(0.21)
    assert low["lcl"][2] == pytest.approx(0.21 - 3 * math.sqrt(0.21 * 0.79 / 100))
    assert low["state"].tolist() == ["", "", "low"]


def test_signature_trend_from_labels():
    # three lots of 10 wafers, Center in 1, 2 and 9 of them: p̄ = 12/30, the third lot is above its UCL
    labels = (["Center"] + ["none"] * 9) + (["Center"] * 2 + ["none"] * 8) + (["Center"] * 9 + ["none"])
    ds = _ds([FULL5] * 30, [f"L{i // 10}" for i in range(30)], labels)
    t = lots.signature_trend(ds)
    center = t[t["signature"] == "Center"].set_index("lot")
    assert center["p_bar"].iloc[0] == pytest.approx(0.4)
    sigma = math.sqrt(0.4 * 0.6 / 10)
    assert center.loc["L2", "ucl"] == pytest.approx(0.4 + 3 * sigma)  # 0.865 < 0.9
    assert center["lcl"].tolist() == [0.0, 0.0, 0.0]  # 0.4 - 0.465 clipped
    assert center["out_of_control"].tolist() == ["", "", "high"]
    assert center["n"].tolist() == [10, 10, 10] and center["count"].tolist() == [1, 2, 9]
    assert lots.signature_trend(ds, min_wafers=11).empty
    with pytest.raises(ConfigError):
        lots.signature_trend(ds, sigma=0)


def test_analyse_marks_out_of_control_lots():
    labels = (["Center"] + ["none"] * 9) * 2 + (["Center"] * 9 + ["none"])
    ds = _ds([FULL5] * 30, [f"L{i // 10}" for i in range(30)], labels)
    r = lots.analyse(ds, map_lots=2)
    assert r.summary.set_index("lot").loc["L2", "out_of_control"] == "Center high, none low"
    assert list(r.stacks) == ["L0", "L1"]  # ties in wafers count: first in time order


def test_analyse_picks_lowest_yield_lots():
    maps = []
    for bad in (0, 20, 5, 20):  # fail dies per wafer of lots L0..L3
        for _ in range(2):
            m = FULL5.copy()
            m.ravel()[:bad] = 2
            maps.append(m)
    ds = _ds(maps + [np.full((5, 5), 2, np.uint8)], [f"L{i // 2}" for i in range(8)] + ["L4"])
    r = lots.analyse(ds, map_lots=2, map_by="yield", min_wafers=2)
    assert list(r.stacks) == ["L1", "L3"]  # yield 0.2 each; the 1-wafer L4 (yield 0) is left out
    assert list(lots.analyse(ds, map_lots=1, map_by="yield").stacks) == ["L4"]
    with pytest.raises(ConfigError, match="not 'fails'"):
        lots.analyse(ds, map_by="fails")


def test_odd_lot_names_stay_safe(tmp_path):
    from waferscope.lots.report import write_report

    ds = _ds([FULL5, FULL5, FULL5], ["../a b<script>", "a_b_script", ""])
    out = write_report(lots.analyse(ds), tmp_path / "r")
    files = sorted(p.name for p in (out / "maps").iterdir())
    assert len(files) == 3 and all("/" not in f and "<" not in f for f in files)
    html = (out / "index.html").read_text()
    assert html.count("<script>") == 1  # the page's own sorting script; the lot name is escaped
    assert "&lt;script&gt;" in html and "(no lot)" in html
    assert "No trend" in html and pd.read_csv(out / "trend.csv").empty  # unlabelled, no models: no classes


def test_image_data_is_refused():
    img = WaferDataset.from_maps([np.zeros((4, 4, 3), np.uint8)], kind="image")
    with pytest.raises(DataError, match="lot views need wafer maps"):
        lots.lot_summary(img)


# ---- the command --------------------------------------------------------------------------------
@pytest.fixture
def lot_parquet(tmp_path, tiny_wafers):
    from waferscope.data.io_parquet import write_parquet

    return write_parquet(tiny_wafers, tmp_path / "lots.parquet")


def test_cli_end_to_end_without_models(capsys, tmp_path, lot_parquet, tiny_wafers):
    out = tmp_path / "report"
    code, _, err = invoke(capsys, "lots", "--data", lot_parquet, "--out", out, "--no-predict", "--min-wafers", "1",
                          "--edge-width", "1", "--max-maps", "2")
    assert code == 0, err
    assert "12 wafers in 4 lots" in err
    summary = pd.read_csv(out / "summary.csv")
    expected = lots.lot_summary(tiny_wafers)
    assert summary["lot"].tolist() == ["lot0", "lot1", "lot2", "lot3"]
    np.testing.assert_allclose(summary["yield"], expected["yield"])
    assert summary["fail_dies"].tolist() == expected["fail_dies"].tolist()
    zones = pd.read_csv(out / "zones.csv")
    np.testing.assert_allclose(zones["yield"], lots.zone_yield(tiny_wafers, edge_width=1)["yield"])
    assert len(pd.read_csv(out / "trend.csv")) == 4 * 3  # 3 classes × 4 lots
    for name in ("index.html", "stacked_maps.png", "zones.png", "trend.png", "maps/lot1.png"):
        assert (out / name).is_file(), name
    html = (out / "index.html").read_text()
    assert "Lot summary" in html and "no bin Pareto" in html and 'src="stacked_maps.png"' in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # temp folder renamed away
    # a second run into the same folder needs --overwrite
    code, _, err = invoke(capsys, "lots", "--data", lot_parquet, "--out", out, "--no-predict", "--max-maps", "0")
    assert code == 2 and err.count("\n") == 1 and "not empty" in err
    assert invoke(capsys, "lots", "--data", lot_parquet, "--out", out, "--no-predict", "--overwrite",
                  "--max-maps", "0")[0] == 0
    assert not (out / "maps").exists() and "Stacked lot maps" not in (out / "index.html").read_text()


def test_cli_with_bundled_models(capsys, tmp_path, lot_parquet):
    out = tmp_path / "report"
    code, _, err = invoke(capsys, "lots", "--data", lot_parquet, "--out", out, "--max-maps", "1", "--min-wafers", "1")
    assert code == 0, err
    summary = pd.read_csv(out / "summary.csv")
    assert summary["anomalous_share"].between(0, 1).all()
    shares = summary.filter(like="share_")
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    wafers = pd.read_csv(out / "wafers.csv")
    assert {"class", "score", "anomalous"} <= set(wafers.columns)
    assert len(list((out / "maps").iterdir())) == 1
    assert "anomalous" in set(pd.read_csv(out / "trend.csv")["signature"])


@pytest.mark.parametrize("args, message", [
    (["--data", "MISSING.parquet"], "MISSING.parquet"),
    (["--bundled", "nosuch"], "unknown bundled model 'nosuch'"),
    (["--bundled", "gbm", "--bundled", "cnn_distilled"], "two classifiers"),
    (["--no-predict", "--bundled", "gbm"], "--no-predict runs no model"),
    (["--no-predict", "--time-column", "shift"], "no time column 'shift'"),
    (["--no-predict", "--maps-by", "fails"], "--maps-by must be one of"),
])
def test_cli_bad_input_is_one_line(capsys, tmp_path, lot_parquet, args, message):
    if "--data" not in args:
        args = ["--data", lot_parquet, *args]
    code, _, err = invoke(capsys, "lots", "--out", tmp_path / "o", *args)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "o").exists()
