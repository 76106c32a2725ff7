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
