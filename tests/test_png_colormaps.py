"""PNG wafer maps drawn with matplotlib colour maps (issue #33, item 1): a folder drawn with jet was
read with pass and fail swapped by a darkest-to-brightest rule. Maps are written here with
plt.imsave (and plt.imshow → savefig at one pixel per die), values 0/1/2, and must read back exactly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import _disc_map  # noqa: E402
from waferscope.data import load  # noqa: E402
from waferscope.errors import DataError  # noqa: E402

CMAPS = ["jet", "viridis", "plasma", "inferno", "magma", "cividis", "turbo", "Greys", "gray", "binary",
         "jet_r", "viridis_r"]


def _maps(seed: int, n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_disc_map(24 + i, 26, rng, fail_rate=0.25) for i in range(n)]


@pytest.mark.parametrize("cmap", CMAPS)
def test_imsave_folder_reads_back_exactly(tmp_path, cmap):
    maps = _maps(1)
    for cls in ("Center", "Loc"):
        (tmp_path / cls).mkdir()
        for i, m in enumerate(maps):
            plt.imsave(tmp_path / cls / f"w{i}.png", m, cmap=cmap)  # default: stretched to the map's 0..2
    ds = load(tmp_path)
    assert len(ds) == 6
    for got, want in zip(ds.maps, maps + maps):
        assert np.array_equal(got, want), cmap
    # the symptom of the issue: the fail rate is the true one, not its complement
    true_rate = np.mean([(m == 2).sum() / (m > 0).sum() for m in maps])
    assert ds.summary()["fail_rate_mean"] == pytest.approx(true_rate, abs=1e-3)


@pytest.mark.parametrize("cmap", ["jet", "plasma", "Greys"])
def test_imshow_savefig_one_pixel_per_die(tmp_path, cmap):
    """plt.imshow(m) saved as a figure exactly the map's size, no axes, nearest interpolation."""
    m = _maps(2, 1)[0]
    fig = plt.figure(figsize=(m.shape[1] / 10, m.shape[0] / 10), dpi=10)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(m, cmap=cmap, interpolation="nearest")
    ax.set_axis_off()
    fig.savefig(tmp_path / "m.png", dpi=10)
    plt.close(fig)
    from waferscope.data.loaders.folders import decode_png_map

    assert np.array_equal(decode_png_map(tmp_path / "m.png"), m)


def test_map_without_fails_two_colours(tmp_path):
    """0/1 only: imsave stretches it over the whole colour map (both ends); the corners are 'no die'."""
    from waferscope.data.loaders.folders import decode_png_map

    m = (_maps(3, 1)[0] > 0).astype(np.uint8)
    for cmap in ("jet", "Greys", "viridis"):
        plt.imsave(tmp_path / f"{cmap}.png", m, cmap=cmap)
        assert np.array_equal(decode_png_map(tmp_path / f"{cmap}.png"), m), cmap
    plt.imsave(tmp_path / "fixed.png", m, cmap="jet", vmin=0, vmax=2)
    assert np.array_equal(decode_png_map(tmp_path / "fixed.png"), m)


def test_three_unknown_colours_are_refused(tmp_path):
    """Three colours of no known palette or colour map: their meaning is a guess, so it is refused."""
    from waferscope.data.loaders.folders import decode_png_map
    from waferscope.data.render import save_png

    m = _maps(4, 1)[0]
    path = save_png(np.array([[10, 10, 60], [90, 160, 90], [250, 240, 200]], np.uint8)[m], tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m.png: unknown colours \(3: #0a0a3c"):
        decode_png_map(path)


def test_grey_without_no_die_corners_is_ambiguous(tmp_path):
    """Black/grey/white fits gray (black low) and Greys (white low); with no wafer corner to say which
    is 'no die' the decoder refuses instead of guessing."""
    from waferscope.data.loaders.folders import decode_png_map

    m = np.array([[1, 2, 0, 1], [2, 1, 1, 0], [0, 1, 2, 2]], np.uint8)
    plt.imsave(tmp_path / "g.png", m, cmap="gray")
    with pytest.raises(DataError, match=r"g.png: ambiguous colours: .*opposite directions"):
        decode_png_map(tmp_path / "g.png")
