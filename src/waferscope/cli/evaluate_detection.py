"""`waferscope evaluate` sub-commands for detection protocols (:mod:`waferscope.evaluate.detection`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `evaluate` group."""
