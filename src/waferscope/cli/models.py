"""`waferscope models`: what every registered model and every bundled one is, in one line each."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)


def _summary(obj) -> str:
    lines = (obj.__doc__ or "").strip().splitlines()
    if lines:
        return lines[0].rstrip(".")
    return "" if getattr(obj, "__module__", "").startswith("waferscope.") else f"{obj.__module__}.{obj.__qualname__}"


def model_table() -> list[dict]:
    """One row per registered classifier/detector/backbone and per bundled model (name, kind,
    summary; bundled rows also the registered model they are and whether they are a default)."""
    from waferscope import registry
    from waferscope.models import classifiers, detectors

    from waferscope.models.backbones import wafer_weights_path

    rows = [{"kind": kind, "name": name, "summary": _summary(registry.get(name, kind))}
            for kind in ("classifier", "detector", "backbone") for name in registry.available(kind)]
    for r in rows:
        if r["kind"] == "backbone" and not r["summary"]:
            r["summary"] = ("wafer-domain weights shipped (pretrained='wafer')" if wafer_weights_path(r["name"]).is_file()
                            else "random init, or a torchvision checkpoint from a local file")
    defaults = {("classifier", classifiers.DEFAULT_FOR_LABELS): "default for classify",
                ("classifier", classifiers.DEFAULT_FOR_EXPLANATIONS): "default for explain",
                ("detector", detectors.DEFAULT_DETECTOR): "default for detect"}
    for kind, pkg in (("classifier", classifiers), ("detector", detectors)):
        for name, run_dir in pkg.BUNDLED.items():
            model = json.loads((run_dir / "model.json").read_text())["name"] if (run_dir / "model.json").is_file() else "?"
            rows.append({"kind": f"bundled {kind}", "name": name, "model": model,
                         "default": defaults.get((kind, name), ""), "summary": pkg.BUNDLED_SUMMARY.get(name, "")})
    return rows


def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table")) -> None:
    """List the registered models (what `--model` takes) and the bundled ones (what `--bundled` takes)."""
    rows = model_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for kind in dict.fromkeys(r["kind"] for r in rows):
        typer.echo(f"\n{kind}s:")
        for r in (r for r in rows if r["kind"] == kind):
            extra = f" [{r['model']}{', ' + r['default'] if r.get('default') else ''}]" if "model" in r else ""
            typer.echo(f"  {r['name']:<30}{extra} {r['summary']}")
