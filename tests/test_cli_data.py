"""`waferscope data ...` run in-process through the console entry point (cli.main.main)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from waferscope.cli.main import main
from waferscope.data import load
from waferscope.data.io_parquet import write_parquet


def run(capsys, *args) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["waferscope", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


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
