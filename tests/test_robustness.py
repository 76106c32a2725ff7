"""Issue 27: area resampling, the canonical orientation, the fab synthetic profile and the robustness suite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clitools import invoke
from waferscope.data.preprocess import area_resize_map, area_resize_maps, canonical_views, dihedral, prepare_maps
from waferscope.data.synthetic import FAB_SOURCE, generate
from waferscope.errors import ConfigError
from waferscope.evaluate import robustness as rb


def _random_maps(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(12, 90)), int(rng.integers(12, 90))
        m = rb.clean_wafer(h, w, float(rng.uniform(0, 0.3)), rng)
        out.append(m)
    return out


# ---- area resampling -------------------------------------------------------------------------------
def test_area_fractions_sum_to_one_and_keep_a_single_fail_on_a_large_grid():
    rng = np.random.default_rng(1)
    m = rb.clean_wafer(300, 300, 0.0, rng)
    m[150, 150] = 2
    a = area_resize_map(m, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int).sum(-1) - 255).max() <= 1  # three fractions, each rounded
    assert a[..., 2].max() > 0  # the one fail die is still there (nearest sampling keeps ~2.6 % of dies)


def test_area_resampling_is_exactly_equivariant_and_ignores_margins():
    for m in _random_maps(6):
        a = area_resize_map(m, 48)
        for k in range(8):
            turned = area_resize_maps([np.ascontiguousarray(dihedral(m, k))], 48)[0]
            assert np.array_equal(turned, dihedral(a, k, axes=(0, 1))), k
        assert np.array_equal(area_resize_map(np.pad(m, ((5, 0), (2, 9))), 48), a)


def test_area_on_a_48_grid_is_the_one_hot_encoding():
    rng = np.random.default_rng(2)
    m = rng.integers(0, 3, (48, 48)).astype(np.uint8)
    m[0, 0] = m[-1, -1] = 1  # dies in both corners: the crop keeps the whole grid
    a = area_resize_map(m, 48)
    assert np.array_equal(a.argmax(-1), m) and (a.max(-1) == 255).all()


# ---- canonical orientation -------------------------------------------------------------------------
@pytest.mark.parametrize("resample", ["area", "nearest"])
def test_canonical_view_is_the_same_for_every_rotation_and_flip(resample):
    maps = _random_maps(30, seed=3)
    base = prepare_maps(maps, 48, resample, "canonical")
    for k in range(1, 8):
        turned = prepare_maps([np.ascontiguousarray(dihedral(m, k)) for m in maps], 48, resample, "canonical")
        same = np.mean([np.array_equal(a, b) for a, b in zip(base, turned)])
        # area: exact; nearest sampling of a turned grid can differ by a pixel on odd scale factors
        assert same == 1.0 if resample == "area" else same >= 0.75, (k, same)


def test_canonical_views_are_spread_over_the_eight_views():
    ks = canonical_views(prepare_maps(_random_maps(80, seed=4), 48, "area"))
    assert len(set(ks.tolist())) >= 6  # a real choice per map, not one fixed turn


def test_heat_maps_go_back_to_the_wafers_own_frame():
    from waferscope.models.classifiers.cnn import FineHeadCNNClassifier
    from waferscope.data import WaferDataset

    clf = FineHeadCNNClassifier(resample="area", orient="canonical")
    maps = _random_maps(5, seed=5)
    x = prepare_maps(maps, 48, "area", "canonical")
    heat = x[..., 2].astype(np.float32) / 255  # "heat" = the fail share the network saw
    back = clf.heat_to_die_grids(heat, WaferDataset.from_maps(maps))
    for m, h in zip(maps, back):
        assert h.shape == m.shape
        fail, passing = h[m == 2], h[m == 1]
        if len(fail) and len(passing):
            assert fail.mean() > passing.mean()


def test_old_runs_keep_the_nearest_input():
    from waferscope.models.classifiers.cnn import FineHeadCNNClassifier

    clf = FineHeadCNNClassifier()
    assert clf.resample == "nearest" and clf.orient == "none"
    with pytest.raises(ConfigError, match="resample"):
        FineHeadCNNClassifier(resample="bilinear").resize(generate(2, seed=0))


# ---- synthetic fab profile ---------------------------------------------------------------------------
def test_fab_profile_covers_large_clean_and_framed_wafers_deterministically():
    ds = generate(180, seed=7, profile="fab")
    again = generate(180, seed=7, profile="fab")
    assert all(np.array_equal(a, b) for a, b in zip(ds.maps, again.maps))
    fab = ds.meta["source"].to_numpy() == FAB_SOURCE
    assert 0.3 < fab.mean() < 0.7
    sizes = np.array([max(m.shape) for m in ds.maps])
    assert sizes[fab].max() > 150 and sizes[~fab].max() <= 90
    labels = ds.labels.astype(str)
    rates = np.array([(m == 2).sum() / max((m > 0).sum(), 1) for m in ds.maps])
    assert (rates[fab & (labels == "none")] < 0.035).mean() > 0.4  # clean fab wafers (0-3 % fails, no rim)
    assert any(not (m[0] > 0).any() for m in ds.maps)  # some have a margin of no-die rows
    for m, k in zip(ds.maps, ds.masks):
        assert m.shape == k.shape and not (k & (m == 0)).any()


def test_default_profile_is_unchanged_by_the_fab_profile():
    a = generate(20, seed=3)
    assert (a.meta["source"] == "synthetic").all()
    assert max(max(m.shape) for m in a.maps) <= 90
    with pytest.raises(ConfigError, match="profile"):
        generate(2, profile="fabs")


# ---- the suite -----------------------------------------------------------------------------------------
def test_transforms_and_writers_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    maps = [rb.clean_wafer(17, 23, 0.1, rng), rb.clean_wafer(30, 30, 0.0, rng)]
    for fmt in rb.FORMATS:
        folder = tmp_path / fmt
        folder.mkdir()
        back = rb.roundtrip(maps, fmt, folder)
        assert all(rb.same_map(a, b) for a, b in zip(maps, back)), fmt
    m = maps[1]
    assert rb.exclude_edge(m, 1).sum() < m.sum() and rb.exclude_edge(m, 1).shape == m.shape
    assert rb.add_margin(m, "offcentre:10%").shape == (33, 33)
    assert rb.clip_rows(m, 0.2).shape == (24, 30)


# a stored map small enough to write its files by hand: 3 rows × 4 columns, no die / pass / fail
_SMALL_MAP = np.array([[1, 2, 0, 0],
                       [1, 1, 1, 0],
                       [0, 1, 1, 1]], np.uint8)


def _xml(path):
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    for el in root.iter():  # drop the namespace: the tests name elements by their local names
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


def _load_map(path):
    from waferscope.data import load

    return load(path).maps[0]


def test_g85_file_says_what_the_spec_says(tmp_path):
    """The G85 rows are the drawing, top row first, seen with the notch at Orientation degrees clockwise
    from the bottom; codes 001 pass, 003 fail, 255 the NullBin; the counts are the map's."""
    rows_of = {0: ["001 003 255 255", "001 001 001 255", "255 001 001 001"],
               # notch left: the stored map turned a quarter clockwise (its bottom row becomes the left column)
               90: ["255 001 001", "001 001 003", "001 001 255", "001 255 255"],
               180: ["001 001 001 255", "255 001 001 001", "255 255 003 001"]}
    for angle, want in rows_of.items():
        path = tmp_path / f"g{angle}.xml"
        rb.write_g85(path, _SMALL_MAP, wafer_id="W07", orientation=angle)
        root = _xml(path)
        assert root.tag == "Maps" and [m.get("SubstrateId") for m in root.findall("Map")] == ["W07"]
        device = root.find("Map/Device")
        assert (device.get("BinType"), device.get("NullBin"), device.get("Orientation")) == ("Decimal", "255", str(angle))
        assert (int(device.get("Rows")), int(device.get("Columns"))) == (len(want), len(want[0].split()))
        assert [r.text.strip() for r in device.findall("Data/Row")] == want, angle
        bins = {b.get("BinCode"): (b.get("BinQuality"), int(b.get("BinCount"))) for b in device.findall("Bin")}
        assert bins == {"001": ("Pass", 7), "003": ("Fail", 1)}
        assert rb.same_map(_load_map(path), _SMALL_MAP), angle


