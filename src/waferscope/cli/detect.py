"""`waferscope detect train | evaluate | score`: unsupervised anomaly detection.

``train`` fits a detector on the *normal* maps of the data only (label ``none``, or ``good`` for
MVTec-layout images) and the model learns its decision threshold (``Detector.calibrate``, saved in
model.json; runs written before keep it in ``threshold.json``, still read):
``--threshold kfold`` is the K-fold mean-of-max rule (per fold, the maximum score of held-out
normals; their mean), ``quantile`` the q-quantile of the training normals' own scores (optimistic:
a detector scores its training data low), ``none`` stores nothing. Without ``--run``, ``evaluate``
and ``score`` use a bundled detector: ``pattern_contrast`` (the default, the best on the real dev
maps) or ``--bundled autoencoder``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from waferscope.cli.checks import check_out_dir, check_out_file, check_run_dir
from waferscope.cli.common import (DATA_HELP, ENGINE_OPTION, OVERWRITE_OPTION, COLUMNS_HELP, PASS_BINS_HELP, RETEST_HELP,
                                   MAX_DIES_OPTION, SCHEDULER_OPTION, WORKERS_OPTION, fab_options_refused,
                                   load_data, load_model_described, parse_set,
                                   write_text_atomic)
from waferscope.errors import ConfigError, DataError

app = typer.Typer(no_args_is_help=True, help="Train, evaluate and apply unsupervised anomaly detectors.")

RUN_OPTION = typer.Option(None, "--run", help="Detector run directory (default: a bundled detector)")
BUNDLED_OPTION = typer.Option(None, "--bundled", help="Without --run: 'pattern_contrast' (default; trees on "
                              "wafer-pattern features) or 'autoencoder' (a network; exports to ONNX)")


def _load_data(specs: List[str], pass_bins: Optional[str] = None, retest: Optional[str] = None,
               columns: Optional[str] = None, max_dies: Optional[int] = None):
    """load_data, plus a check that masks fit their maps (detectors score against them)."""
    ds = load_data(specs, pass_bins, retest, columns, max_dies)
    _check_masks(ds, ", ".join(specs))
    return ds


def _load_detector(run: Optional[Path], bundled: Optional[str]):
    """Return the detector a command scores with: ``--run``, ``--bundled``, or the bundled default."""
    return load_model_described(run, bundled, "detector")


def _check_masks(dataset, where: str) -> None:
    """Masks must match their map's H×W (loaders check this; data built by hand may not)."""
    if dataset.masks is None:
        return
    for i, (m, k) in enumerate(zip(dataset.maps, dataset.masks)):
        if k is not None and np.shape(k)[:2] != m.shape[:2]:
            raise DataError(f"mask of sample {dataset.ids[i]} has shape {np.shape(k)}, its map {m.shape[:2]}", where)


def _select_split(dataset, split: str, auto: str, where: str):
    """Rows of one split: ``auto`` picks ``auto`` ("train"/"test") when the data has both splits."""
    if split == "all":
        return dataset
    splits = dataset.meta["split"].astype(str).str.lower().to_numpy()
    if split == "auto":
        if not ({"train", "test"} <= set(splits)):
            return dataset
        split = auto
        typer.echo(f"note: the data has train and test splits; using the {split} split "
                   f"({int((splits == split).sum())} of {len(dataset)} maps; --split all to use every map)", err=True)
    if split not in ("train", "test"):
        raise ConfigError(f"--split must be auto, train, test or all, got {split!r}")
    sel = splits == split
    if not sel.any():
        raise DataError(f"no maps in the {split} split", where)
    return dataset.subset(sel)


def read_threshold(run_dir: Path) -> dict | None:
    """Return a run's decision threshold as {"threshold": value, "method": ...} without loading its weights.

    Kept for callers of the old threshold.json reader; a loaded detector has threshold_.
    """
    from waferscope.base import read_run_header, read_threshold_json

    doc = read_run_header(run_dir)
    if "threshold" not in doc:
        return read_threshold_json(run_dir)
    thr = doc["threshold"]
    return None if not thr else {"threshold": thr["value"], **{k: v for k, v in thr.items() if k != "value"}}


def _threshold(det) -> dict | None:
    """Return the detector's own decision threshold as {"threshold": value, "method": ...}, or None."""
    if det.threshold_ is None:
        return None
    return {"threshold": det.threshold_, "method": det.threshold_info_.get("method", "")}


