"""`waferscope evaluate` sub-commands for classification protocols (:mod:`waferscope.evaluate.classification`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from waferscope.errors import ConfigError


def heldout(
    run: List[Path] = typer.Option([], "--run", help="Also this classifier run directory; repeatable"),
    prior: str = typer.Option("balanced", "--prior", help="Class mix for the predictions, as `classify predict --prior`"),
    sample: Optional[Path] = typer.Option(None, "--sample", help="Labelled held-out maps (default: the shared "
                                          "LSWMD_sample.pkl)"),
    seen: List[Path] = typer.Option([], "--seen", help="A labelled set the models trained on; its maps are left out "
                                    "of the sample; repeatable (default: the shared dev and dev2 files)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Append each row as one JSON line to this file"),
) -> None:
    """Every bundled classifier (and each --run) on real labelled maps that none of them trained on."""
    from waferscope.base import load_run
    from waferscope.benchmark.measure import append_json_line
    from waferscope.data.paths import DEV2_MAPS, DEV_MAPS, LSWMD_SAMPLE
    from waferscope.evaluate import classification as ev
    from waferscope.models.classifiers import BUNDLED, load_default

    for r in run:
        if not (r / "model.json").is_file():
            raise ConfigError("not a run directory: model.json is missing", r)
    sample_path = sample or LSWMD_SAMPLE
    seen_paths = seen or [p for p in (DEV_MAPS, DEV2_MAPS) if p.exists()]
    held_sample, seen_sets = ev.load_heldout_sample(sample_path, seen_paths)
    models = {name: (lambda name=name: load_default(name)) for name in BUNDLED}
    models.update({str(r): (lambda r=r: load_run(r, kind="classifier")) for r in run})
    rows = ev.heldout(models, held_sample, seen_sets, prior=prior, sample_name=str(sample_path))
    typer.echo(f"{rows[0]['n']} maps of {sample_path.name} are in none of: "
               + ", ".join(p.name for p in seen_paths))
    for row in rows:
        typer.echo(f"{row['model']:14s} accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
                   + "  ".join(f"{c} {v:.2f}" for c, v in row["per_class_f1"].items()))
        if json_out is not None:
            append_json_line(json_out, row)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `evaluate` group."""
    app.command("heldout")(heldout)
