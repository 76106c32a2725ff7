"""`waferscope lots`: the lot views of one or more wafer-map files (waferscope.lots) as CSV tables.

PNG figures and one HTML page in a folder.

Each wafer is classified with a classifier and scored with a detector unless ``--no-predict``:
by default the bundled ones (``classify predict``'s and ``detect score``'s defaults); ``--bundled
NAME`` and ``--run DIR`` (each may be repeated) pick a bundled model or a run directory, a classifier
or a detector by what it is. Lots of different files with the same name are one lot (a lot's wafers
often come in several files).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from waferscope.cli.common import DATA_HELP, PASS_BINS_HELP
from waferscope.errors import ConfigError, DataError


def register(app: typer.Typer) -> None:
    """Add ``waferscope lots`` to ``app``."""
    app.command("lots")(lots_cmd)


def load_lots_data(specs: List[str], pass_bins: Optional[str]):
    """Return the files as one data set; their bin codes (``attrs["bins"]``, keyed by wafer id) merged."""
    from waferscope.data import load
    from waferscope.data.dataset import WaferDataset
    from waferscope.lots import BIN_NAMES_ATTR, BINS_ATTR

    parts = [load(s, pass_bins=pass_bins) for s in specs]
    for spec, part in zip(specs, parts):
        if part.kind != "wafer":
            raise DataError(f"lot views need wafer maps; this holds {part.kind}s", spec)
    parts = [p for p in parts if len(p)]
    if not parts:
        raise DataError("no wafer maps in the data", ", ".join(specs))
    ds = parts[0] if len(parts) == 1 else WaferDataset.concat(parts, name="+".join(p.name for p in parts))
    for key in (BINS_ATTR, BIN_NAMES_ATTR):
        merged = {k: v for p in parts for k, v in (p.attrs.get(key) or {}).items()}
        if merged:
            ds.attrs[key] = merged
    return ds


def resolve_models(runs: List[Path], bundled: List[str]) -> dict:
    """Classifier and detector (+ threshold and how to name them) from ``--run``/``--bundled``.

    The bundled defaults fill in a kind nobody named.
    """
    from waferscope.base import read_run_header
    from waferscope.cli.common import load_model_described
    from waferscope.models.classifiers import BUNDLED as CLF_BUNDLED, BUNDLED_ALIASES as CLF_ALIASES
    from waferscope.models.detectors import BUNDLED as DET_BUNDLED, BUNDLED_ALIASES as DET_ALIASES

    chosen: dict[str, tuple] = {}

    def take(kind: str, run, name, what: str) -> None:
        if kind in chosen:
            raise ConfigError(f"two {kind}s given ({chosen[kind][2]} and {what}); give one of each at most")
        chosen[kind] = (run, name, what)

    for run in runs:
        kind = read_run_header(run).get("kind")
        if kind not in ("classifier", "detector"):
            raise ConfigError(f"--run {run} holds a {kind}, not a classifier or detector")
        take(kind, run, None, f"--run {run}")
    for name in bundled:
        if name in CLF_BUNDLED or name in CLF_ALIASES:
            take("classifier", None, name, f"--bundled {name}")
        elif name in DET_BUNDLED or name in DET_ALIASES:
            take("detector", None, name, f"--bundled {name}")
        else:
            raise ConfigError(f"unknown bundled model {name!r}; classifiers: {', '.join(CLF_BUNDLED)}; "
                              f"detectors: {', '.join(DET_BUNDLED)}")
    out = {}
    for kind in ("classifier", "detector"):
        run, name, _ = chosen.get(kind, (None, None, None))
        model, run_dir, described = load_model_described(run, name, kind)
        out[kind], out[f"{kind}_name"] = model, described
        if kind == "detector":
            out["threshold"] = model.threshold_  # the detector's own decision threshold, or None
    return out


def lots_cmd(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (repeat for several files; same-named lots merge)"),
    out: Path = typer.Option(..., "--out", help="Output folder: CSVs, PNGs and index.html"),
    run: List[Path] = typer.Option([], "--run", help="A classifier or detector run directory (repeatable)"),
    bundled: List[str] = typer.Option([], "--bundled", help="A bundled classifier (cnn_distilled, cnn_gradcam, gbm) "
                                      "or detector (pattern_contrast, autoencoder) (repeatable); default: "
                                      "cnn_distilled and pattern_contrast"),
    no_predict: bool = typer.Option(False, "--no-predict", help="No classifier and detector: class mix and trend "
                                    "from the data's own labels (if any), no anomalous share"),
    rings: int = typer.Option(3, "--rings", min=1, max=50, help="Radial rings of equal width in normalised radius"),
    edge_width: int = typer.Option(2, "--edge-width", min=1, max=50, help="Edge band width in dies"),
    sigma: float = typer.Option(3.0, "--sigma", min=0.5, max=10.0, help="Control limits at p̄ ± SIGMA·σ"),
    min_wafers: int = typer.Option(5, "--min-wafers", min=1, help="Trend: only lots with at least this many "
                                   "classified wafers (a p-chart point from 1-2 wafers says little)"),
    max_maps: int = typer.Option(24, "--max-maps", min=0, help="Stacked maps of this many lots (most wafers first)"),
    maps_by: str = typer.Option("wafers", "--maps-by", help="Which lots get stacked maps: 'wafers' (most wafers "
                                "first) or 'yield' (lowest yield first, among lots with ≥ --min-wafers wafers)"),
    time_column: Optional[str] = typer.Option(None, "--time-column", help="Metadata column giving lot time order "
                                              "(default: the first of start_time, test_time, time, timestamp, date present, "
                                              "else order of first appearance)"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder"),
) -> None:
    """Lot summary, stacked lot maps, yield by zone, bin Pareto and signature trend of wafer-map files."""
    from waferscope import lots
    from waferscope.lots.report import check_out_dir, write_report

    if no_predict and (run or bundled):
        raise ConfigError("--no-predict runs no model: leave out --run/--bundled")
    if maps_by not in lots.analysis.MAP_BY:
        raise ConfigError(f"--maps-by must be one of {', '.join(lots.analysis.MAP_BY)}, not {maps_by!r}")
    check_out_dir(out, overwrite)  # before any work
    models = None if no_predict else resolve_models(run, bundled)  # bad model options fail before reading data
    dataset = load_lots_data(data, pass_bins)
    lots.analysis.time_column(dataset.meta, time_column)  # a missing --time-column fails before scoring
    notes = []
    predictions = None
    if models is not None:
        predictions = lots.predict_wafers(dataset, models["classifier"], models["detector"], models["threshold"],
                                          progress=True)
        notes.append(f"classes from {models['classifier_name']}; anomaly scores from {models['detector_name']}"
                     + (f", anomalous at score ≥ {models['threshold']:.6g} (the run's threshold)"
                        if models["threshold"] is not None else " (no threshold: no anomalous share)"))
    report = lots.analyse(dataset, predictions, rings=rings, edge_width=edge_width, sigma=sigma, time=time_column,
                          map_lots=max_maps, map_by=maps_by, min_wafers=min_wafers, progress=True)
    if report.pareto.empty:
        notes.append("no bin codes in these files: no bin Pareto")
    write_report(report, out, overwrite=overwrite, notes=notes, progress=True)
    s = report.summary
    ooc = report.trend[report.trend["out_of_control"] != ""]
    typer.echo(f"{len(dataset)} wafers in {len(s)} lots, lot yield {s['yield'].min():.1%}–{s['yield'].max():.1%}; "
               f"{len(report.stacks)} stacked maps; {ooc['lot'].nunique()} lot(s) out of control on some "
               f"signature; wrote {out}/index.html", err=True)
