"""`waferscope data ...` commands: generate, import, info, show.

SPEC is anything :func:`waferscope.data.load` reads (a .parquet/.npz/.pkl file, a folder, or
``synthetic:n=…,seed=…``).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from waferscope.cli.checks import check_out_file
from waferscope.cli.common import COLUMNS_HELP, PASS_BINS_HELP, RETEST_HELP

app = typer.Typer(no_args_is_help=True, help="Generate, import, inspect and draw wafer-map data sets.")


def _plain_warnings() -> None:
    """Show library warnings (e.g. 'unpickling runs code') as one 'warning: …' line on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


@app.command()
def generate(
    n: int = typer.Option(..., "--n", min=1, help="Number of maps."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed → same maps)."),
    mixed: bool = typer.Option(False, "--mixed", help="Include mixed-type maps (several base patterns)."),
    out: Path = typer.Option(..., "--out", help="Output .parquet file."),
) -> None:
    """Generate synthetic wafer maps (with ground-truth masks) and write them as Parquet."""
    from waferscope.data.io_parquet import write_parquet
    from waferscope.data.synthetic import generate as synth

    check_out_file(out, example="maps.parquet")
    ds = synth(n=n, seed=seed, mixed=mixed)
    write_parquet(ds, out)
    typer.echo(f"wrote {len(ds)} maps to {out}", err=True)


@app.command("import")
def import_(
    src: str = typer.Argument(..., help="Any loadable SPEC (LSWMD.pkl, .npz, folder, ...)."),
    out: Path = typer.Option(..., "--out", help="Output .parquet file."),
    batch_size: int = typer.Option(8192, "--batch-size", min=1, help="Rows per Parquet row group."),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    retest: Optional[str] = typer.Option(None, "--retest", help=RETEST_HELP),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
) -> None:
    """Convert any supported source to waferscope's canonical Parquet format (streaming)."""
    from waferscope.data.loaders.streaming import import_to_parquet

    _plain_warnings()
    check_out_file(out, example="maps.parquet")
    count = import_to_parquet(src, out, batch_size=batch_size, progress=True, pass_bins=pass_bins, retest=retest,
                              columns=columns)
    typer.echo(f"wrote {count} rows to {out}", err=True)


@app.command()
def info(
    spec: str = typer.Argument(..., help="Data SPEC."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    retest: Optional[str] = typer.Option(None, "--retest", help=RETEST_HELP),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
) -> None:
    """Show counts per class, map sizes and fail rates."""
    from waferscope.data import load

    _plain_warnings()
    dataset = load(spec, pass_bins=pass_bins, retest=retest, columns=columns)
    summary = dataset.summary()
    reprobed = _reprobed(dataset)
    if reprobed is not None:
        summary["reprobed_dies"] = reprobed
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{summary['name']}: {summary['count']} {summary['kind']} samples, "
               f"{summary['labelled']} labelled"
               + (f", shapes {summary['shape_min']}..{summary['shape_max']}" if summary["count"] else ""))
    if "fail_rate_mean" in summary:
        typer.echo(f"mean fail rate {summary['fail_rate_mean']:.4f}")
    header = f"{'class':<14}{'count':>8}{'rows':>7}{'cols':>7}"
    is_wafer = summary["kind"] == "wafer"
    if is_wafer:
        header += f"{'fail mean':>11}{'fail med':>10}"
    typer.echo(header)
    for cls, e in summary["per_class"].items():
        line = f"{cls:<14}{e['count']:>8}{e['rows_median']:>7.0f}{e['cols_median']:>7.0f}"
        if is_wafer:
            line += f"{e['fail_rate_mean']:>11.4f}{e['fail_rate_median']:>10.4f}"
        typer.echo(line)
    if summary.get("per_pattern"):
        typer.echo("base patterns: " + ", ".join(f"{k} {v}" for k, v in summary["per_pattern"].items()))
    if reprobed is not None:
        hit = [f"{w} {n}" for w, n in reprobed["per_wafer"].items() if n]
        per = ", ".join(hit[:8]) + (f", … {len(hit) - 8} more wafers" if len(hit) > 8 else "")
        typer.echo(f"re-probed dies (tested more than once, {reprobed['retest']} result kept): {reprobed['total']}"
                   + (f" ({per})" if per else ""))
        for wafer, note in list(reprobed["count_checks"].items())[:8]:
            typer.echo(f"  {wafer}: {note}")


def _reprobed(dataset) -> dict | None:
    """Re-probe counts of a fab data set that reports them (STDF's ``reprobed_dies`` column)."""
    meta = dataset.meta
    if "reprobed_dies" not in meta:
        return None
    counts = meta["reprobed_dies"].fillna(0).astype(int)
    checks = meta["count_check"].fillna("") if "count_check" in meta else None
    return {"total": int(counts.sum()), "per_wafer": dict(zip(meta["id"], counts.tolist())),
            "retest": str(meta["retest"].iloc[0]) if "retest" in meta and len(meta) else "last",
            "count_checks": {} if checks is None else {i: c for i, c in zip(meta["id"], checks) if c}}


@app.command()
def show(
    spec: str = typer.Argument(..., help="Data SPEC."),
    out: Path = typer.Option(..., "--out", help="Output PNG."),
    per_class: int = typer.Option(8, "--per-class", min=1, help="Maps drawn per class."),
    seed: int = typer.Option(0, "--seed", help="Which maps are drawn."),
    title: Optional[str] = typer.Option(None, "--title"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    retest: Optional[str] = typer.Option(None, "--retest", help=RETEST_HELP),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
) -> None:
    """Draw a montage: a few maps of every class, with a colour legend."""
    from waferscope.data import load
    from waferscope.data.render import montage_per_class

    _plain_warnings()
    check_out_file(out, example="montage.png")
    montage_per_class(load(spec, pass_bins=pass_bins, retest=retest, columns=columns), out, per_class=per_class,
                      seed=seed, title=title)
    typer.echo(f"wrote {out}", err=True)
