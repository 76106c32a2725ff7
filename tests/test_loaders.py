"""Loaders behind waferscope.data.load and the canonical Parquet format."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import DEV_DATA, _disc_map
from waferscope.data import load
from waferscope.data.io_parquet import iter_parquet, read_parquet, write_parquet
from waferscope.data.loaders.legacy_pickle import dump_legacy_dataframe, dumps_legacy_dataframe
from waferscope.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::waferscope.data.loaders.lswmd.PickleCodeWarning")


def assert_same(a, b):
    assert len(a) == len(b)
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a.maps, b.maps))
    assert list(a.labels) == list(b.labels)
    assert a.kind == b.kind


# ---- Parquet ------------------------------------------------------------------------------------
def test_parquet_round_trip_keeps_maps_labels_masks_multilabels_meta(tiny_wafers, tmp_path):
    path = write_parquet(tiny_wafers, tmp_path / "t.parquet", row_group_size=5)
    back = read_parquet(path)
    assert_same(tiny_wafers, back)
    assert all(np.array_equal(x, y) for x, y in zip(tiny_wafers.masks, back.masks))
    assert np.array_equal(tiny_wafers.multilabels, back.multilabels)
    for col in ("id", "lot", "split", "source"):
        assert back.meta[col].tolist() == tiny_wafers.meta[col].tolist()
    assert np.allclose(back.meta["wafer_index"], tiny_wafers.meta["wafer_index"])
    assert back.maps[0].flags.writeable  # models may edit maps in place
    assert [len(b) for b in iter_parquet(path, batch_size=4)] == [4, 4, 4]


def test_parquet_is_plain_readable_by_pandas(tiny_wafers, tmp_path):
    path = write_parquet(tiny_wafers, tmp_path / "t.parquet")
    df = pd.read_parquet(path)
    r = df.iloc[3]
    m = np.frombuffer(r["map"], np.uint8).reshape(r["rows"], r["cols"])
    assert np.array_equal(m, tiny_wafers.maps[3]) and r["label"] == "Center"


def test_write_parquet_streams_batches_and_is_atomic(tiny_wafers, tmp_path):
    out = tmp_path / "s.parquet"

    def batches():
        yield tiny_wafers.subset(range(6))
        yield tiny_wafers.subset(range(6, 12))

    write_parquet(batches(), out)
    assert_same(tiny_wafers, read_parquet(out))

    def failing():
        yield tiny_wafers.subset(range(6))
        raise DataError("boom")

    bad = tmp_path / "bad.parquet"
    with pytest.raises(DataError):
        write_parquet(failing(), bad)
    assert os.listdir(tmp_path) == ["s.parquet"]  # no half-written file, no temp left


def test_parquet_images_with_channels(tmp_path):
    from waferscope.data.dataset import WaferDataset

    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (8, 9, 3), dtype=np.uint8), rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)]
    ds = WaferDataset.from_maps(imgs, ["good", "crack"], masks=[None, np.ones((5, 4), bool)], kind="image")
    back = read_parquet(write_parquet(ds, tmp_path / "i.parquet"))
    assert_same(ds, back)
    assert back.masks[0] is None and back.masks[1].all()


def test_truncated_parquet_is_a_clear_error(tiny_wafers, tmp_path):
    path = write_parquet(tiny_wafers, tmp_path / "t.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.parquet"):
        load(cut)


# ---- LSWMD.pkl ----------------------------------------------------------------------------------
def lswmd_frame(n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = ["Loc", "none", "Edge-Ring", None, "Center", "Near-full"]
    fail = [np.array([[names[i % 6]]]) if names[i % 6] else np.zeros((0, 0)) for i in range(n)]
    split = [np.array([["Training" if i % 2 else "Test"]]) if names[i % 6] else np.zeros((0, 0)) for i in range(n)]
    return pd.DataFrame({
        "waferMap": [_disc_map(25 + i % 7, 26 + i % 5, rng) for i in range(n)],
        "dieSize": np.full(n, 1683.0),
        "lotName": [f"lot{i // 3 + 1}" for i in range(n)],
        "waferIndex": np.arange(1, n + 1, dtype=float),
        "trianTestLabel": split,
        "failureType": fail,
    }, index=np.arange(100, 100 + n))


@pytest.fixture
def legacy_pkl(tmp_path):
    path = tmp_path / "LSWMD.pkl"
    with open(path, "wb") as f:
        dump_legacy_dataframe(lswmd_frame(), f)
    return path


def test_legacy_pickle_needs_the_shim_and_the_shim_loads_it(legacy_pkl):
    raw = legacy_pkl.read_bytes()
    assert b"pandas.indexes.base" in raw and b"pandas.core.internals\nBlockManager" in raw
    with pytest.raises(ModuleNotFoundError, match="pandas.indexes"):
        pd.read_pickle(legacy_pkl)  # what users of the real LSWMD.pkl hit with today's pandas
    ds = load(legacy_pkl)
    src = lswmd_frame()
    assert all(np.array_equal(a, b) for a, b in zip(src.waferMap, ds.maps))
    assert list(ds.labels) == ["Loc", "none", "Edge-Ring", "", "Center", "Near-full"]
    assert list(ds.meta["split"]) == ["test", "train", "test", "", "test", "train"]
    assert list(ds.meta["id"]) == [f"LSWMD-{i}" for i in range(100, 106)]
    assert list(ds.meta["lot"][:4]) == ["lot1", "lot1", "lot1", "lot2"]
    assert ds.meta["die_size"].tolist() == [1683.0] * 6


def test_lswmd_sample_fixture_loads():
    path = DEV_DATA / "LSWMD_sample.pkl"
    if not path.exists():
        pytest.skip("dev data not mounted")
    ds = load(path)
    assert len(ds) == 200 and set(ds.labels) <= {"Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc",
                                                  "Near-full", "Random", "Scratch"}
    ref = pd.read_pickle(path)
    assert list(ds.labels) == [str(x) for x in ref["failureLabel"]]


def test_pickle_warning_is_given(legacy_pkl, monkeypatch):
    import waferscope.data.loaders.lswmd as lswmd

    monkeypatch.setattr(lswmd, "_warned", False)
    with pytest.warns(lswmd.PickleCodeWarning, match="data import"):
        load(legacy_pkl)


def test_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="evil.pkl.*refusing to load"):
        load(path)


def test_truncated_pickle(legacy_pkl, tmp_path):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(legacy_pkl.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cut.pkl: truncated or corrupt pickle"):
        load(cut)


def test_dataframe_without_wafermap(tmp_path):
    path = tmp_path / "nomap.pkl"
    path.write_bytes(dumps_legacy_dataframe(lswmd_frame().drop(columns=["waferMap"])))
    with pytest.raises(DataError, match="nomap.pkl: no 'waferMap' column"):
        load(path)


@pytest.mark.parametrize("bad, problem", [
    (np.full((5, 5), 3, np.uint8), "die values must be"),
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.ones(10, np.uint8), "2-D"),
])
def test_bad_map_in_pickle(tmp_path, bad, problem):
    df = lswmd_frame()
    maps = df["waferMap"].to_numpy(dtype=object).copy()
    maps[2] = bad
    df["waferMap"] = maps
    path = tmp_path / "bad.pkl"
    path.write_bytes(dumps_legacy_dataframe(df))
    with pytest.raises(DataError, match=rf"bad.pkl: row 102 \(waferMap\): .*{problem}"):
        load(path)


def test_streaming_import_from_pickle(legacy_pkl, tmp_path):
    from waferscope.data.loaders.streaming import import_to_parquet

    out = tmp_path / "x.parquet"
    assert import_to_parquet(legacy_pkl, out, batch_size=4, progress=False) == 6
    assert_same(load(legacy_pkl), load(out))
    bad = tmp_path / "bad.pkl"
    df = lswmd_frame(12)
    maps = df["waferMap"].to_numpy(dtype=object).copy()
    maps[9] = np.full((4, 4), 7, np.uint8)  # fails after the first batch was written
    df["waferMap"] = maps
    bad.write_bytes(dumps_legacy_dataframe(df))
    with pytest.raises(DataError, match="row 109"):
        import_to_parquet(bad, tmp_path / "y.parquet", batch_size=4, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["LSWMD.pkl", "bad.pkl", "x.parquet"]


# ---- flat dev npz -------------------------------------------------------------------------------
def test_dev_npz_round_trips_through_parquet(tmp_path):
    path = DEV_DATA / "wm811k_dev.npz"
    if not path.exists():
        pytest.skip("dev data not mounted")
    ds = load(path)
    assert_same(ds, load(write_parquet(ds, tmp_path / "dev.parquet")))


def test_unknown_file_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(DataError, match="notes.txt: unrecognised data format"):
        load(p)
    e = tmp_path / "empty.parquet"
    e.write_bytes(b"")
    with pytest.raises(DataError, match="empty.parquet: the file is empty"):
        load(e)


# ---- MixedWM38 ----------------------------------------------------------------------------------
def test_mixedwm38_npz_labels_and_multilabels(tmp_path):
    rng = np.random.default_rng(3)
    maps = np.stack([_disc_map(52, 52, rng) for _ in range(4)]).astype(np.int32)
    onehot = np.array([[0] * 8, [1, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1]])
    path = tmp_path / "Wafer_Map_Datasets.npz"
    np.savez(path, maps, onehot)  # saved unnamed: arr_0, arr_1, like the original
    ds = load(path)
    assert list(ds.labels) == ["none", "Center", "Center+Loc+Scratch", "Random"]
    assert np.array_equal(ds.multilabels, onehot) and ds.maps[0].dtype == np.uint8
    assert np.array_equal(ds.maps[2], maps[2])


def test_mixedwm38_bad_values(tmp_path):
    maps = np.ones((2, 52, 52), np.int64)
    maps[1, 3, 3] = 5
    path = tmp_path / "m.npz"
    np.savez(path, maps, np.zeros((2, 8)))
    with pytest.raises(DataError, match="m.npz: map 1: die values must be"):
        load(path)
    np.savez(path, maps[:, 0], np.zeros((2, 8)))
    with pytest.raises(DataError, match="m.npz: 'arr_0' must be N×H×W"):
        load(path)


# ---- class folders (npy, png) -------------------------------------------------------------------
def test_class_folders_npy_and_rendered_png_round_trip(tmp_path):
    from waferscope.data.render import render_map, save_png

    rng = np.random.default_rng(4)
    originals = {}
    for cls, scale in (("Center", 1), ("edge_ring", 3)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            m = _disc_map(27 + i, 30, rng)
            originals[(cls, i)] = m
            np.save(tmp_path / cls / f"a{i}.npy", m)
            save_png(render_map(m, scale=scale), tmp_path / cls / f"b{i}.png")
    ds = load(tmp_path)
    assert len(ds) == 8 and set(ds.labels) == {"Center", "Edge-Ring"}
    for k, m in zip(ds.meta["id"], ds.maps):
        folder, stem = k.split("/")
        assert np.array_equal(m, originals[(folder, int(stem[1]))])


@pytest.mark.parametrize("palette", [
    [[0, 0, 0], [127, 127, 127], [255, 255, 255]],
    [[68, 1, 84], [33, 145, 140], [253, 231, 37]],  # matplotlib viridis: plt.imshow(waferMap)
    [[255, 255, 255], [149, 149, 149], [0, 0, 0]],  # matplotlib Greys: white = no die (corners)
])
def test_png_palettes_decode(tmp_path, palette):
    from waferscope.data.loaders.folders import decode_png_map
    from waferscope.data.render import save_png

    m = _disc_map(30, 31, np.random.default_rng(5))
    path = save_png(np.asarray(palette, np.uint8)[m], tmp_path / "m.png")
    assert np.array_equal(decode_png_map(path), m)


def test_png_with_unknown_colours(tmp_path):
    from waferscope.data.render import save_png

    (tmp_path / "Loc").mkdir()
    img = np.random.default_rng(6).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    save_png(img, tmp_path / "Loc" / "photo.png")
    with pytest.raises(DataError, match=r"photo.png: unknown colours \(\d+: #"):
        load(tmp_path)


def test_npy_map_with_bad_values_names_the_file(tmp_path):
    (tmp_path / "Loc").mkdir()
    np.save(tmp_path / "Loc" / "x.npy", np.full((6, 6), 9, np.uint8))
    with pytest.raises(DataError, match=r"x.npy: die values must be"):
        load(tmp_path)
    np.save(tmp_path / "Loc" / "x.npy", np.ones(6, np.uint8))
    with pytest.raises(DataError, match=r"x.npy: a wafer map must be 2-D"):
        load(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no wafer maps found"):
        load(tmp_path)


# ---- MVTec-AD layout ----------------------------------------------------------------------------
def _mvtec(root, mask_shape=(16, 20)):
    from PIL import Image

    rng = np.random.default_rng(7)
    for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(root / "train/good" / f"{i:03d}.png")
    Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(root / "test/good/000.png")
    Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(root / "test/crack/000.png")
    mask = np.zeros(mask_shape, np.uint8)
    mask[2:5, 3:9] = 255
    Image.fromarray(mask).save(root / "ground_truth/crack/000_mask.png")
    return root


def test_mvtec_layout(tmp_path):
    ds = load(_mvtec(tmp_path / "bottle"))
    assert ds.kind == "image" and len(ds) == 5
    assert list(ds.labels) == ["good"] * 4 + ["crack"]
    assert list(ds.meta["split"]) == ["train"] * 3 + ["test"] * 2
    assert ds.maps[0].shape == (16, 20, 3)
    assert ds.masks[0] is None and ds.masks[4].sum() == 18 and ds.masks[4].shape == (16, 20)
    assert ds.is_normal.sum() == 4


def test_mvtec_without_train_good(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    for p in (root / "train/good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="bottle: MVTec-AD layout needs normal training images in train/good"):
        load(root)


def test_mvtec_mask_of_wrong_size(tmp_path):
    with pytest.raises(DataError, match=r"000_mask.png: mask is 8×8 but its image is 16×20"):
        load(_mvtec(tmp_path / "bottle", mask_shape=(8, 8)))


# ---- more pickle layouts ------------------------------------------------------------------------
def test_legacy_pickle_with_range_index(tmp_path):
    df = lswmd_frame().reset_index(drop=True)
    raw = dumps_legacy_dataframe(df)
    assert b"pandas.indexes.range" in raw
    path = tmp_path / "r.pkl"
    path.write_bytes(raw)
    assert list(load(path).meta["id"]) == [f"r-{i}" for i in range(6)]


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_modern_pickles_of_any_protocol(tmp_path, protocol):
    df = lswmd_frame()
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(df, protocol=protocol))
    ds = load(path)
    assert list(ds.labels) == ["Loc", "none", "Edge-Ring", "", "Center", "Near-full"]


def test_pickle_of_something_else(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="list.pkl: expected a pickled pandas DataFrame"):
        load(path)


# ---- misc formats -------------------------------------------------------------------------------
def test_npy_stack_and_single_map(tmp_path):
    rng = np.random.default_rng(8)
    stack = np.stack([_disc_map(20, 20, rng) for _ in range(3)])
    np.save(tmp_path / "s.npy", stack)
    np.save(tmp_path / "one.npy", stack[0])
    assert len(load(tmp_path / "s.npy")) == 3 and set(load(tmp_path / "s.npy").labels) == {""}
    assert np.array_equal(load(tmp_path / "one.npy").maps[0], stack[0])


def test_parquet_without_waferscope_columns(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match="other.parquet: not a waferscope Parquet file: missing column"):
        load(path)


def test_npz_of_unknown_layout(tmp_path):
    path = tmp_path / "u.npz"
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(DataError, match="u.npz: unrecognised .npz layout"):
        load(path)


# ---- rendering ----------------------------------------------------------------------------------
def test_render_map_palette_and_scale():
    from waferscope.data.render import PALETTE, render_map

    m = np.array([[0, 1], [2, 1]], np.uint8)
    rgb = render_map(m, scale=3)
    assert rgb.shape == (6, 6, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == PALETTE[0]).all() and (rgb[5, 0] == PALETTE[2]).all() and (rgb[0, 5] == PALETTE[1]).all()
    assert len({tuple(c) for c in PALETTE}) == 3


def test_montage_writes_a_png_and_no_temp(tiny_wafers, tmp_path):
    from waferscope.data.render import montage_per_class

    out = montage_per_class(tiny_wafers, tmp_path / "m.png", per_class=3)
    assert out.read_bytes()[:4] == b"\x89PNG" and os.listdir(tmp_path) == ["m.png"]
    with pytest.raises(DataError, match="output folder does not exist"):
        montage_per_class(tiny_wafers, tmp_path / "missing" / "m.png")


@pytest.mark.parametrize("module, name", [
    ("pandas", "HDFStore"),  # a pandas class, but it creates files
    ("numpy", "memmap"),  # a numpy array class that creates files
    ("pandas.core.frame", "np.lib"),  # dotted names walk attributes to anywhere
    ("builtins", "eval"),
    ("pandas.io.pickle", "read_pickle"),
])
def test_unpickler_refuses_non_data_names(module, name):
    from waferscope.data.loaders.legacy_pickle import LegacyUnpickler, RefusedGlobal

    with pytest.raises(RefusedGlobal, match="refusing to load"):
        LegacyUnpickler(io.BytesIO(b"")).find_class(module, name)


def test_png_with_two_unknown_colours_is_ambiguous(tmp_path):
    from waferscope.data.loaders.folders import decode_png_map
    from waferscope.data.render import save_png

    m = (_disc_map(20, 20, np.random.default_rng(9)) > 0).astype(np.uint8)
    path = save_png(np.array([[30, 60, 90], [200, 180, 20]], np.uint8)[m], tmp_path / "two.png")
    with pytest.raises(DataError, match=r"two.png: ambiguous colours \(2: "):
        decode_png_map(path)
    # the same two states drawn in the waferscope palette are fine: no die + pass
    from waferscope.data.render import render_map

    assert np.array_equal(decode_png_map(save_png(render_map(m), tmp_path / "ok.png")), m)