def test_g85_file_reads_the_same_in_the_g85_package(tmp_path):
    """An independent G85 reader (the ``g85`` package) sees the same codes, bin qualities and ids."""
    from g85.read import read

    rng = np.random.default_rng(4)
    m = rb.clean_wafer(13, 21, 0.1, rng)
    rb.write_g85(tmp_path / "g.xml", m, wafer_id="W03")
    with open(tmp_path / "g.xml") as fh:
        (wmap,) = read(fh)
    (device,) = wmap.devices
    assert wmap.SubstrateId == "W03" and device.NullBin == 255
    assert np.array_equal(np.array(device.map), np.array([255, 1, 3])[m])
    assert device.bin_pass == {1: True, 3: False}


def test_e142_file_says_what_the_spec_says(tmp_path):
    """E142 BinCode rows run from the OriginLocation corner along AxisDirection: UpperLeft/DownRight
    lists the top row first, LowerLeft/UpRight the bottom row first, …Right origins right to left;
    FF is the NullBin, 01 pass, 03 fail; Dimension is the grid."""
    want = {("UpperLeft", 0): ("DownRight", ["0103FFFF", "010101FF", "FF010101"]),
            ("LowerLeft", 0): ("UpRight", ["FF010101", "010101FF", "0103FFFF"]),
            ("UpperRight", 0): ("DownLeft", ["FFFF0301", "FF010101", "010101FF"]),
            ("LowerRight", 0): ("UpLeft", ["010101FF", "FF010101", "FFFF0301"]),
            ("UpperLeft", 270): ("DownRight", ["FFFF01", "FF0101", "030101", "0101FF"])}  # notch right: turned a quarter anticlockwise
    for (origin, angle), (axis, rows) in want.items():
        path = tmp_path / f"e_{origin}_{angle}.xml"
        rb.write_e142(path, _SMALL_MAP, wafer_id="W09", orientation=angle, origin=origin)
        root = _xml(path)
        smap = root.find("SubstrateMaps/SubstrateMap")
        assert (smap.get("OriginLocation"), smap.get("AxisDirection"), smap.get("Orientation")) == (origin, axis, str(angle))
        dim = root.find("Layouts/Layout[@LayoutId='Devices']/Dimension")
        assert (int(dim.get("Y")), int(dim.get("X"))) == (len(rows), len(rows[0]) // 2)
        bin_map = smap.find("Overlay/BinCodeMap")
        assert (bin_map.get("BinType"), bin_map.get("NullBin")) == ("HexaDecimal", "FF")
        assert [r.text for r in bin_map.findall("BinCode")] == rows, (origin, angle)
        defs = {d.get("BinCode"): (d.get("BinQuality"), int(d.get("BinCount")))
                for d in bin_map.findall("BinDefinitions/BinDefinition")}
        assert defs == {"01": ("Pass", 7), "03": ("Fail", 1)}
        assert root.find("Substrates/Substrate").get("SubstrateId") == "W09"
        assert rb.same_map(_load_map(path), _SMALL_MAP), (origin, angle)


@pytest.mark.parametrize("shape", [(17, 23), (31, 31), (40, 9), (300, 300)])
def test_xml_writers_round_trip_every_orientation_and_origin(tmp_path, shape):
    """Non-square, odd-sized and 300-across maps come back identical from G85 and E142 whatever the
    notch angle and the E142 origin corner (a margin of no-die rows included: both keep the grid)."""
    rng = np.random.default_rng(shape[0])
    m = np.pad(rb.clean_wafer(*shape, 0.05, rng), ((0, 2), (1, 0)))
    angles = (0, 90, 180, 270) if shape[0] < 300 else (0, 90)  # the big one: two angles keep it fast
    for angle in angles:
        rb.write_g85(tmp_path / "g.xml", m, orientation=angle)
        assert rb.same_map(_load_map(tmp_path / "g.xml"), m), ("g85", angle)
        for origin in rb.E142_ORIGINS:
            rb.write_e142(tmp_path / "e.xml", m, orientation=angle, origin=origin)
            assert rb.same_map(_load_map(tmp_path / "e.xml"), m), ("e142", angle, origin)
    with pytest.raises(ConfigError, match="multiple of 90"):
        rb.write_g85(tmp_path / "g.xml", m, orientation=45)
    with pytest.raises(ConfigError, match="origin"):
        rb.write_e142(tmp_path / "e.xml", m, origin="Centre")


def test_small_suite_runs_and_gbm_keeps_clean_wafers_clean(tmp_path):
    settings = dataclasses.replace(rb.SMALL, n_clean=8, n_dev=18, sizes=(100,), factors=("size", "orientation", "format"),
                                   formats=("npy", "csv", "g85", "e142"))
    models = rb.bundled_models(["gbm"])
    table = rb.run(models, settings, seed=0)
    assert set(table.factor) >= {"size", "orientation", "format"}
    assert {"clean_false_alarm", "dev_metric", "dev_agreement", "map_identical"} <= set(table.columns)
    row = table[(table.factor == "size") & (table.level == "100")].iloc[0]
    assert row.n_clean == 8 and row.clean_false_alarm <= 0.125  # the issue: gbm calls these none
    fmt = table[table.factor == "format"]
    assert list(fmt.level) == ["npy", "csv", "g85", "e142"]
    assert (fmt.map_identical == 1.0).all() and (fmt.clean_false_alarm <= 0.125).all()
    paths = rb.write_reports(table, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_default_classifier_calls_clean_wafers_none_and_ignores_turns():
    """The bundled default after the issue-27 retrain: clean wafers at 20 and 300 dies across are
    `none`, and a turned real-like map keeps its prediction."""
    settings = dataclasses.replace(rb.SMALL, n_clean=10, sizes=(20, 300), factors=("size", "orientation"))
    from waferscope.models.classifiers import DEFAULT_FOR_LABELS

    table = rb.run(rb.bundled_models([DEFAULT_FOR_LABELS]), settings, seed=1)
    size = table[(table.factor == "size") & table.level.isin(["20", "300"])]
    assert (size.clean_false_alarm == 0).all(), size
    ori = table[table.factor == "orientation"]
    assert (ori.clean_agreement == 1.0).all()
    if (ori.n_dev > 0).all():
        assert (ori.dev_agreement == 1.0).all()


def test_cli_robustness_writes_the_reports_and_checks_its_options(capsys, tmp_path):
    code, out, err = invoke(capsys, "evaluate", "robustness", "--size", "small", "--bundled", "cnn_distilled",
                            "--factor", "yield", "--factor", "format", "--format-size", "24", "--n-clean", "4",
                            "--n-dev", "9", "--threads", "1", "--out", tmp_path)
    assert code == 0, err
    assert "cnn_distilled" in out and (tmp_path / "robustness.csv").is_file() and (tmp_path / "robustness.png").is_file()
    import pandas as pd

    fmt = pd.read_csv(tmp_path / "robustness.csv").query("factor == 'format'")
    assert list(fmt.level) == list(rb.FORMATS) and fmt.note.str.startswith("clean wafers 24 across").all()
    assert (fmt.map_identical == 1.0).all()
    code, out, err = invoke(capsys, "evaluate", "robustness", "--factor", "colour", "--out", tmp_path)
    assert code != 0 and "colour" in (out + err)
