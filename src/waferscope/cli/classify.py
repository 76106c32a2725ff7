"""`waferscope classify train | evaluate | predict`.

SPEC is anything :func:`waferscope.data.load` reads (a .parquet/.npz/.pkl file, a folder, or
``synthetic:n=…,seed=…``). Without ``--run``, ``evaluate`` and ``predict`` use a bundled model:
``--bundled cnn_distilled`` (the default: ``cnn_fine`` distilled from ``gbm``), ``--bundled cnn_gradcam``
(``cnn_fine`` trained to localise, the model ``explain`` uses) or ``--bundled gbm`` (the most accurate).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from waferscope.cli.checks import check_out_dir, check_out_file, check_run_dir
from waferscope.cli.common import (DATA_HELP, ENGINE_OPTION, OVERWRITE_OPTION, COLUMNS_HELP, PASS_BINS_HELP, RETEST_HELP,
                                   MAX_DIES_OPTION, SCHEDULER_OPTION, WORKERS_OPTION, fab_options_refused,
                                   load_data, load_model_described,
                                   parse_set, write_text_atomic)
from waferscope.errors import ConfigError, DataError

app = typer.Typer(no_args_is_help=True, help="Train, evaluate and apply defect-pattern classifiers.")

RUN_OPTION = typer.Option(None, "--run", help="Classifier run directory (default: a bundled model)")
BUNDLED_OPTION = typer.Option(None, "--bundled", help="Without --run: 'gbm' (default; gradient-boosted trees "
                              "on 120 compiled wafer features, ~8,000 wafers/s on 2 CPU cores "
                              "for WM-811K-size maps, slower on large grids), 'ensemble' (the mean of gbm and "
                              "cnn_distilled: the most accurate, about half the speed), 'cnn_distilled' (cnn_fine distilled "
                              "from gbm, ~7,000 wafers/s, its cost growing little with the grid; 8,000-9,000 as an INT8 ONNX export; "
                              "the --engine dask default) or 'cnn_gradcam' (the same network trained so that its "
                              "Grad-CAM sits on the pattern, the model `explain` uses; less accurate)")
PRIOR_OPTION = typer.Option("balanced", "--prior", help="Class mix of these wafers: 'balanced' (the model's "
                            "own, default), 'wm811k' (85 % none, like a fab's stream), 'estimate' (learnt "
                            "from these maps without labels), 'Center=3,none=85,...' or a .json file")


def note_small_estimate(shift, n_maps: int) -> None:
    """``--prior estimate`` learns the class mix from the batch itself: say so when the batch is small."""
    from waferscope.models.classifiers.prior import MIN_MAPS_TO_ESTIMATE

    if shift.estimates and n_maps < MIN_MAPS_TO_ESTIMATE:
        typer.echo(f"note: --prior estimate on {n_maps} maps is a rough guess; it needs a batch of a few "
                   f"hundred maps in the mix to adapt to (or give the mix: --prior wm811k / Class=w,...)", err=True)


def report_prior(shift, prior: str, classes, used, n_maps: int) -> None:
    """Print the class mix ``predict`` moved the probabilities to (and the small-batch note for ``estimate``)."""
    note_small_estimate(shift, n_maps)
    if shift.estimates:  # measured on the lot-grouped folds (docs/classification_real.md, "Class mix")
        typer.echo("warning: --prior estimate moves only the share of none; on lot-disjoint real maps it raised "
                   "macro-F1 in mostly-clean batches (+0.05 at 85 % none) but can lower it slightly in others "
                   "(by up to 0.001)", err=True)
    typer.echo(f"class mix ({prior}): " + ", ".join(f"{c} {p:.3f}" for c, p in zip(classes, used)), err=True)


def check_training_labels(dataset, where: str, extra: tuple[str, ...] = ()) -> None:
    """Wafer-map training labels must be WM-811K class names, names given with --add-class (``extra``).

    Or empty = unlabelled.
    """
    from waferscope.data.classes import CLASSES, UNLABELLED

    if dataset.kind != "wafer":
        return
    names = set(dataset.labels.astype(str).tolist()) - {UNLABELLED}
    unknown = sorted(names - set(CLASSES) - set(extra))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise DataError(f"unknown class name(s) in the training labels: {shown}; "
                        f"expected WM-811K classes: {', '.join(CLASSES)}", where)


def parse_add_class(spec: str) -> tuple[str, Path, int]:
    """``NAME=DISCOVER_DIR:CLUSTER`` → (name, folder, cluster id), or one clear ConfigError."""
    name, eq, rest = spec.partition("=")
    folder, colon, cluster = rest.rpartition(":")
    if not eq or not colon or not name.strip() or not folder or not cluster.strip().isdigit():
        raise ConfigError(f"--add-class {spec!r}: expected NAME=DISCOVER_DIR:CLUSTER, e.g. "
                          "Spiral=new_patterns/:3 (a cluster number from the folder's clusters.csv)")
    return name.strip(), Path(folder), int(cluster)


@app.command()
def train(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (repeat to combine sets)"),
    model: str = typer.Option("cnn_fine", "--model", help="Classifier name: cnn_fine (the bundled architecture), "
                              "gbm (most accurate), cnn, resnet18, svm-linear, svm-rbf, ..."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (model.json + weights.safetensors)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (network models)"),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed → same model)"),
    set_: List[str] = typer.Option([], "--set", help="Any other model parameter, key=value (JSON values)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory at --out"),
    open_set: bool = typer.Option(False, "--open-set", help="Also fit an open-set scorer saved with the run, so "
                                  "`classify predict --abstain` can answer 'unknown': a fifth of the labelled lots "
                                  "is held out to calibrate it and the classifier trains on the rest (docs/search.md)"),
    abstain_rate: float = typer.Option(0.05, "--abstain-rate", min=0.001, max=0.5, help="With --open-set: share of "
                                       "known wafers (held-out lots) the scorer sets aside as unknown"),
    add_class: List[str] = typer.Option([], "--add-class", metavar="NAME=DIR:ID", help="Train on the wafers of "
                                        "cluster ID of a `waferscope discover` output folder DIR as a new class "
                                        "NAME (repeatable)"),
) -> None:
    """Train a classifier on labelled maps and save it as a run directory."""
    from waferscope import registry

    check_run_dir(out, overwrite)  # before minutes of training, not after

    cls = registry.get(model, "classifier")
    params = parse_set(set_)
    params["seed"] = seed
    if epochs is not None:
        params["epochs"] = epochs
    valid = set(cls._param_names())
    params = cls.translate_params(params)  # retired names (one release): today's, with a note
    bad = sorted(set(params) - valid)
    if bad:
        if bad == ["epochs"]:
            raise ConfigError(f"{model} has no --epochs (it is not trained by epochs)")
        raise ConfigError(f"{model} has no parameter(s) {', '.join(bad)}; it takes: {', '.join(sorted(valid))}")
    cls(**params).validate_params()  # a bad value is refused before the data is read
    added = [parse_add_class(spec) for spec in add_class]  # a bad spec fails before the data is read
    dataset = load_data(data)
    check_training_labels(dataset, ", ".join(data), extra=tuple(name for name, _, _ in added))
    if added:
        from waferscope.data import WaferDataset
        from waferscope.search.discover import cluster_as_class

        new = [cluster_as_class(folder, cluster, name) for name, folder, cluster in added]
        for (name, folder, cluster), part in zip(added, new):
            typer.echo(f"new class {name}: {len(part)} wafers of cluster {cluster} in {folder}", err=True)
        dataset = WaferDataset.concat([dataset, *new], name=dataset.name)
    typer.echo(f"training {model} on {int(dataset.is_labelled.sum())} labelled maps …", err=True)
    if open_set:
        from waferscope.search.discover import save_open_set, train_with_open_set

        clf, scorer = train_with_open_set(cls(**params), dataset, seed=seed, abstain_rate=abstain_rate, progress=True)
        clf.save(out, overwrite=overwrite)
        save_open_set(scorer, out)
        typer.echo(f"open-set scorer ({', '.join(scorer.scorer.parts)}) calibrated on held-out lots, threshold "
                   f"{scorer.scorer.threshold_:.4f} (abstains on {abstain_rate:.1%} of known wafers)", err=True)
    else:
        clf = cls(**params).fit(dataset)
        clf.save(out, overwrite=overwrite)
    typer.echo(f"trained {model} on {int(dataset.is_labelled.sum())} maps "
               f"({', '.join(clf.classes_)}); wrote {out}", err=True)


@app.command()
def evaluate(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (labelled maps)"),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json and confusion_matrix.png"),
    run: Optional[Path] = RUN_OPTION,
    bundled: Optional[str] = BUNDLED_OPTION,
    prior: str = PRIOR_OPTION,
) -> None:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1 and a confusion matrix."""
    from waferscope.metrics.classification import (class_mix_macro_f1, classification_report_dict,
                                                   save_confusion_matrix_png)
    from waferscope.models.classifiers import DEFAULT_FOR_LABELS
    from waferscope.models.classifiers.prior import WM811K_LABELLED_COUNTS, resolve_prior

    check_out_dir(out)
    clf, _, described = load_model_described(run, bundled, "classifier", DEFAULT_FOR_LABELS)
    shift = resolve_prior(clf, prior)  # a bad --prior fails before the maps are read and scored
    dataset = load_data(data)
    n_unlabelled = int((~dataset.is_labelled).sum())
    if n_unlabelled:
        typer.echo(f"note: skipping {n_unlabelled} unlabelled map(s) of {len(dataset)}", err=True)
        dataset = dataset.labelled()
    if len(dataset) == 0:
        raise DataError("no labelled maps to evaluate on", ", ".join(data))
    unseen = sorted(set(dataset.labels.astype(str)) - set(clf.classes_))
    if unseen:
        typer.echo(f"note: the model does not know class(es) {', '.join(unseen)}; "
                   f"those maps count as errors", err=True)
    if shift is None:  # the model's own decision (a multi-label one joins names)
        pred, used_prior = clf.predict(dataset), None
    else:
        note_small_estimate(shift, len(dataset))
        proba, used_prior = shift.apply(clf.predict_proba(dataset))
        pred = np.asarray(clf.classes_, dtype=object)[proba.argmax(1)]
    report = classification_report_dict(dataset.labels.astype(str), pred.astype(str), clf.classes_)
    report.update(model=clf.registry_name, run=described,
                  data=list(data),
                  prior=prior,
                  prior_used=None if used_prior is None else dict(zip(clf.classes_, used_prior.round(6).tolist())),
                  # the same predictions weighted to a fab-like mix (85 % none); None unless all 9 classes are here
                  macro_f1_wm811k_mix=class_mix_macro_f1(dataset.labels.astype(str), pred.astype(str),
                                                         WM811K_LABELLED_COUNTS))
    out.mkdir(parents=True, exist_ok=True)
    save_confusion_matrix_png(report["confusion_matrix"], report["classes"], out / "confusion_matrix.png",
                              title=f"{clf.registry_name} on {dataset.name} (n={len(dataset)})")
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    mix = report["macro_f1_wm811k_mix"]
    typer.echo(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
               f"weighted-F1 {report['weighted_f1']:.4f}  (n={len(dataset)})"
               + (f"  macro-F1 on the WM-811K class mix {mix:.4f}" if mix is not None else "")
               + f"; wrote {out}", err=True)


