"""`waferscope models`: what every registered model and every bundled one is, in one line each."""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import typer


def register(app: typer.Typer) -> None:
    """Add ``waferscope models`` to ``app``."""
    app.command("models")(models_cmd)


def plain_text(doc: str) -> str:
    """reStructuredText/Sphinx roles as plain words: ``:class:`~a.b.C``` → C, ````x```` → x, `x` → x."""
    doc = re.sub(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0)
                 else m.group(1), doc)
    doc = re.sub(r"``([^`]+)``", r"\1", doc)
    return re.sub(r"`([^`]+)`", r"\1", doc)


def _summary(obj) -> str:
    """Return the first sentence of the docstring's first paragraph (which may span lines), in plain text."""
    paragraph = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())
    if paragraph:
        text = plain_text(paragraph).replace(" (see the module docstring)", "")
        first = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\. (?=[A-Z])|:$", text)[0]  # "et al. 2016" is no end
        return first.rstrip(".: ")
    return "" if getattr(obj, "__module__", "").startswith("waferscope.") else f"{obj.__module__}.{obj.__qualname__}"


def model_table() -> list[dict]:
    """Return one row per registered classifier/detector/backbone and per bundled model.

    Name, kind, summary; bundled rows also the registered model they are and whether they are a
    default.
    """
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
            # wrapped to the terminal, continuation lines under the summary: no line is cut off
            width = max(60, shutil.get_terminal_size((100, 20)).columns)
            typer.echo(textwrap.fill(f"{extra.strip()} {r['summary']}".strip(), width=width,
                                     initial_indent=f"  {r['name']:<30} ", subsequent_indent=" " * 33))
