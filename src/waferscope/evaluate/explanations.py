"""Explanation quality on synthetic maps with masks (docs/explain.md).

Grad-CAM / Grad-CAM++ / LayerCAM localisation, denoising F1, the detectors' anomaly maps beside
them.

Data: synthetic maps with die-level masks (`waferscope.data.synthetic.generate(n, seed)`), which
the bundled classifier never saw (it was trained on other seeds). Writes per-class localisation
(energy inside the mask, pointing game) for Grad-CAM, Grad-CAM++ and LayerCAM, the denoising
comparison (die-level precision / recall / F1 / IoU vs masks: Grad-CAM vs median vs connected
components, and the classifier's accuracy on each filter's output), the detectors'
anomaly-map localisation beside Grad-CAM, example overlays and the defect atlas of the real dev maps.

Localisation is scored against both ground truths the generator gives for the very same maps:
``mask=region`` (every die where the pattern's fail probability is ≥ 0.2: the pattern's extent,
passing dies inside it included) and ``mask=fail`` (only the dies the pattern made fail). Energy is
counted over every die of the wafer, the heat map being Grad-CAM brought to the die grid by
``to_die_grid`` (each die: the mean of the pixels that showed it). Denoising keeps failing dies, so it is scored against the ``fail`` masks. An "oracle" row
gives the ceiling of a map that is exactly the region mask but only as fine as a 6×6 / 12×12 /
24×24 / 48×48 feature map at 48 px, to show what a layer's resolution allows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import waferscope.data as wd
from waferscope import explain as ex
from waferscope.explain.api import NON_LOCAL_CLASSES

LOCAL_CLASSES = ["Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Scratch"]


def oracle_heat(region: wd.WaferDataset, cells: int) -> list[np.ndarray]:
    """Return the region mask as seen by a ``cells``×``cells`` feature map of a 48-px input.

    Resized to 48 px, averaged over cells, resampled back to the die grid like a Grad-CAM
    map.
    """
    import torch.nn.functional as F

    from waferscope.data.preprocess import resize_maps
    from waferscope.explain.gradcam import to_die_grid

    out = []
    for m, k in zip(region.maps, region.masks):
        t = torch.from_numpy(resize_maps([k.astype(np.uint8)], 48)[0].astype(np.float32))[None, None]
        up = F.interpolate(F.adaptive_avg_pool2d(t, cells), size=(48, 48), mode="bilinear", align_corners=False)
        out.append(np.where(m > 0, to_die_grid(up[0, 0].numpy(), m.shape[:2]), 0.0).astype(np.float32))
    return out


def classify_denoised(clf, local, explanation) -> dict:
    """Return the classifier's accuracy and macro-F1 on the raw maps and on denoised ones.

    Over the six localised classes, on the raw maps and on the same maps after Grad-CAM (Otsu),
    median and connected-component denoising: does removing the fails each filter calls noise keep
    the pattern recognisable?
    """
    from sklearn.metrics import accuracy_score, f1_score

    from waferscope.data.dataset import WaferDataset
    from waferscope.explain.denoise import denoise_components, denoise_median

    variants = {
        "raw": local,
        "gradcam": ex.denoise(local, explanation),
        "median": WaferDataset.from_maps([denoise_median(m) for m in local.maps], local.labels, validate=False),
        "components": WaferDataset.from_maps([denoise_components(m) for m in local.maps], local.labels,
                                             validate=False),
    }
    out = {}
    for name, data in variants.items():
        pred = clf.predict(data)
        out[name] = {"accuracy": round(float(accuracy_score(local.labels, pred)), 4),
                     "macro_f1": round(float(f1_score(local.labels, pred, labels=LOCAL_CLASSES, average="macro",
                                                      zero_division=0)), 4)}
    return out


def evaluate_explanations(clf, n: int = 900, seed: int = 11, detectors=(), dev=None, out_dir: str | Path | None = None,
                          classifier_name: str = "bundled", progress: bool = True) -> dict:
    """Localisation and denoising of ``clf``'s explanations on ``synthetic:n=N,seed=S`` maps with masks.

    ``detectors``: fitted detectors whose anomaly maps are scored beside Grad-CAM. With ``out_dir``,
    the example overlays (and, given the real ``dev`` maps, the atlas and real-map overlays) are
    written to ``out_dir/img``. Returns the results dict of docs/explain.md (``explain_results.json``)
    plus the tables as DataFrames under ``"tables"`` (not JSON; the caller drops it before writing).
    """
    torch.manual_seed(0)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "img").mkdir(parents=True, exist_ok=True)
    data = wd.load(f"synthetic:n={n},seed={seed}")
    keep = ~np.isin(data.labels, NON_LOCAL_CLASSES)
    local = data.subset(keep)
    # The same maps (the mask mode draws nothing), with the pattern-region masks.
    local_region = wd.load(f"synthetic:n={n},seed={seed},mask=region").subset(keep)

    tables, timings = [], {}
    exps = {}

    def score(heat, source):
        for masks, name in ((local_region, "region"), (local, "fail")):
            tables.append(ex.localisation_table(heat, masks, source=source).assign(mask=name))

    from tqdm.auto import tqdm

    # One bar over the methods, none inside the timed calls: the timings are what the docs quote.
    for method in tqdm(("gradcam", "gradcam++", "layercam"), desc="explanation methods", disable=not progress):
        t0 = time.perf_counter()
        exps[method] = ex.explain(clf, local, method=method, progress=False)
        timings[method] = time.perf_counter() - t0
        score(exps[method].heat, f"{method} (predicted class)")
        labelled = ex.explain(clf, local, method=method, progress=False, target="label")
        score(labelled.heat, f"{method} (true class)")
        if method == "gradcam":
            exps["gradcam-true"] = labelled
    for cells in (6, 12, 24, 48):
        score(oracle_heat(local_region, cells), f"oracle: region mask at {cells}x{cells}")
    for det in detectors:
        res = det.score(local)
        heat = [m / max(float(m.max()), 1e-12) for m in res.maps]
        score(heat, f"detector:{det.registry_name}")
    loc_rows = pd.concat(tables, ignore_index=True)
    loc = pd.concat([ex.summarise_localisation(g).assign(mask=name) for name, g in loc_rows.groupby("mask", sort=False)],
                    ignore_index=True)
    den = ex.denoising_table(local, exps["gradcam"])
    extra = [ex.denoising_table(local, exps["gradcam-true"]).query("method == 'gradcam'")
             .assign(method="gradcam (true class)")]
    for q in (0.5, 0.7):  # the quantile thresholds beside Otsu's
        extra.append(ex.denoising_table(local, exps["gradcam"], threshold=q).query("method == 'gradcam'")
                     .assign(method=f"gradcam (quantile {q})"))
    den = pd.concat([den, *extra], ignore_index=True)
    den_summary = den.groupby(["class", "method"])["f1"].mean().unstack().round(3)
    # The outline itself, beside F1: die-level precision, recall and IoU of the kept failing dies.
    den_scores = (den[den["method"].isin(["raw", "gradcam", "median", "components"])]
                  .groupby(["class", "method"])[["precision", "recall", "iou", "f1"]].mean().round(3))
    on_denoised = classify_denoised(clf, local, exps["gradcam"])

    tables_out = {"localisation_by_class": loc.pivot_table(index=["mask", "source"], columns="class",
                                                           values="energy_in_mask", sort=False).round(3),
                  "localisation": loc.round(3), "denoising_f1": den_summary,
                  "denoising_scores": den_scores.unstack("method")}
    if out is not None:  # figures for the docs
        idx = [int(np.flatnonzero(local.labels == c)[0]) for c in LOCAL_CLASSES if (local.labels == c).any()]
        ex.overlay_figure(local, exps["gradcam"], idx, out / "img" / "explain_gradcam_examples.png",
                          denoised=ex.denoise(local, exps["gradcam"]))
        if dev is not None:
            atlas = ex.build_atlas(dev)
            ex.plot_atlas(atlas, out / "img" / "atlas_wm811k_dev.png")
            # Real maps have no masks: show the first two dev maps of each localised class (file order,
            # whatever the prediction) so the heat maps can be judged by eye on real wafers too.
            pick = np.concatenate([np.flatnonzero(dev.labels == c)[:2] for c in LOCAL_CLASSES])
            real = dev.subset(pick)
            real_exp = ex.explain(clf, real, method="gradcam", progress=False)
            ex.overlay_figure(real, real_exp, list(range(len(real))), out / "img" / "explain_gradcam_real_examples.png",
                              denoised=ex.denoise(real, real_exp))

    t0 = time.perf_counter()
    ex.explain(clf, data, method="gradcam", progress=False)  # every map, localised or not
    timings["gradcam (all classes)"] = (time.perf_counter() - t0) / len(data) * len(local)
    result = {
        "data": f"synthetic:n={n},seed={seed} ({len(local)} maps of the 6 localised classes)",
        "classifier": classifier_name,
        "seconds_per_1000_wafers": {k: round(v / len(local) * 1000, 2) for k, v in timings.items()},
        "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
                   f"load average {os.getloadavg()[0]:.1f}",
        "localisation": loc.round(4).to_dict(orient="records"),
        "denoising_f1": den_summary.reset_index().to_dict(orient="records"),
        "denoising_scores": den_scores.reset_index().to_dict(orient="records"),
        "classification_on_denoised": on_denoised,
    }
    result["tables"] = tables_out
    return result


def summary_text(result: dict) -> str:
    """Return the tables of :func:`evaluate_explanations` as text (what the docs quote)."""
    import json

    t = result["tables"]
    return "\n".join([t["localisation_by_class"].to_string(), t["localisation"].to_string(index=False),
                      t["denoising_f1"].to_string(), t["denoising_scores"].to_string(),
                      "classification on denoised maps: " + json.dumps(result["classification_on_denoised"]),
                      json.dumps(result["seconds_per_1000_wafers"])])
