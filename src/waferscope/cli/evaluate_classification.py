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
    from waferscope.cli.checks import shared_default

    sample_path = shared_default(sample, LSWMD_SAMPLE, "--sample FILE", "labelled maps none of the models trained on")
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


def classifiers(
    methods: List[str] = typer.Argument(..., help="Registered classifier names, each optionally name:param=value,...; "
                                        "a+b averages the members' cached probabilities"),
    folds: List[int] = typer.Option([], "--fold", help="Run only this fold (0-4); repeatable (default: all 5)"),
    synthetic: int = typer.Option(1500, "--synthetic", min=0, help="Synthetic maps added to every fold's training set"),
    dev: Optional[Path] = typer.Option(None, "--dev", help="First labelled set (default: the shared wm811k_dev.npz)"),
    dev2: Optional[Path] = typer.Option(None, "--dev2", help="Second labelled set (default: the shared wm811k_dev2.npz)"),
    work: Path = typer.Option(Path("results/lot_kfold"), "--work", help="Per-(method, fold) caches; reruns reuse them"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads (speeds are per this many)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Append each method's report as one JSON line"),
) -> None:
    """Lot-grouped k-fold on the real labelled sets: pooled macro-F1, fold spread, per-class F1, per-set macro-F1."""
    from waferscope.benchmark.measure import append_json_line
    from waferscope.evaluate import classification as ev

    bad = [k for k in folds if not 0 <= k < ev.N_FOLDS]
    if bad:
        raise ConfigError(f"--fold must be 0..{ev.N_FOLDS - 1}, got {bad[0]}")
    for m in methods:
        for member in m.split("+"):
            ev.parse_method(member)
    sets = _sets_and_threads(dev, dev2, threads)
    reports = ev.lot_kfold(methods, sets, folds=folds or range(ev.N_FOLDS), synthetic=synthetic, work=work,
                           progress=lambda msg: typer.echo(msg, err=True))
    for method, rep in reports.items():
        typer.echo(f"{method}: macro-F1 {rep['macro_f1']:.4f} ± {rep['fold_sd']:.4f} over {rep['n']} maps "
                   f"({rep['folds']} folds); dev {rep.get('macro_f1_dev', float('nan')):.4f}, "
                   f"dev2 {rep.get('macro_f1_dev2', float('nan')):.4f}; "
                   + " ".join(f"{c} {v:.3f}" for c, v in rep["per_class_f1"].items()))
        if json_out is not None:
            append_json_line(json_out, {"method": method, **rep})


def _sets_and_threads(dev: Optional[Path], dev2: Optional[Path], threads: int) -> dict:
    """Return the two labelled sets (default: the shared files), after setting torch's thread count."""
    import torch

    from waferscope.data import load
    from waferscope.data.paths import DEV2_MAPS, DEV_MAPS

    from waferscope.cli.checks import shared_default

    own = "a labelled .npz/.parquet/folder of maps with lot names; both sets pooled into lot-grouped folds"
    dev = shared_default(dev, DEV_MAPS, "--dev FILE --dev2 FILE", own)
    dev2 = shared_default(dev2, DEV2_MAPS, "--dev FILE --dev2 FILE", own)
    torch.set_num_threads(threads)
    return {"dev": load(str(dev)), "dev2": load(str(dev2))}


DEV_OPT = typer.Option(None, "--dev", help="First labelled set (default: the shared wm811k_dev.npz)")
DEV2_OPT = typer.Option(None, "--dev2", help="Second labelled set (default: the shared wm811k_dev2.npz)")
WORK_OPT = typer.Option(Path("results/lot_kfold"), "--work", help="Caches; reruns reuse them")
THREADS_OPT = typer.Option(1, "--threads", min=1, help="torch threads (speeds are per this many)")
SYNTHETIC_OPT = typer.Option(1500, "--synthetic", min=0, help="Synthetic maps added to every training set")


def learning_curve(
    method: str = typer.Argument(..., help="A registered classifier, optionally name:param=value,..."),
    fractions: List[float] = typer.Option([0.125, 0.25, 0.5, 1.0], "--fractions", help="Parts of each fold's "
                                          "real training lots to train on (whole lots, seeded); repeatable"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also draw the curve to this PNG"),
    synthetic: int = SYNTHETIC_OPT, dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT,
    work: Path = WORK_OPT, threads: int = THREADS_OPT,
) -> None:
    """Lot learning curve: the lot-grouped protocol with each fold's real training maps cut to whole-lot fractions."""
    from waferscope.evaluate import classification as ev

    ev.parse_method(method)
    for f in fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"--fractions must be in (0, 1], got {f}")
    sets = _sets_and_threads(dev, dev2, threads)
    points = ev.learning_curve(method, sets, fractions, synthetic=synthetic, work=work,
                               progress=lambda msg: typer.echo(msg, err=True))
    for f, rep in points:
        typer.echo(f"fraction {f:g}: {rep['n_real_train']:,.0f} real training maps per fold  macro-F1 "
                   f"{rep['macro_f1']:.4f} ± {rep['fold_sd']:.4f}  dev2 {rep.get('macro_f1_dev2', float('nan')):.4f}  "
                   + " ".join(f"{c} {v:.3f}" for c, v in rep["per_class_f1"].items()))
    if out is not None:
        ev.plot_learning_curve(points, method, out)
        typer.echo(f"wrote {out}")


def cross_set(
    method: str = typer.Argument(..., help="A registered classifier, optionally name:param=value,..."),
    synthetic: int = SYNTHETIC_OPT, dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT,
    work: Path = WORK_OPT, threads: int = THREADS_OPT,
) -> None:
    """How much each set adds: train on dev (+ synthetic) → test on all of dev2, and the reverse."""
    from waferscope.evaluate import classification as ev

    ev.parse_method(method)
    sets = _sets_and_threads(dev, dev2, threads)
    for direction, rep in ev.cross_set(method, sets, synthetic=synthetic, work=work,
                                       progress=lambda msg: typer.echo(msg, err=True)).items():
        typer.echo(f"{method} {direction}: macro-F1 {rep['macro_f1']:.4f} accuracy {rep['accuracy']:.4f} "
                   f"over {rep['n']} maps; " + " ".join(f"{c} {v:.3f}" for c, v in rep["per_class_f1"].items()))


def prior_shift(
    method: str = typer.Argument(..., help="A method already run by `evaluate classifiers` (a+b averages members)"),
    draws: int = typer.Option(20, "--draws", min=1, help="Draws per class mix"),
    size: int = typer.Option(20_000, "--size", min=1, help="Maps per draw"),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws"),
    dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT, work: Path = WORK_OPT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report (JSON) to this file"),
    per_fold: bool = typer.Option(False, "--per-fold", help="Draw each lot fold's held-out maps separately and "
                                  "report the smallest estimate - balanced gain over the folds"),
    calibrate: bool = typer.Option(False, "--calibrate", help="With --per-fold: first calibrate each fold's "
                                   "probabilities by a temperature fitted on the other folds"),
) -> None:
    """Re-draw the cached held-out lot-fold predictions in other class mixes, scored balanced / given / estimate."""
    import json

    from waferscope.evaluate import classification as ev
    from waferscope.evaluate.lot_analysis import prior_shift as run
    from waferscope.evaluate.lot_analysis import prior_shift_folds
    from waferscope.utils import atomic_path

    if calibrate and not per_fold:
        raise ConfigError("--calibrate needs --per-fold (the temperature of a fold is fitted on the others)")
    pooled, _, _ = ev.pool_sets(_sets_and_threads(dev, dev2, 1))
    if per_fold:
        import numpy as np

        report = prior_shift_folds(method, pooled.labels, work, draws=draws, size=size, seed=seed,
                                   calibrate=calibrate)
        if calibrate:
            typer.echo("temperatures per fold (fitted on the other folds): "
                       + ", ".join(f"{t:.3f}" for t in report["temperatures"]))
        typer.echo("| method | class mix | balanced | given mix | estimate | min over folds: estimate - balanced "
                   "| EM mix error (TV) |\n|---|---|---:|---:|---:|---:|---:|")
        for mix, res in report.items():
            if mix == "temperatures":
                continue
            mean = {k: np.mean([f[k]["macro_f1_mean"] for f in res["folds"]]) for k in ("balanced", "given", "estimate")}
            typer.echo(f"| {method}{' (calibrated)' if calibrate else ''} | {mix} | {mean['balanced']:.3f} | "
                       f"{mean['given']:.3f} | {mean['estimate']:.3f} | {res['min_gain']:+.4f} | {res['mix_error']:.3f} |")
        if json_out is not None:
            with atomic_path(json_out) as tmp:
                tmp.write_text(json.dumps({method: report}, indent=1))
        return
    report = run(method, pooled.labels, work, draws=draws, size=size, seed=seed)
    typer.echo("| method | class mix | balanced (default) | `--prior` given mix | `--prior estimate` |\n"
               "|---|---|---:|---:|---:|")
    for mix, res in report.items():
        typer.echo(f"| {method} | {mix} | " + " | ".join(f"{res[k]['macro_f1_mean']:.3f} ± {res[k]['macro_f1_sd']:.3f}"
                                                         for k in ("balanced", "given", "estimate")) + " |")
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({method: report}, indent=1))


