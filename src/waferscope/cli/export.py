"""`waferscope export (--run RUN | --bundled NAME) --format onnx [--int8] --out FILE`: deploy a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from waferscope.errors import ConfigError


def bundled_run_dir(name: str) -> Path:
    """Return the run directory of a bundled classifier or detector.

    By its current name (the names of the two kinds do not overlap; the old adjective names
    do, so no aliases here).
    """
    from waferscope.base import resolve_bundled_name
    from waferscope.models.classifiers import BUNDLED as CLASSIFIERS
    from waferscope.models.detectors import BUNDLED as DETECTORS

    bundled = {**CLASSIFIERS, **DETECTORS}
    return bundled[resolve_bundled_name(bundled, name, "model")]


def export(
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="A run directory (model.json + weights.safetensors)."),
    bundled: Optional[str] = typer.Option(None, "--bundled", help="Instead of --run: a bundled model by name "
                                          "(cnn_distilled, cnn_gradcam, autoencoder export; gbm and "
                                          "pattern_contrast are trees and do not)."),
    out: Path = typer.Option(..., "--out", "-o", help="The ONNX file to write."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to INT8 with onnxruntime."),
    int8_mode: str = typer.Option("static", "--int8-mode", help="static (calibrated activations) or dynamic (weights only)."),
    calibration: str = typer.Option("synthetic:n=256,seed=12345", "--calibration",
                                    help="Maps that calibrate static INT8 ranges (any data spec)."),
) -> None:
    """Export a classifier or detector: uint8 die-state maps in, probabilities or (score, map) out."""
    from waferscope.export import export_run

    from waferscope.cli.checks import check_out_file

    if (run is None) == (bundled is None):
        raise ConfigError("give --run RUN or --bundled NAME (one of them)")
    check_out_file(out, example="model.onnx")
    calib = None
    if int8 and int8_mode == "static":
        from waferscope.data import load

        calib = load(calibration)
    path = export_run(run if run is not None else bundled_run_dir(bundled), out, fmt, int8_mode if int8 else None, calib)
    typer.echo(describe_export(path, calibration if int8 and int8_mode == "static" else None))


def describe_export(path: Path, calibration: Optional[str]) -> str:
    """Return what a deployment must know, read back from the file's own metadata.

    The input layout, the outputs, and whether INT8 was applied (and calibrated on what).
    """
    from waferscope.export import read_metadata

    meta = read_metadata(path)
    s, batch = meta["size"], meta.get("batch")
    precision = ("FP32" if not meta.get("int8") else f"INT8 ({meta['int8']}"
                 + (f", activations calibrated on {calibration})" if calibration else ", weights only)"))
    outputs = (f"probabilities (N × {len(meta.get('classes') or [])}: {', '.join(meta.get('classes') or [])})"
               if meta["kind"] == "classifier" else f"scores (N) and anomaly_maps (N × {s} × {s})")
    return (f"wrote {path} ({path.stat().st_size / 1024:.1f} KB): {meta['kind']} {meta['name']}, {precision}.\n"
            f"  input 'maps': uint8, {batch or 'N'} × {s} × {s} die states (0 no die, 1 pass, 2 fail); resize each "
            f"map to {s} × {s} by nearest neighbour first (waferscope.data.preprocess.resize_maps)"
            + ("" if batch is None else f"; the batch size is fixed at {batch}") + f"\n  outputs: {outputs}")


def register(app: typer.Typer) -> None:
    """Add this module's top-level command(s) to the main app."""
    app.command("export")(export)
