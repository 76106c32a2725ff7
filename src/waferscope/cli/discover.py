"""`waferscope discover`: cluster the wafers no known class fits into candidate new patterns.

The library is :mod:`waferscope.search.discover`; this is thin: parse, call the library, write the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from waferscope.cli.common import DATA_HELP, PASS_BINS_HELP
from waferscope.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add ``waferscope discover`` to ``app``."""
    app.command("discover")(discover_cmd)


def discover_cmd(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (the archive; repeatable)"),
    out: Path = typer.Option(..., "--out", help="Folder for index.html, clusters.csv, wafers.csv, cluster_K.png"),
    fit_data: List[str] = typer.Option([], "--fit-data", help="Labelled maps of the known classes (repeatable; "
                                       "default: the archive's own labelled wafers)"),
    abstain_rate: float = typer.Option(0.05, "--abstain-rate", min=0.001, max=0.5,
                                       help="Share of known wafers (held-out lots) set aside as unknown"),
    min_cluster_size: int = typer.Option(8, "--min-cluster-size", min=2, help="HDBSCAN: smallest pattern reported"),
    min_samples: int = typer.Option(1, "--min-samples", min=1, help="HDBSCAN: neighbours that make a wafer a core "
                                    "point (1: the measured default, docs/search.md)"),
    selection: str = typer.Option("leaf", "--cluster-selection", help="HDBSCAN: 'leaf' (default: many small, pure "
                                  "clusters) or 'eom' (fewer, larger, less pure ones)"),
    seed: int = typer.Option(0, "--seed"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    threads: int = typer.Option(2, "--threads", min=1),
) -> None:
    """Find candidate new patterns.

    The archive wafers that fit none of the known classes (open-set abstention), clustered with
    HDBSCAN, as per-cluster montages with their lots on an HTML page.
    """
    from waferscope.cli.search import _threads, _wafers
    from waferscope.search.discover import discover, write_discovery

    if selection not in ("eom", "leaf"):  # before minutes of feature extraction
        raise ConfigError(f"--cluster-selection must be 'eom' or 'leaf', got {selection!r}")
    _threads(threads)
    ds = _wafers(data, pass_bins, "--data")
    fit_on = _wafers(fit_data, pass_bins, "--fit-data") if fit_data else None
    table = discover(ds, fit_on=fit_on, seed=seed, abstain_rate=abstain_rate, min_cluster_size=min_cluster_size,
                     min_samples=min_samples, selection=selection,
                     n_jobs=threads, progress=True)
    write_discovery(ds, table, out)
    n_out = int((table["predicted"] == "unknown").sum())
    n_clusters = len(set(table["cluster"]) - {-1})
    typer.echo(f"{len(ds)} wafers: {n_out} fit no known class, {n_clusters} candidate patterns → {out / 'index.html'}")
