"""LoadLimits / DieBudget and the stored orientation rule shared by the fab loaders."""

import numpy as np
import pytest

import waferscope.data as wd
from waferscope.data.limits import LoadLimits
from waferscope.data.loaders.fabcommon import orient_grid
from waferscope.errors import DataError


def test_limits_refuse_count_side_and_total(tmp_path):
    lim = LoadLimits(max_maps=2, max_side=10, max_dies=150)
    with pytest.raises(DataError, match="max_maps"):
        lim.check_count(3, tmp_path / "f.parquet")
    with pytest.raises(DataError, match="max_side"):
        lim.check_shape((11, 3), tmp_path / "f.parquet", "map 4")
    budget = lim.budget("f")
    budget.add((10, 10))
    with pytest.raises(DataError, match="max_dies"):
        budget.add((10, 6), "map 1")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "9"])
def test_limits_validate_their_values(bad):
    with pytest.raises(ValueError, match="max_side"):
        LoadLimits(max_side=bad)


def test_load_applies_limits_to_the_result(tmp_path):
    ds = wd.load("synthetic:n=4,seed=0")
    with pytest.raises(DataError, match="max_maps"):
        wd.load("synthetic:n=4,seed=0", limits=LoadLimits(max_maps=3))
    assert len(wd.load("synthetic:n=4,seed=0", limits=LoadLimits(max_maps=4))) == len(ds)


def test_orient_grid_puts_the_notch_down_and_y_up():
    raw = np.array([[1, 2], [0, 1]], np.uint8)  # raw[y - ymin, x - xmin]: die (x=1, y=0) failed
    # y up, notch down: the largest y is the top row, so the failed die (y=0) lands on the bottom row
    np.testing.assert_array_equal(orient_grid(raw, y_up=True), [[0, 1], [1, 2]])
    # y down (row index grows with y), x pointing left: columns mirror
    np.testing.assert_array_equal(orient_grid(raw, y_up=False, x_right=False), [[2, 1], [1, 0]])
    # notch on the left is rotated to the bottom: the left column becomes the bottom row
    left = orient_grid(raw, y_up=False, notch="left")
    np.testing.assert_array_equal(left[-1], raw[:, 0])
    right = orient_grid(raw, y_up=False, notch="right")
    np.testing.assert_array_equal(right[-1], raw[::-1, -1])
    np.testing.assert_array_equal(orient_grid(raw, y_up=False, notch="up"), raw[::-1, ::-1])
    with pytest.raises(ValueError):
        orient_grid(raw, y_up=True, notch="north")


def test_open_binary_reads_through_gzip_bz2_xz_and_one_member_zip(tmp_path):
    import bz2
    import gzip
    import lzma
    import zipfile

    from waferscope.data.compressed import compression_of, inner_suffix, open_binary

    payload = b"FileVersion 1 2;\n" * 100
    files = {"a.klarf.gz": gzip.compress(payload), "a.klarf.bz2": bz2.compress(payload),
             "a.klarf.xz": lzma.compress(payload), "plain.klarf": payload}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("lot.klarf", payload)
    for name in [*files, "a.zip"]:
        with open_binary(tmp_path / name) as f:
            assert f.read() == payload, name
        assert inner_suffix(tmp_path / name) == ".klarf"
    # renamed: detected by magic bytes, not the suffix
    (tmp_path / "renamed.txt").write_bytes(gzip.compress(payload))
    assert compression_of(tmp_path / "renamed.txt") == "gzip"


def test_open_binary_stops_a_bomb_at_the_cap(tmp_path):
    import gzip

    from waferscope.data.compressed import open_binary

    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * (8 << 20)))  # ~8 kB inflating to 8 MB
    with pytest.raises(DataError, match="max_decompressed_bytes"):
        with open_binary(tmp_path / "bomb.gz", LoadLimits(max_decompressed_bytes=1 << 20)) as f:
            while f.read(1 << 16):
                pass


def test_zip_of_several_files_is_refused_and_npz_is_not_compressed(tmp_path):
    import zipfile

    from waferscope.data.compressed import compression_of

    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.klarf", "x")
        z.writestr("b.klarf", "y")
    with pytest.raises(DataError, match="exactly one file"):
        compression_of(tmp_path / "two.zip")
    np.savez(tmp_path / "m.npz", a=np.zeros(3))
    assert compression_of(tmp_path / "m.npz") is None
