"""`waferscope evaluate robustness`.

The bundled models against what fab wafers vary in
(:mod:`waferscope.evaluate.robustness`). Thin: parse, call, write.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from waferscope.errors import ConfigError


def robustness(
    run: List[Path] = typer.Option([], "--run", help="A classifier or detector run directory (a detector needs "
                                   "its decision threshold); repeatable"),
    bundled: List[str] = typer.Option([], "--bundled", help="Only this bundled classifier or detector; repeatable "
                                      "(default: all of them, unless --run is given)"),
    size: str = typer.Option("full", "--size", help="full (the docs' table) or small (a quick check: few wafers, "
                             "few levels)"),
    factor: List[str] = typer.Option([], "--factor", help="Only this factor; repeatable (size, aspect, yield, "
                                     "orientation, margin, clip, edge_exclusion, format)"),
    n_clean: Optional[int] = typer.Option(None, "--n-clean", min=1, help="Clean wafers per level (overrides --size)"),
    n_dev: Optional[int] = typer.Option(None, "--n-dev", min=9, help="Real dev maps per level, class-stratified "
                                        "(overrides --size)"),
    format_size: List[int] = typer.Option([], "--format-size", min=2, help="Grid size (dies across) of the format "
                                          "factor's clean wafers; repeatable (default: 40 and 100)"),
    dev: Optional[Path] = typer.Option(None, "--dev", help="Real labelled dev maps (default: the shared wm811k_dev.npz; "
                                       "when missing, clean wafers only)"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", min=1, help="torch threads"),
    out: Path = typer.Option(Path("results/robustness"), "--out", help="Folder for robustness.csv, .md and .png"),
) -> None:
    """Clean-wafer false alarms and real-dev macro-F1 under grid size, die aspect, yield, rotation/flip, margins.

    Clipping, edge exclusion and input format, per bundled model (or --run).
    """
    import dataclasses

    import torch

    from waferscope.evaluate import robustness as rb

    if size not in ("full", "small"):
        raise ConfigError(f"--size must be full or small, got {size!r}")
    bad = [f for f in factor if f not in rb.FACTORS]
    if bad:
        raise ConfigError(f"unknown --factor {bad[0]!r}; choose from {', '.join(rb.FACTORS)}")
    for r in run:
        if not (r / "model.json").is_file():
            raise ConfigError("not a run directory: model.json is missing", r)
    settings = rb.FULL if size == "full" else rb.SMALL
    changes = {k: v for k, v in {"n_clean": n_clean, "n_dev": n_dev, "factors": tuple(factor) or None,
                                 "format_sizes": tuple(format_size) or None}.items() if v is not None}
    settings = dataclasses.replace(settings, **changes)
    torch.set_num_threads(threads)
    models = rb.bundled_models(bundled, run)
    table = rb.run(models, settings, seed=seed, dev_path=dev, progress=lambda msg: typer.echo(msg, err=True))
    paths = rb.write_reports(table, out)
    typer.echo(rb.to_markdown_summary(rb.summary(table)))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    """Add ``waferscope evaluate robustness`` to ``app``."""
    app.command("robustness")(robustness)
