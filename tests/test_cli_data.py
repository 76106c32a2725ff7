"""`waferscope data ...` run in-process through the console entry point (cli.main.main)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import invoke as run
from waferscope.data import load
from waferscope.data.io_parquet import write_parquet


def test_info_json_is_one_object(capsys, tiny_wafers, tmp_path):
    path = write_parquet(tiny_wafers, tmp_path / "t.parquet")
    code, out, err = run(capsys, "data", "info", path, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["count"] == 12 and summary["per_class"]["Loc"]["count"] == 4


def test_info_table(capsys, tiny_wafers, tmp_path):
    path = write_parquet(tiny_wafers, tmp_path / "t.parquet")
    code, out, _ = run(capsys, "data", "info", path)
    assert code == 0 and "Center" in out and "fail mean" in out


def test_missing_file_is_one_line_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "data", "info", tmp_path / "nope.parquet")
    assert code == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nope.parquet'}: no such file or folder"]


def test_generate_then_info_and_show(capsys, tmp_path):
    out = tmp_path / "syn.parquet"
    code, _, err = run(capsys, "data", "generate", "--n", 30, "--seed", 1, "--out", out)
    assert code == 0, err
    ds = load(out)
    assert len(ds) == 30 and ds.masks is not None
    code, out_json, _ = run(capsys, "data", "info", out, "--json")
    assert json.loads(out_json)["count"] == 30
    png = tmp_path / "m.png"
    code, _, err = run(capsys, "data", "show", out, "--out", png, "--per-class", 2)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_pickle_to_parquet(capsys, tmp_path, monkeypatch):
    import waferscope.data.loaders.lswmd as lswmd
    from test_loaders import dump_legacy_dataframe, lswmd_frame

    monkeypatch.setattr(lswmd, "_warned", False)
    src = tmp_path / "LSWMD.pkl"
    with open(src, "wb") as f:
        dump_legacy_dataframe(lswmd_frame(10), f)
    out = tmp_path / "x.parquet"
    code, _, err = run(capsys, "data", "import", src, "--out", out, "--batch-size", 4)
    assert code == 0, err
    warning_lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and "run code" in warning_lines[0]  # once, as one clear line
    assert len(load(out)) == 10 and "10 rows" in err


# ---- every bad input: one line naming the file and the problem, exit 2, nothing half-written ----
def _bad_pickle(tmp_path, kind):
    from test_loaders import dumps_legacy_dataframe, lswmd_frame

    df = lswmd_frame()
    if kind == "truncated":
        data = dumps_legacy_dataframe(df)[:3000]
    elif kind == "no_wafermap":
        data = dumps_legacy_dataframe(df.drop(columns=["waferMap"]))
    else:
        maps = df["waferMap"].to_numpy(dtype=object).copy()
        maps[1] = {"values": np.full((5, 5), 7, np.uint8), "empty": np.zeros((0, 3), np.uint8),
                   "1d": np.ones(9, np.uint8)}[kind]
        df["waferMap"] = maps
        data = dumps_legacy_dataframe(df)
    path = tmp_path / f"{kind}.pkl"
    path.write_bytes(data)
    return path


def _png_unknown(tmp_path):
    from waferscope.data.render import save_png

    (tmp_path / "maps" / "Loc").mkdir(parents=True)
    save_png(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8),
             tmp_path / "maps" / "Loc" / "odd.png")
    return tmp_path / "maps"


def _mvtec_no_train(tmp_path):
    from test_loaders import _mvtec

    root = _mvtec(tmp_path / "bottle")
    for p in (root / "train" / "good").iterdir():
        p.unlink()
    return root


BAD_INPUTS = {
    "truncated pickle": (lambda t: _bad_pickle(t, "truncated"), "truncated.pkl: truncated or corrupt pickle"),
    "no waferMap": (lambda t: _bad_pickle(t, "no_wafermap"), "no_wafermap.pkl: no 'waferMap' column"),
    "values outside 0-2": (lambda t: _bad_pickle(t, "values"), "values.pkl: row 101 (waferMap): die values must be"),
    "empty map": (lambda t: _bad_pickle(t, "empty"), "empty.pkl: row 101 (waferMap): the wafer map is empty"),
    "1-D map": (lambda t: _bad_pickle(t, "1d"), "1d.pkl: row 101 (waferMap): a wafer map must be 2-D"),
    "png unknown colours": (_png_unknown, "odd.png: unknown colours"),
    "mvtec without train/good": (_mvtec_no_train, "bottle: MVTec-AD layout needs normal training images in train/good"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("command", ["info", "import"])
def test_bad_input_one_clear_line(capsys, tmp_path, case, command):
    make, message = BAD_INPUTS[case]
    src = make(tmp_path)
    out = tmp_path / "out" / "x.parquet"
    out.parent.mkdir()
    args = ["data", "info", src] if command == "info" else ["data", "import", src, "--out", out]
    code, stdout, err = run(capsys, *args)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []  # nothing half-written