def _check_kind(det, dataset, where: str) -> None:
    mode = det.trained_input_kind()
    if mode is not None and mode != dataset.kind:
        raise DataError(f"this detector was trained on {mode} data; the data given is {dataset.kind} data", where)


# `detect train` on wafer maps without --model. Not the bundled default (pattern_contrast): that one
# learns normal maps against simulated WM-811K pattern families, so it finds those families best
# (image AUROC 0.986 vs 0.929 on the dev maps, docs/detection.md) but assumes them; a model trained
# on a fab's own normals without --model should assume nothing but its normals (and take --epochs).
WAFER_TRAIN_DEFAULT = "autoencoder"


@app.command()
def train(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (repeat to combine sets; only normal maps are used)"),
    model: Optional[str] = typer.Option(None, "--model", help="Detector name (`waferscope models` lists them); "
                                        "default: autoencoder for wafer maps (it learns from the normal maps alone; "
                                        "pattern_contrast, the bundled default, scores higher on WM-811K-like "
                                        "defects because it trains against simulated WM-811K patterns: pass "
                                        "--model pattern_contrast for it), the best-ranked image detector for images"),
    out: Path = typer.Option(..., "--out", help="Run directory to write"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (network detectors)"),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed → same model)"),
    threshold: str = typer.Option("quantile", "--threshold", help="Stored decision threshold: kfold, quantile or none"),
    quantile: float = typer.Option(0.99, "--quantile", min=0.5, max=1.0, help="q for --threshold quantile"),
    folds: int = typer.Option(5, "--folds", min=2, help="K for --threshold kfold"),
    set_: List[str] = typer.Option([], "--set", help="Any other detector parameter, key=value (JSON values)"),
    split: str = typer.Option("auto", "--split", help="auto (the train split when the data has train and test), train, test or all"),
    normal: bool = typer.Option(False, "--normal", help="Every map given is normal (e.g. a fab's known-good wafers, "
                                "unlabelled): train on all of them. A map labelled with a defect class is an error"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory at --out"),
) -> None:
    """Fit a detector on the normal maps of the data and save it as a run directory.

    Normal maps are those labelled none (good for images); unlabelled known-good wafers need --normal.
    """
    from waferscope import registry
    from waferscope.models.detectors.common import default_detector_for, training_normals

    if threshold not in ("kfold", "quantile", "none"):
        raise ConfigError(f"--threshold must be kfold, quantile or none, got {threshold!r}")
    check_run_dir(out, overwrite)  # before the training, not after
    where = ", ".join(data)
    dataset = None
    if model is None:  # chosen by the data's kind, through the detectors' declared image capability
        dataset = _select_split(_load_data(data), split, "train", where)
        model = default_detector_for(dataset.kind, WAFER_TRAIN_DEFAULT)
    cls = registry.get(model, "detector")
    params = parse_set(set_)
    valid = set(cls._param_names())
    if "seed" in valid:
        params["seed"] = seed
    if epochs is not None:
        params["epochs"] = epochs
    params = cls.translate_params(params)  # retired names (one release): today's, with a note
    bad = sorted(set(params) - valid)
    if bad:
        if bad == ["epochs"]:
            raise ConfigError(f"{model} has no --epochs (it is not trained by epochs)")
        raise ConfigError(f"{model} has no parameter(s) {', '.join(bad)}; it takes: {', '.join(sorted(valid))}")
    cls(**params).validate_params()  # a bad value is refused before the data is read
    if dataset is None:
        dataset = _select_split(_load_data(data), split, "train", where)
    try:
        normals = training_normals(dataset, where, all_normal=normal)
    except DataError as exc:
        if normal or dataset.is_labelled.any():
            raise
        raise DataError(exc.problem + "; if every map given is known-good, add --normal", exc.path) from None
    skipped = len(dataset) - len(normals)
    if skipped:
        typer.echo(f"note: training on the {len(normals)} normal map(s); {skipped} other map(s) not used", err=True)
    typer.echo(f"training {model} on {len(normals)} normal maps …", err=True)
    det = cls(**params).fit(normals, calibrate=False)
    if threshold != "none":
        typer.echo(f"computing the decision threshold ({threshold}"
                   + (f", {folds} more fits" if threshold == "kfold" else ", scoring the training maps") + ") …",
                   err=True)
        det.calibrate(normals, rule=threshold, q=quantile, folds=folds, seed=seed)
    det.save(out, overwrite=overwrite)
    thr_doc = _threshold(det)
    typer.echo(f"trained {model} on {len(normals)} normal maps; wrote {out}"
               + (f" (threshold {thr_doc['threshold']:.6g}, {thr_doc['method']})" if thr_doc else ""), err=True)


@app.command()
def evaluate(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP + " (labelled: none/good = normal, anything else = anomalous)"),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, roc_pr.png, overlays.png"),
    run: Optional[Path] = RUN_OPTION,
    bundled: Optional[str] = BUNDLED_OPTION,
    n_overlays: int = typer.Option(6, "--overlays", min=0, help="How many anomaly-map overlays to draw"),
    split: str = typer.Option("auto", "--split", help="auto (the test split when the data has train and test), train, test or all"),
) -> None:
    """Image AUROC/AUPR, precision/recall/F1 (+ pixel AUROC and AUPRO when masks exist), curves, overlays."""
    from waferscope.metrics.detection import detection_targets, evaluate_detection, prf_at

    check_out_dir(out)
    where = ", ".join(data)
    dataset = _select_split(_load_data(data), split, "test", where)
    det, run_dir, described = _load_detector(run, bundled)
    n_unlabelled = int((~dataset.is_labelled).sum())
    if n_unlabelled:
        typer.echo(f"note: skipping {n_unlabelled} unlabelled map(s) of {len(dataset)}", err=True)
        dataset = dataset.labelled()
    if len(dataset) == 0:
        raise DataError("no labelled maps to evaluate on", where)
    idx, y = detection_targets(dataset)
    if len(np.unique(y)) < 2:
        raise DataError("evaluation needs both normal (none/good) and anomalous maps; found only "
                        + ("anomalous" if y[0] else "normal") + " ones", where)
    _check_kind(det, dataset, where)
    result = det.score(dataset)
    metrics = evaluate_detection(result, dataset)
    thr = _threshold(det)
    if thr is not None:
        at = prf_at(y, result.scores[idx], thr["threshold"])
        metrics["at_run_threshold"] = {**at, "threshold": thr["threshold"], "method": thr.get("method", "")}
    metrics.update(model=det.registry_name, run=described, data=list(data))
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(y, result.scores[idx], out / "roc_pr.png", f"{det.registry_name} on {dataset.name}")
    if n_overlays:
        _plot_overlays(dataset, result, out / "overlays.png", n_overlays)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    px = f"  pixel AUROC {metrics['pixel_auroc']:.4f}  AUPRO {metrics['aupro']:.4f}" if "pixel_auroc" in metrics else ""
    typer.echo(f"image AUROC {metrics['image_auroc']:.4f}  AUPR {metrics['image_aupr']:.4f}  "
               f"best F1 {metrics['f1']:.4f} (P {metrics['precision']:.3f}, R {metrics['recall']:.3f}){px}  "
               f"(n={len(dataset)}); wrote {out}", err=True)


