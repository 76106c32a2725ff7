"""`waferscope export --run RUN --format onnx [--int8] --out FILE`: deploy a trained model."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Option(..., "--run", "-r", help="A run directory (model.json + weights.safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="The ONNX file to write."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to INT8 with onnxruntime."),
    int8_mode: str = typer.Option("static", "--int8-mode", help="static (calibrated activations) or dynamic (weights only)."),
    calibration: str = typer.Option("synthetic:n=256,seed=12345", "--calibration",
                                    help="Maps that calibrate static INT8 ranges (any data spec)."),
) -> None:
    """Export a classifier or detector: uint8 die-state maps in, probabilities or (score, map) out."""
    from waferscope.export import export_run

    calib = None
    if int8 and int8_mode == "static":
        from waferscope.data import load

        calib = load(calibration)
    path = export_run(run, out, fmt, int8_mode if int8 else None, calib)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.1f} KB)")


def register(app: typer.Typer) -> None:
    """Add this module's top-level command(s) to the main app."""
    app.command("export")(export)