def calibrate(
    method: str = typer.Argument(..., help="A method already run by `evaluate classifiers` (its out-of-fold "
                                 "predictions fit the temperature)"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Store the temperature in this saved run of the "
                                           "same method (e.g. src/waferscope/weights/classifier_gbm)"),
    dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT, work: Path = WORK_OPT,
) -> None:
    """Fit a temperature on the lot-fold out-of-fold predictions; optionally store it with a saved run."""
    from waferscope.base import load_run
    from waferscope.evaluate import classification as ev
    from waferscope.evaluate.lot_analysis import out_of_fold_temperature

    pooled, _, _ = ev.pool_sets(_sets_and_threads(dev, dev2, 1))
    temperature = out_of_fold_temperature(method, pooled.labels, work)
    typer.echo(f"{method}: temperature {temperature:.4f} (out-of-fold, {len(pooled)} maps)")
    if run_dir is not None:
        clf = load_run(run_dir, kind="classifier")
        if not clf.get_tags().temperature:
            raise ConfigError(f"{run_dir}: a {clf.registry_name} run cannot store a temperature")
        clf.set_temperature(round(temperature, 4)).save(run_dir, overwrite=True)  # storing into this run is what was asked
        typer.echo(f"stored in {run_dir}")


def errors(
    method: str = typer.Argument(..., help="A method already run by `evaluate classifiers` (a+b averages members)"),
    out: Path = typer.Option(..., "--out", help="The gallery PNG"),
    pairs: int = typer.Option(6, "--pairs", min=1, help="Most frequent confusions to draw"),
    per_pair: int = typer.Option(8, "--per-pair", min=1, help="Maps drawn per confusion"),
    dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT, work: Path = WORK_OPT,
) -> None:
    """Gallery of the most frequent confusions in the cached lot-fold predictions."""
    from waferscope.evaluate import classification as ev
    from waferscope.evaluate.lot_analysis import plot_errors

    pooled, _, _ = ev.pool_sets(_sets_and_threads(dev, dev2, 1))
    top = plot_errors(method, pooled, work, out, pairs=pairs, per_pair=per_pair)
    for (label, predicted), count in top:
        typer.echo(f"  {label} -> {predicted}: {count}")
    typer.echo(f"wrote {out}")


