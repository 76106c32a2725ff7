"""The library never speaks CLI (issue 30): no module outside ``waferscope/cli`` imports
``waferscope.cli``, so option parsing and ``--flag`` wording stay in the command layer, and the
library prints nothing itself (the CLI turns its warnings into ``note:`` lines)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import waferscope

PACKAGE = Path(waferscope.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_no_library_module_imports_the_cli():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli":
            continue
        for line, name in _imports(path):
            if name == "waferscope.cli" or name.startswith("waferscope.cli."):
                offenders.append(f"{rel}:{line} imports {name}")
    assert not offenders, "library modules import the CLI:\n" + "\n".join(offenders)


def test_the_check_sees_an_import_of_the_cli(tmp_path):
    """The scan above would find one (it is not a check that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from waferscope.cli.common import parse_set\n")
    assert (2, "waferscope.cli.common.parse_set") in _imports(bad)


def test_an_old_bundled_name_is_a_warning_in_the_library_and_a_note_in_the_cli(capsys):
    from waferscope.base import resolve_bundled_name
    from waferscope.models.detectors import BUNDLED, BUNDLED_ALIASES

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_bundled_name(BUNDLED, "accurate", "detector", BUNDLED_ALIASES) == "pattern_contrast"
    assert [w.category for w in caught] == [FutureWarning]
    assert capsys.readouterr().err == ""  # the library itself prints nothing
