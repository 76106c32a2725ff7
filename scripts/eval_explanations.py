"""Regenerate the explanation figures in docs/explain.md (issue: Grad-CAM, denoising, atlas).

    python scripts/eval_explanations.py [--n 900] [--seed 11] [--run RUN] [--out docs]

Data: synthetic maps with die-level masks (`waferscope.data.synthetic.generate(n, seed)`), which
the bundled classifier never saw (it was trained on other seeds). Writes per-class localisation
(energy inside the mask, pointing game) for Grad-CAM, Grad-CAM++ and LayerCAM, the denoising
comparison (die-level F1 vs masks: Grad-CAM vs median vs connected components), the detectors'
anomaly-map localisation beside Grad-CAM, example overlays and the defect atlas of the real dev maps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import waferscope.data as wd
from waferscope import explain as ex
from waferscope.data.paths import DEV_MAPS
from waferscope.explain.api import NON_LOCAL_CLASSES

LOCAL_CLASSES = ["Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Scratch"]
DEV = DEV_MAPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--run", default=None, help="classifier run dir (default: the bundled model)")
    ap.add_argument("--detector-runs", nargs="*", default=[], help="detector run dirs to compare anomaly maps")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    (out / "img").mkdir(parents=True, exist_ok=True)

    if args.run:
        from waferscope.base import load_run

        clf = load_run(args.run, kind="classifier")
    else:
        from waferscope.models.classifiers import load_default

        clf = load_default()
    data = wd.load(f"synthetic:n={args.n},seed={args.seed}")
    local = data.subset(~np.isin(data.labels, NON_LOCAL_CLASSES))

    tables, timings = [], {}
    exps = {}
    for method in ("gradcam", "gradcam++", "layercam"):
        t0 = time.perf_counter()
        exps[method] = ex.explain(clf, local, method=method, progress=False)
        timings[method] = time.perf_counter() - t0
        tables.append(ex.localisation_table(exps[method].heat, local, source=f"{method} (predicted class)"))
        labelled = ex.explain(clf, local, method=method, progress=False, target="label")
        tables.append(ex.localisation_table(labelled.heat, local, source=f"{method} (true class)"))
        if method == "gradcam":
            exps["gradcam-true"] = labelled
    for run in args.detector_runs:
        from waferscope.base import load_run

        det = load_run(run, kind="detector")
        res = det.score(local)
        heat = [m / max(float(m.max()), 1e-12) for m in res.maps]
        tables.append(ex.localisation_table(heat, local, source=f"detector:{det.registry_name}"))
    loc = ex.summarise_localisation(pd.concat(tables, ignore_index=True))
    den = ex.denoising_table(local, exps["gradcam"])
    den_true = ex.denoising_table(local, exps["gradcam-true"])
    den_true = den_true[den_true["method"] == "gradcam"].assign(method="gradcam (true class)")
    den = pd.concat([den, den_true], ignore_index=True)
    den_summary = den.groupby(["class", "method"])["f1"].mean().unstack().round(3)

    idx = [int(np.flatnonzero(local.labels == c)[0]) for c in LOCAL_CLASSES if (local.labels == c).any()]
    ex.overlay_figure(local, exps["gradcam"], idx, out / "img" / "explain_gradcam_examples.png",
                      denoised=ex.denoise(local, exps["gradcam"]))
    if DEV.exists():
        atlas = ex.build_atlas(wd.load(DEV))
        ex.plot_atlas(atlas, out / "img" / "atlas_wm811k_dev.png")

    result = {
        "data": f"synthetic:n={args.n},seed={args.seed} ({len(local)} maps of the 6 localised classes)",
        "classifier": args.run or "bundled",
        "seconds_per_1000_wafers": {k: round(v / len(local) * 1000, 2) for k, v in timings.items()},
        "localisation": loc.round(4).to_dict(orient="records"),
        "denoising_f1": den_summary.reset_index().to_dict(orient="records"),
    }
    (out / "explain_results.json").write_text(json.dumps(result, indent=2))
    print(loc.round(3).to_string(index=False))
    print(den_summary.to_string())
    print(json.dumps(result["seconds_per_1000_wafers"]))


if __name__ == "__main__":
    main()
