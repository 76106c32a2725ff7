"""`waferscope benchmark --config FILE --out DIR`: the reproducible benchmark and its report."""

from __future__ import annotations

from pathlib import Path

import typer


def benchmark(
    config: Path = typer.Option(..., "--config", "-c", help="Benchmark YAML (see docs/benchmark.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: results.csv/json/md, cells/, runs/, index.html."),
    force: bool = typer.Option(False, "--force", help="Rerun every cell, ignoring cached results in OUT/cells."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report OUT/index.html."),
    check: bool = typer.Option(False, "--check", help="Only validate the config and data, then exit."),
) -> None:
    """Train and measure every method × data set × seed of a config; finished cells are cached."""
    if check:
        from waferscope.benchmark.config import load_config
        from waferscope.benchmark.protocol import load_dataset

        cfg = load_config(config)
        for d in cfg.active_datasets:
            load_dataset(d, cfg.task, cfg.path)
        n = len(cfg.active_datasets) * len(cfg.methods) * len(cfg.seeds)
        typer.echo(f"{config}: ok ({cfg.task}, {len(cfg.methods)} methods, {len(cfg.active_datasets)} data sets, "
                   f"{len(cfg.seeds)} seeds = {n} cells)")
        return
    from waferscope.benchmark.runner import run_benchmark
    from waferscope.cli.checks import check_out_dir

    check_out_dir(out)
    run_benchmark(config, out, force=force, report=report)
    typer.echo(f"wrote {out}/results.csv, results.md" + (", index.html" if report else ""))


def register(app: typer.Typer) -> None:
    """Add this module's top-level command(s) to the main app."""
    app.command("benchmark")(benchmark)
