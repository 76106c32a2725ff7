"""Every command's --help reads whole at 80 columns: no text cut by the layout, no Python type
placeholders, no Sphinx markup (issue #33, item 8)."""

from __future__ import annotations

import re

import pytest

from clitools import invoke
from waferscope.cli.main import build_command

CUT = "…"  # what rich puts where it cut an option's name or a word too long for its column
PLACEHOLDER = re.compile(r"<(?:bool|int|float|str|path|list\[[^>]*\]|[a-z_]+\[[^>]*\])>", re.I)
SPHINX = re.compile(r":(?:class|func|meth|mod|attr|data|obj|ref|doc):`|``")


def _paths(command, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _paths(sub, (*prefix, name))


PATHS = list(_paths(build_command()))


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p in PATHS}
    assert len(PATHS) > 25 and {"", "evaluate detector", "evaluate realism", "classify predict", "serve"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "waferscope")
def test_help_is_whole(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the narrowest common terminal: where rich cuts first
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    code, out, err = invoke(capsys, *path, "--help")
    assert code == 0, err
    assert "Usage:" in out
    where = " ".join(("waferscope",) + path) + " --help"
    assert CUT not in out, f"{where} cuts its text:\n" + "\n".join(line for line in out.splitlines() if CUT in line)
    assert not PLACEHOLDER.search(out), f"{where} shows a type placeholder: {PLACEHOLDER.search(out).group()}"
    assert not SPHINX.search(out), f"{where} shows Sphinx markup: {SPHINX.search(out).group()}"
    # a help that ends mid-sentence: click's short help cuts a docstring's first line with "..."
    assert not re.search(r"\w\.\.\.\s*(│|$)", out, re.M), f"{where} ends a line with '...'"
