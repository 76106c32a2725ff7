"""`waferscope evaluate` sub-commands for classification protocols (:mod:`waferscope.evaluate.classification`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `evaluate` group."""