@app.command()
def score(
    data: List[str] = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Output CSV: id, label, score[, anomalous]"),
    run: Optional[Path] = RUN_OPTION,
    bundled: Optional[str] = BUNDLED_OPTION,
    maps: Optional[Path] = typer.Option(None, "--maps", help="Folder for per-sample anomaly maps (<id>.npy, float32, H×W)"),
    pass_bins: Optional[str] = typer.Option(None, "--pass-bins", help=PASS_BINS_HELP),
    retest: Optional[str] = typer.Option(None, "--retest", help=RETEST_HELP),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
    engine: str = ENGINE_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: int = WORKERS_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    max_dies: int = MAX_DIES_OPTION,
) -> None:
    """Score every map; optionally write each anomaly map (at the map's own size) as .npy."""
    from waferscope.cli.engine import run_cli
    from waferscope.cli.engine import check_dir
    from waferscope.utils import anomaly_map_names, save_npy

    if maps is not None:
        check_dir(maps, "--maps")
        check_out_dir(maps, "--maps")
    if engine == "local":
        check_out_file(out, example="scores.csv")
    if engine != "local":
        det, run_dir, _ = _load_detector(run, bundled)
        thr = _threshold(det)
        scaled = run_cli(det, data, out, engine, scheduler, workers, overwrite,
                         fab_options_refused(pass_bins, retest, columns),
                         threshold=None if thr is None else float(thr["threshold"]), maps=maps)
        typer.echo(_score_summary(f"{scaled.rows} maps in {len(scaled.files)} partitions with Dask", scaled.above,
                                  thr, f"{out}/ (one .parquet per partition)", maps), err=True)
        return
    run_cli(None, data, out, engine, scheduler, workers, overwrite)  # checks dask-only options
    where = ", ".join(data)
    dataset = _load_data(data, pass_bins, retest, columns, max_dies)
    if len(dataset) == 0:
        raise DataError("no maps to score", where)
    det, run_dir, _ = _load_detector(run, bundled)
    _check_kind(det, dataset, where)
    result = det.score(dataset)
    thr = _threshold(det)
    decisions = det.decide(result.scores) if thr else None
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["id", "label", "score"] + (["anomalous"] if thr else []) + (["map"] if maps else [])
    writer.writerow(header)
    if maps is not None:
        maps.mkdir(parents=True, exist_ok=True)
        names = anomaly_map_names(dataset.ids)
    for i, s in enumerate(result.scores):
        row = [dataset.ids[i], dataset.labels[i], f"{s:.6g}"]
        if thr:
            row.append(int(decisions[i]))
        if maps is not None:
            save_npy(maps / names[i], result.maps[i])
            row.append(names[i])
        writer.writerow(row)
    write_text_atomic(out, buf.getvalue())
    above = int(decisions.sum()) if thr else None
    typer.echo(_score_summary(f"{len(dataset)} maps", above, thr, str(out), maps), err=True)


