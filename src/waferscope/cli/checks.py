"""Checks a command runs on its paths BEFORE any work.

An output that cannot be written (an existing folder where a file goes, a file where a folder goes,
an unwritable place, a run directory that would be overwritten) and a shared default input that is
not on this machine. Each fails as one ConfigError naming the option, instead of a traceback after
minutes of work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from waferscope.errors import ConfigError


def _writable_ancestor(path: Path, option: str) -> None:
    """Require the nearest existing ancestor of ``path`` to be a folder this process can write into."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option}: {parent} is a file, so nothing can be written under it", path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: no permission to write in {parent}", path)


def check_out_file(path: Path, option: str = "--out", example: str = "out.csv") -> None:
    """``path`` will be written as one file."""
    if path.is_dir():
        raise ConfigError(f"{option} is an existing folder; give a file name, e.g. {path / example}", path)
    _writable_ancestor(path, option)


def check_out_dir(path: Path, option: str = "--out") -> None:
    """``path`` will be a folder the command writes files into (existing files of the same names are replaced)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} is an existing file; give a folder", path)
    _writable_ancestor(path, option)


def check_run_dir(path: Path, overwrite: bool, option: str = "--out") -> None:
    """``path`` will be a run directory: refused when it already holds something, unless ``overwrite``."""
    check_out_dir(path, option)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = "a run" if (path / "model.json").is_file() else "files"
        raise ConfigError(f"{option} already holds {what}; give --overwrite to replace it, or another folder", path)


def shared_default(given: Optional[Path], default: Path, option: str, own: str) -> Path:
    """``given``, or the shared ``default`` when it exists.

    Else a ConfigError saying what the data is, where it is looked for and how to pass one's own (``own``:
    e.g. "--dev FILE: labelled maps with lot names").
    """
    if given is not None:
        return given
    if not default.exists():
        from waferscope.data.paths import SharedDataMissing, missing_shared_message

        raise SharedDataMissing(f"{missing_shared_message(default)}. Or pass your own with {option} ({own})")
    return default