def student(
    teacher: str = typer.Argument(..., help="The teacher: a registered classifier, optionally name:param=value,..."),
    student: str = typer.Argument(..., help="The student: a classifier that learns from a teacher (kd_student, "
                                  "cnn_fine), optionally name:param=value,..."),
    folds: List[int] = typer.Option([], "--fold", help="Run only this fold (0-4); repeatable (default: all 5)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also draw teacher vs student per fold to this PNG"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Append the report as one JSON line"),
    unlabelled: Optional[Path] = typer.Option(None, "--unlabelled", help="Unlabelled maps (e.g. the shared "
                                              "wm811k_unlabelled.npz) added to every fold's student training "
                                              "set as transfer maps"),
    synthetic: int = SYNTHETIC_OPT, dev: Optional[Path] = DEV_OPT, dev2: Optional[Path] = DEV2_OPT,
    work: Path = WORK_OPT, threads: int = THREADS_OPT,
) -> None:
    """Student check on the lot protocol: one teacher per fold, the student distilled from it; retention, size."""
    from waferscope.benchmark.measure import append_json_line
    from waferscope.evaluate import classification as ev
    from waferscope.evaluate.student import check_student, plot_retention, student_retention

    bad = [k for k in folds if not 0 <= k < ev.N_FOLDS]
    if bad:
        raise ConfigError(f"--fold must be 0..{ev.N_FOLDS - 1}, got {bad[0]}")
    ev.parse_method(teacher)
    check_student(student)
    sets = _sets_and_threads(dev, dev2, threads)
    transfer = None
    if unlabelled is not None:
        from waferscope.data import load
        from waferscope.errors import DataError

        transfer = load(str(unlabelled))
        if transfer.is_labelled.any():
            raise DataError(f"{int(transfer.is_labelled.sum())} of its {len(transfer)} maps carry labels; "
                            "--unlabelled must hold unlabelled maps only", unlabelled)
    rep = student_retention(teacher, student, sets, folds=folds or range(ev.N_FOLDS), synthetic=synthetic,
                            work=work, progress=lambda msg: typer.echo(msg, err=True), unlabelled=transfer)
    t, s = rep["teacher_report"], rep["student_report"]
    for k, tf, sf, r in zip(rep["folds"], t["per_fold"], s["per_fold"], rep["retention_per_fold"]):
        typer.echo(f"fold {k}: teacher {tf:.4f}  student {sf:.4f}  retention {r:.1f} %")
    params = (f"; parameters {rep['student_parameters']:,} / {rep['teacher_parameters']:,} = "
              f"{rep['parameter_ratio']:.1f} %" if rep["parameter_ratio"] else "")
    typer.echo(f"pooled macro-F1: teacher {t['macro_f1']:.4f}, student {s['macro_f1']:.4f} "
               f"({rep['retention_pooled']:.1f} %); retention mean over folds {rep['retention_mean']:.1f} %{params}; "
               f"agreement {100 * rep['agreement']:.1f} %; test-fold wafers/s teacher {t['wafers_per_second']:,.0f}, "
               f"student {s['wafers_per_second']:,.0f} (the speed benchmark: benchmarks/bench_student.py)")
    if out is not None:
        plot_retention(rep, out)
        typer.echo(f"wrote {out}")
    if json_out is not None:
        append_json_line(json_out, rep)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `evaluate` group."""
    app.command("heldout")(heldout)
    app.command("classifiers")(classifiers)
    app.command("learning-curve")(learning_curve)
    app.command("cross-set")(cross_set)
    app.command("prior-shift")(prior_shift)
    app.command("calibrate")(calibrate)
    app.command("errors")(errors)
    app.command("student")(student)
