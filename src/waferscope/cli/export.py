"""`waferscope export` command(s)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's top-level command(s) to the main app."""
