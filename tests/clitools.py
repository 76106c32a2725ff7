"""Run the waferscope CLI in-process for tests: exit code (and captured stdout / stderr)."""

from __future__ import annotations

import sys

from waferscope.cli.main import main


def call(*args) -> int:
    """``waferscope ARGS…`` in this process; its exit code."""
    old = sys.argv
    sys.argv = ["waferscope", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old


def invoke(capsys, *args) -> tuple[int, str, str]:
    """:func:`call` plus what the command printed (pytest's ``capsys``)."""
    code = call(*args)
    out, err = capsys.readouterr()
    return code, out, err
