"""`waferscope explain` and `waferscope atlas`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from waferscope.cli.checks import check_out_dir
from waferscope.cli.common import DATA_HELP, load_model_described


def register(app: typer.Typer) -> None:
    """Add ``waferscope explain`` and ``waferscope atlas`` to ``app``."""
    app.command("explain")(explain_cmd)
    app.command("atlas")(atlas_cmd)



def explain_cmd(
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder"),
    run: Optional[Path] = typer.Option(None, "--run", help="Classifier run directory (default: a bundled model)"),
    bundled: Optional[str] = typer.Option(None, "--bundled", help="Without --run: 'cnn_gradcam' (default; the "
                                          "bundled network trained so that its Grad-CAM sits on the pattern) or "
                                          "'cnn_distilled' (the `classify` default; its Grad-CAM is not trained to)"),
    method: str = typer.Option("gradcam", "--method", help="gradcam or gradcam++"),
    denoise: bool = typer.Option(False, "--denoise", help="Also write Grad-CAM-denoised maps (canonical Parquet)"),
    threshold: str = typer.Option("otsu", "--threshold", help="Denoising relevance threshold: otsu or a quantile like 0.8"),
    target_layer: Optional[str] = typer.Option(None, "--target-layer", help="Conv layer name (default: chosen automatically)"),
    target: str = typer.Option("predicted", "--target", help="Explain the predicted class, or each wafer's labelled class"),
    max_pictures: int = typer.Option(24, "--max-pictures", min=0, help="Wafers to draw (spread over the classes: "
                                     "labels, else the predicted ones); one PNG each up to 8, else montages of 8"),
    seed: int = typer.Option(0, "--seed", help="Which wafers of each class are drawn"),
) -> None:
    """Grad-CAM heat maps for a classifier's decisions: overlay PNGs, localisation scores, denoised maps."""
    import waferscope.data as wd
    from waferscope import explain as ex
    from waferscope.models.classifiers import DEFAULT_FOR_EXPLANATIONS

    check_out_dir(out)
    clf, _, described = load_model_described(run, bundled, "classifier", DEFAULT_FOR_EXPLANATIONS)
    dataset = wd.load(data)
    thr: str | float = threshold if threshold == "otsu" else float(threshold)
    exp = ex.explain(clf, dataset, method=method, target_layer=target_layer, target=target)
    out.mkdir(parents=True, exist_ok=True)
    denoised = ex.denoise(dataset, exp, thr) if denoise and dataset.kind == "wafer" else None
    idx = ex.picture_sample(dataset, exp, max_pictures, seed)
    n_pics = len(idx)
    if n_pics <= 8:
        from waferscope.utils import anomaly_map_names

        names = anomaly_map_names(dataset.ids)  # file-safe: ids such as Center/w0 hold a slash
        for i in idx:
            ex.overlay_figure(dataset, exp, [i], out / f"{names[i][:-4]}.png", denoised)
    elif n_pics:
        for k in range(0, n_pics, 8):
            ex.overlay_figure(dataset, exp, idx[k:k + 8], out / f"overlays_{k // 8:03d}.png", denoised)
    summary = {"model": described, "method": method,
               "target_layer": exp.target_layer, "wafers": len(dataset)}
    if dataset.masks is not None and any(k is not None for k in dataset.masks):
        table = ex.localisation_table(exp.heat, dataset)
        _write_csv(table, out / "localisation.csv")
        per_class = ex.summarise_localisation(table)
        _write_csv(per_class, out / "localisation_per_class.csv")
        summary["localisation_per_class"] = per_class.to_dict(orient="records")
        if dataset.kind == "wafer":
            dn = ex.denoising_table(dataset, exp, thr)
            if not dn.empty:
                _write_csv(dn, out / "denoising.csv")
                summary["denoising_f1"] = dn.groupby("method")["f1"].mean().round(4).to_dict()
    if denoised is not None:
        from waferscope.data.io_parquet import write_parquet

        write_parquet(denoised, out / "denoised.parquet")
    from waferscope.utils import atomic_path

    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"explained {len(dataset)} wafers with {method} (layer {exp.target_layer}) → {out}")


def atlas_cmd(
    data: str = typer.Option(..., "--data", help="Data spec with labelled wafer maps"),
    out: Path = typer.Option(..., "--out", help="Output folder"),
    size: int = typer.Option(48, "--size", help="Grid of normalised wafer coordinates"),
) -> None:
    """Per-class map of where failing dies concentrate (atlas.png and atlas.csv)."""
    import waferscope.data as wd
    from waferscope.explain import build_atlas, plot_atlas

    check_out_dir(out)
    atlas = build_atlas(wd.load(data), size=size)
    out.mkdir(parents=True, exist_ok=True)
    plot_atlas(atlas, out / "atlas.png")
    _write_csv(atlas.to_frame(), out / "atlas.csv")
    typer.echo(f"atlas of {int(atlas.counts.sum())} wafers, {len(atlas.classes)} classes → {out}")


def _write_csv(frame, path: Path) -> None:
    from waferscope.utils import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