def _score_summary(scored: str, above: Optional[int], thr: Optional[dict], wrote: str, maps: Optional[Path]) -> str:
    """Return the last line of ``detect score``, on both engines."""
    return (f"scored {scored}" + (f", {above} above the run's threshold {thr['threshold']:.6g}" if thr else "")
            + f"; wrote {wrote}" + (f" and maps in {maps}" if maps else ""))


# ---- figures ------------------------------------------------------------------------------------
def _plot_curves(y: np.ndarray, s: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    axes[0].plot(fpr, tpr, lw=1.5, label=f"AUROC {auc(fpr, tpr):.3f}")
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    axes[1].plot(rec, prec, lw=1.5, label=f"anomalous share {y.mean():.2f}")
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in axes:
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def _plot_overlays(dataset, result, path: Path, n: int) -> None:
    """One map per anomalous class (its highest score).

    The highest-scoring normal and the lowest-scoring anomalous map; anomaly maps share
    one colour scale so they compare.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    s = result.scores
    anomalous = np.flatnonzero(~dataset.is_normal)
    normal = np.flatnonzero(dataset.is_normal)
    picks: list[int] = []
    for cls_name in sorted(set(dataset.labels[anomalous].astype(str))):
        members = anomalous[dataset.labels[anomalous] == cls_name]
        picks.append(int(members[np.argmax(s[members])]))
    picks = sorted(picks, key=lambda i: -s[i])[: max(1, n - 2)]
    if len(normal):
        picks.append(int(normal[np.argmax(s[normal])]))
    if len(anomalous) and int(anomalous[np.argmin(s[anomalous])]) not in picks:
        picks.append(int(anomalous[np.argmin(s[anomalous])]))
    picks = picks[:n]
    vmax = max(float(np.percentile(result.maps[i], 99.5)) for i in picks) or 1.0
    fig, axes = plt.subplots(2, len(picks), figsize=(2.2 * len(picks), 4.6), squeeze=False)
    wafer_cmap = ListedColormap(["white", "#b9d3e6", "#c0392b"])
    for j, i in enumerate(picks):
        m = dataset.maps[i]
        ax0, ax1 = axes[0, j], axes[1, j]
        if dataset.kind == "wafer":
            ax0.imshow(m, cmap=wafer_cmap, vmin=0, vmax=2, interpolation="nearest")
        else:
            ax0.imshow(m, cmap="gray" if m.ndim == 2 else None)
        ax0.set_title(f"{dataset.labels[i] or '?'}\nscore {s[i]:.3g}", fontsize=8)
        ax1.imshow(result.maps[i], cmap="inferno", interpolation="nearest", vmin=0.0, vmax=vmax)
        if dataset.masks is not None and dataset.masks[i] is not None and dataset.masks[i].any():
            ax1.contour(dataset.masks[i], levels=[0.5], colors="cyan", linewidths=0.7)
        for ax in (ax0, ax1):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("map")
    axes[1, 0].set_ylabel("anomaly map")
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
