"""`waferscope evaluate` sub-commands for detection.

Explanation and synthetic-data protocols (:mod:`waferscope.evaluate.detection`, :mod:`.explanations`,
:mod:`.synthetic`). Thin: parse, call, write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from waferscope.cli.common import parse_set, write_text_atomic
from waferscope.errors import ConfigError

DEV_HELP = "Real labelled dev maps (default: the shared wm811k_dev.npz)"


def detector(
    detector: Optional[str] = typer.Option(None, "--detector", help="Registered detector name"),
    config: Optional[str] = typer.Option(None, "--config", help="A named configuration (detector + params + "
                                         "protocol), e.g. patchcore-fast; a wrong name lists them all"),
    set_: List[str] = typer.Option([], "--set", help="Detector parameter key=value (JSON value); repeatable"),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="dev (default), patchcore or kd"),
    synthetic_normals: Optional[int] = typer.Option(None, "--synthetic-normals", min=0,
                                                    help="Add N synthetic none maps to the real training normals"),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the 50/50 split of the dev none maps"),
    skip_synthetic: bool = typer.Option(False, "--skip-synthetic", help="No pixel metrics on synthetic maps"),
    kfold: bool = typer.Option(False, "--kfold", help="Also the 5-fold mean-of-max threshold and P/R/F1 at it"),
    data: Optional[str] = typer.Option(None, "--data", help=DEV_HELP + "; with --images an MVTec-layout folder "
                                       "(default: the shared magnetic_tile set)"),
    images: bool = typer.Option(False, "--images", help="The real-image protocol: train on train/good of an "
                                "MVTec-layout folder, test on test/ (image + pixel AUROC, AUPRO, per-defect AUROC, "
                                "max-in-mask rate), pixel z-score and IsolationForest baselines beside it"),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="With --images: skip the two baselines"),
    png: Optional[Path] = typer.Option(None, "--png", help="With --images: write example anomaly maps here (PNG)"),
    threads: int = typer.Option(2, "--threads", min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Append the result as one JSON line to this file"),
) -> None:
    """Run the detector dev protocol.

    Train on real normals, test on the other normals vs every defect (--images: the same on
    a real MVTec-layout image folder).
    """
    from waferscope.benchmark.measure import append_json_line
    from waferscope.evaluate import detection as ev

    if (detector is None) == (config is None):
        raise ConfigError("give --detector NAME or --config NAME (one of them)")
    if images:
        if config is not None or protocol is not None or synthetic_normals is not None or split_seed is not None \
                or skip_synthetic:
            raise ConfigError("--images takes --detector, --set, --kfold, --data, --no-baselines, --threads, --json "
                              "(not --config/--protocol/--synthetic-normals/--split-seed/--skip-synthetic)")
        ev.check_detector(detector)
        from waferscope.cli.checks import shared_default

        root = shared_default(None if data is None else Path(data), ev.magnetic_tile_folder(), "--data",
                              "an MVTec-layout image folder: train/good, test/<defect>, ground_truth/<defect>")
        import torch

        torch.set_num_threads(threads)
        row = ev.evaluate_images(detector, parse_set(set_), root=root, kfold=kfold, baselines=not no_baselines,
                                 img_path=png)
        typer.echo(json.dumps(row, default=float))
        if json_out is not None:
            append_json_line(json_out, row)
        return
    params = parse_set(set_)
    if config is not None:
        if config not in ev.CONFIGS:
            raise ConfigError(f"unknown --config {config!r}; choose one of {', '.join(ev.CONFIGS)}")
        detector, base, default_protocol = ev.CONFIGS[config]
        params = {**base, **params}
    else:
        default_protocol = "dev"
    ev.check_detector(detector)
    proto = ev.protocol_named(protocol or default_protocol, synthetic_normals=synthetic_normals, split_seed=split_seed)
    if data is None:
        from waferscope.cli.checks import shared_default
        from waferscope.data.paths import DEV_MAPS

        shared_default(None, DEV_MAPS, "--data SPEC", "labelled maps: none = normal, any defect class = anomalous")
    dev = ev.load_dev(data)
    import torch

    torch.set_num_threads(threads)
    row = ev.evaluate_detector(detector, params, proto, dev=dev, pixel=not skip_synthetic, kfold_threshold=kfold)
    if config is not None:
        row["config"] = config
    typer.echo(json.dumps(row, default=float))
    if json_out is not None:
        append_json_line(json_out, row)


def pattern_loo(
    detector: str = typer.Option("pattern_contrast", "--detector", help="A detector with a `patterns` parameter"),
    split_seed: int = typer.Option(0, "--split-seed"),
    data: Optional[str] = typer.Option(None, "--data", help=DEV_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the table here (JSON records)"),
) -> None:
    """Leave one simulated defect pattern out of training; AUROC of that pattern on real maps."""
    from waferscope.evaluate import detection as ev

    ev.check_pattern_detector(detector)  # before the data is read: a wrong detector is the first error
    dev = ev.load_dev(data)
    table = ev.leave_one_pattern_out(detector, split_seed=split_seed, dev=dev)
    typer.echo("| left out | image AUROC, all 8 classes | AUROC of the left-out class vs normals |\n|---|---:|---:|")
    for row in table.itertuples():
        shown = "—" if row.left_out == "none left out" else f"{row.left_out_auroc:.3f}"
        typer.echo(f"| {row.left_out} | {row.image_auroc:.3f} | {shown} |")
    if json_out is not None:
        write_text_atomic(json_out, table.to_json(orient="records", indent=1))


def realism(
    n: int = typer.Option(45000, "--n", help="Synthetic training maps per epoch (class-balanced)"),
    seed: int = typer.Option(0, "--seed"),
    size: int = typer.Option(48, "--size", help="Network input size (at least the die grid)"),
    epochs: int = typer.Option(6, "--epochs"),
    width: int = typer.Option(24, "--width", help="Channels of the first conv block (doubles twice)"),
    grid: int = typer.Option(6, "--grid", help="Spatial grid of the flattened head"),
    batch: int = typer.Option(128, "--batch"),
    lr: float = typer.Option(3e-3, "--lr"),
    # --same-maps, not --no-fresh-per-epoch: the help's option column (80 columns) cuts a longer name;
    # the old spelling stays accepted (hidden) for existing scripts
    fresh_per_epoch: bool = typer.Option(True, "--fresh-per-epoch/--same-maps",
                                         help="Draw new synthetic maps for every epoch (--same-maps: one set "
                                              "for all epochs)"),
    no_fresh: bool = typer.Option(False, "--no-fresh-per-epoch", hidden=True),
    ema: float = typer.Option(0.0, "--ema", help="Score an EMA of the weights with this decay (0 = off)"),
    die_noise: float = typer.Option(0.0, "--die-noise", help="Flip up to this share of dies pass<->fail (0 = off)"),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Also score the 8-fold dihedral average"),
    data: Optional[str] = typer.Option(None, "--data", help=DEV_HELP),
    threads: int = typer.Option(1, "--threads", min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result here"),
) -> None:
    """Train a small CNN on synthetic maps only and score it on real labelled maps (target macro-F1 0.80)."""
    import torch

    from waferscope.evaluate.synthetic import realism_check, realism_summary

    torch.set_num_threads(threads)
    from waferscope.cli.checks import shared_default
    from waferscope.data.paths import DEV_MAPS, SharedDataMissing

    # the data (default: the dev maps) is read inside, after the options are checked; missing shared
    # data is then said in the command's terms
    try:
        result = realism_check(n=n, seed=seed, size=size, epochs=epochs, width=width, grid=grid, batch=batch, lr=lr,
                               fresh_per_epoch=fresh_per_epoch and not no_fresh, ema=ema, die_noise=die_noise,
                               real=data, tta=tta)
    except SharedDataMissing:
        shared_default(None, DEV_MAPS, "--data SPEC", "labelled real maps, the 9 WM-811K classes")
        raise
    typer.echo(realism_summary(result))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result, indent=1))


def synthetic_vs_real(
    n: int = typer.Option(4500, "--n", min=1, help="Synthetic maps (generate(n, seed))"),
    seed: int = typer.Option(0, "--seed"),
    data: Optional[str] = typer.Option(None, "--data", help=DEV_HELP),
    img_dir: Optional[Path] = typer.Option(None, "--img-dir", help="Also write the three figures here (docs/img)"),
    out_md: Optional[Path] = typer.Option(None, "--out-md", help="Write the Markdown tables here"),
) -> None:
    """Synthetic vs real: per-class fail rates, radial profiles, rim, grid sizes, cluster shapes."""
    from waferscope.data import load
    from waferscope.data.paths import DEV_MAPS
    from waferscope.evaluate.synthetic import compare_to_real

    from waferscope.cli.checks import shared_default

    real = load(data if data is not None else shared_default(None, DEV_MAPS, "--data SPEC", "labelled real maps"))
    table = compare_to_real(real, n=n, seed=seed, img_dir=img_dir)
    typer.echo(table)
    if out_md is not None:
        write_text_atomic(out_md, table + "\n")


def explanations(
    n: int = typer.Option(900, "--n", min=10, help="Synthetic maps with masks (synthetic:n=N,seed=S)"),
    seed: int = typer.Option(11, "--seed", help="Not a seed the bundled classifier was trained on"),
    run: Optional[Path] = typer.Option(None, "--run", help="Classifier run directory (default: a bundled one)"),
    bundled: Optional[str] = typer.Option(None, "--bundled", help="Without --run: which bundled classifier "
                                          "(default: the one `explain` uses)"),
    detector_runs: List[Path] = typer.Option([], "--detector-run", help="Detector run dir whose anomaly maps "
                                             "are scored beside Grad-CAM; repeatable"),
    out: Path = typer.Option(Path("docs"), "--out", help="Writes OUT/explain_results.json and figures in OUT/img"),
    threads: int = typer.Option(2, "--threads", min=1, help="Torch threads (the speed target is for 2 cores)"),
) -> None:
    """Grad-CAM localisation energy and denoising F1 against the generator's masks (docs/explain.md)."""
    import torch

    from waferscope.base import load_run
    from waferscope.cli.common import load_model_described
    from waferscope.data import load
    from waferscope.data.paths import DEV_MAPS
    from waferscope.evaluate.explanations import evaluate_explanations, summary_text
    from waferscope.models.classifiers import DEFAULT_FOR_EXPLANATIONS

    clf, _, name = load_model_described(run, bundled, "classifier", DEFAULT_FOR_EXPLANATIONS)
    detectors = [load_run(d, kind="detector") for d in detector_runs]
    dev = load(DEV_MAPS) if DEV_MAPS.exists() else None  # the atlas and real overlays need the real maps
    torch.set_num_threads(threads)
    result = evaluate_explanations(clf, n=n, seed=seed, detectors=detectors, dev=dev, out_dir=out,
                                   classifier_name=name)
    typer.echo(summary_text(result))
    result.pop("tables")
    write_text_atomic(out / "explain_results.json", json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `evaluate` group."""
    app.command("detector")(detector)
    app.command("pattern-loo")(pattern_loo)
    app.command("realism")(realism)
    app.command("explanations")(explanations)
    app.command("synthetic-vs-real")(synthetic_vs_real)