@app.command()
def predict(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Output CSV: id, label (the true one when the data has it), "
                             "predicted, one probability column per class (p_<class>), model (which one ran)"),
    run: Optional[Path] = RUN_OPTION,
    bundled: Optional[str] = BUNDLED_OPTION,
    prior: str = PRIOR_OPTION,
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    retest: Optional[str] = typer.Option(None, "--retest", help=RETEST_HELP),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
    engine: str = ENGINE_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: int = WORKERS_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    max_dies: int = MAX_DIES_OPTION,
    abstain: bool = typer.Option(False, "--abstain", help="Answer 'unknown' for a wafer that fits none of the "
                                 "model's classes, with an open_set_score column; needs a run trained with "
                                 "`classify train --open-set` (docs/search.md)"),
) -> None:
    """Predict the defect class of every map."""
    import io

    from waferscope.models.classifiers import DEFAULT_FOR_LABELS, DEFAULT_FOR_ONNX
    from waferscope.models.classifiers.prior import resolve_prior
    from waferscope.cli.engine import run_cli

    if engine == "local":
        check_out_file(out, example="predictions.csv")
    # The Dask workers run an ONNX export: by default the bundled network, not the trees (no export)
    default = DEFAULT_FOR_LABELS if engine == "local" else DEFAULT_FOR_ONNX
    clf, run_dir, described = load_model_described(run, bundled, "classifier", default)
    shift = resolve_prior(clf, prior)  # a bad --prior fails before the maps are read and scored
    open_set = None
    if abstain:  # the scorer saved with the run, checked before any map is read
        from waferscope.search.discover import load_open_set

        open_set = load_open_set(run_dir, clf.classes_)
    scaled = run_cli(clf, data, out, engine, scheduler, workers, overwrite,
                     fab_options_refused(pass_bins, retest, columns), prior=shift,
                     **({} if open_set is None else {"open_set": open_set}))
    if scaled is not None:
        if shift is not None:
            report_prior(shift, prior, clf.classes_, scaled.prior_used, scaled.rows)
        if scaled.unknown is not None:
            typer.echo(f"abstained on {scaled.unknown} of {scaled.rows} maps (predicted 'unknown', open-set threshold "
                       f"{open_set.scorer.threshold_:.4f}; column open_set_score)", err=True)
        typer.echo(f"classified {scaled.rows} maps in {len(scaled.files)} partitions with Dask ({described}"
                   f"{'' if default == DEFAULT_FOR_LABELS or run or bundled else f': {DEFAULT_FOR_LABELS}, the default, does not export to ONNX'}); "
                   f"wrote {out}/ (one .parquet per partition)", err=True)
        return
    dataset = load_data(data, pass_bins, retest, columns, max_dies)
    if len(dataset) == 0:
        raise DataError("no maps to classify", ", ".join(data))
    if open_set is None:
        proba = clf.predict_proba(dataset)
    else:  # the scorer reads the model's own probabilities (what it was calibrated on), before any prior
        proba, score, names = open_set.classify(clf, dataset)
    if shift is not None:
        proba, used_prior = shift.apply(proba)
        report_prior(shift, prior, clf.classes_, used_prior, len(dataset))
    classes = list(clf.classes_)
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    extra_head, extra = [], [[] for _ in range(len(dataset))]
    if open_set is not None:
        from waferscope.search.open_set import UNKNOWN

        pred[names == UNKNOWN] = UNKNOWN
        extra_head, extra = ["open_set_score"], [[f"{s:.4f}"] for s in score]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "label", "predicted", *[f"p_{c}" for c in classes], *extra_head, "model"])
    for i, row in enumerate(proba):
        writer.writerow([dataset.ids[i], dataset.labels[i], pred[i], *[f"{p:.6f}" for p in row], *extra[i], described])
    write_text_atomic(out, buf.getvalue())
    counts = dict(zip(*np.unique(pred.astype(str), return_counts=True)))
    typer.echo(f"classified {len(dataset)} maps with {described}: "
               + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; wrote {out}", err=True)
    sys.stderr.flush()
