"""Pieces every command group shares.

Reading several data specs, `--set key=value` options, atomic text output and loading the
classifier a command acts on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from waferscope.errors import ConfigError, RunDirError

DATA_HELP = "Data SPEC: a file/folder load() reads, or synthetic:n=N,seed=S"
PASS_BINS_HELP = ("Fab map files (STDF, E142, G85, KLARF, CSV die list): bins that pass, e.g. 1,2 or 1-3; "
                  "'1,2/3-9' also lists the fail bins and makes any other bin an error. Default: each "
                  "format's own (see docs/data.md).")

# written with ", " between the pairs in the help: a 40-character word is cut by rich at 80 columns
COLUMNS_HELP = ("CSV die lists: which columns hold what, e.g. x=DIE_X, y=DIE_Y, bin=HBIN, wafer=WAFER, lot=LOT "
                "(one word: comma-separated, no spaces) "
                "(also pass_fail=COL, and y_axis=down when y grows downwards). Default: common names "
                "such as X/DIE_X, HARD_BIN/HBIN/SBIN, PASS_FAIL, WAFER_ID, LOT_ID (see docs/data.md).")

RETEST_HELP = ("STDF dies probed more than once without a retest flag: keep the last result (default), the "
               "first, or the worst (a fail anywhere fails the die). Retest-flagged results always replace.")

# --max-dies of `classify predict` / `detect score`: files from elsewhere are untrusted; their stated
# sizes are checked against this before the maps are allocated (waferscope.data.limits). 2e9 dies is
# ~2 GB as uint8: above any real archive that fits in memory, below what a few-kB hostile file states.
MAX_DIES_OPTION = typer.Option(2_000_000_000, "--max-dies", min=1, help="Refuse input stating more dies "
                               "(summed over its maps) than this, before reading the maps")


def load_data(specs: List[str], pass_bins: Optional[str] = None, retest: Optional[str] = None,
              columns: Optional[str] = None, max_dies: Optional[int] = None):
    """Load one spec, or concatenate several into one data set.

    ``pass_bins``, ``retest``, ``columns``: see ``load``; ``max_dies``: the LoadLimits bound on
    each spec's dies.
    """
    from waferscope.data import load
    from waferscope.data.dataset import WaferDataset
    from waferscope.data.limits import DEFAULT_LIMITS

    limits = None if max_dies is None else dataclasses.replace(DEFAULT_LIMITS, max_dies=max_dies)
    parts = [load(s, pass_bins=pass_bins, retest=retest, columns=columns, limits=limits) for s in specs]
    return parts[0] if len(parts) == 1 else WaferDataset.concat(parts, name="+".join(p.name for p in parts))


def parse_set(pairs: List[str]) -> dict:
    """`--set key=value` options → constructor params (:func:`waferscope.utils.parse_params`)."""
    from waferscope.utils import parse_params

    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
    return parse_params(pairs)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temp file renamed into place)."""
    from waferscope.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)


def load_model(run: Optional[Path], bundled: Optional[str], kind: str, default: Optional[str] = None):
    """(model, its run directory).

    The ``kind`` in ``run``, or a bundled one (``bundled`` if given, else ``default``, else the
    package's default) when no run is given. Giving both is an error.
    """
    model, run_dir, _ = load_model_described(run, bundled, kind, default)
    return model, run_dir


def load_model_described(run: Optional[Path], bundled: Optional[str], kind: str,
                         default: Optional[str] = None):
    """:func:`load_model` plus how to name the model in outputs.

    The run directory, or ``bundled (<current name>)`` — resolved once, so every output
    names the model that ran.
    """
    from waferscope.base import load_run, resolve_bundled_name

    if run is not None and bundled is not None:
        raise ConfigError("give --run or --bundled, not both")
    if run is not None:
        return load_run(run, kind=kind), run, str(run)
    if kind == "classifier":
        from waferscope.models.classifiers import BUNDLED, BUNDLED_ALIASES, DEFAULT_FOR_LABELS as fallback
    else:
        from waferscope.models.detectors import BUNDLED, BUNDLED_ALIASES, DEFAULT_DETECTOR as fallback
    from waferscope.base import load_bundled

    which = resolve_bundled_name(BUNDLED, bundled or default or fallback, kind, BUNDLED_ALIASES)
    if not (Path(BUNDLED[which]) / "model.json").is_file():
        command = "classify" if kind == "classifier" else "detect"
        raise RunDirError(f"no bundled {kind} is installed: pass --run with a run directory from "
                          f"`waferscope {command} train`", BUNDLED[which])
    return load_bundled(BUNDLED, which, kind), BUNDLED[which], f"bundled ({which})"


def load_classifier(run: Optional[Path], bundled: Optional[str], default: str):
    """Return the classifier in a run directory, or a bundled one.

    ``bundled`` if given, else ``default`` (``classify`` and ``explain`` default to different
    ones; see ``models.classifiers.BUNDLED``).
    """
    return load_model(run, bundled, "classifier", default)[0]


# The --engine options of `classify predict` and `detect score` (waferscope.scale.run_cli).
ENGINE_OPTION = typer.Option("local", "--engine", help="local: this process, one CSV; dask: one Dask task per "
                             "Parquet partition of --data, --out is a folder of one .parquet per partition")
SCHEDULER_OPTION = typer.Option(None, "--scheduler", help="--engine dask: an existing scheduler "
                                "(tcp://HOST:8786); default: a LocalCluster on this machine")
WORKERS_OPTION = typer.Option(2, "--workers", help="--engine dask without --scheduler: LocalCluster worker processes")
# --pass-bins on the Dask path (waferscope.scale.run_cli refuses it with this reason).
PASS_BINS_REFUSED = ("it maps the bins of fab files (STDF, E142, G85, KLARF, CSV die lists), and Parquet "
                     "partitions hold die states already; convert fab files to Parquet first "
                     "(waferscope data import FILE --out PART.parquet --pass-bins …) or score them with --engine local")
RETEST_REFUSED = ("it chooses among the results of re-probed STDF dies, and Parquet partitions hold die states "
                  "already; convert STDF files to Parquet first (waferscope data import FILE --out PART.parquet "
                  "--retest …) or score them with --engine local")
COLUMNS_REFUSED = ("it names the columns of CSV die lists, and Parquet partitions have none: import the CSV first "
                   "(waferscope data import FILE.csv --out PART.parquet --columns …) or score it with --engine local")


def fab_options_refused(pass_bins: Optional[str], retest: Optional[str] = None,
                        columns: Optional[str] = None) -> Optional[dict]:
    """Return the fab-file options given, with the reason the Dask path refuses each (None: none given)."""
    given = {"--pass-bins": (pass_bins, PASS_BINS_REFUSED), "--retest": (retest, RETEST_REFUSED),
             "--columns": (columns, COLUMNS_REFUSED)}
    return {opt: why for opt, (value, why) in given.items() if value is not None} or None


OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="--engine dask: replace a non-empty --out folder")
