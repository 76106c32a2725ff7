"""Evaluate PatchCore / ReConPatch configurations (docs/detection_patchcore.md).

Protocol (all seeded):
  real:  the 500 real `none` maps of wm811k_dev.npz are split 250/250 (seed 0). Detectors train on
         the first 250 real `none` maps plus 2,000 synthetic `none` maps (generate(seed=0)); the test
         set is the other 250 real `none` maps (normal) and all 2,392 real defect maps of the 8
         patterns (anomalous). Image AUROC/AUPR overall and per pattern (that pattern vs the 250 normals).
         The seed-004 threshold: 5-fold mean of per-fold max score on held-out training normals
         (metrics.detection.threshold_kfold_mean_of_max), and precision/recall/F1 at it on the test set.
  synthetic: train on generate(2000, seed=0, classes=["none"]); test generate(900, seed=1) (100 per
         class, die-level masks); image AUROC and pixel AUROC/AUPRO over on-wafer pixels.

    python scripts/eval_patchcore.py --configs fast,r18 --out docs/patchcore_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from waferscope import registry
from waferscope.data import load
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.metrics.detection import evaluate_detection, image_metrics, prf_at, threshold_kfold_mean_of_max
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)

CONFIGS = {
    # name: (detector, params)
    "fast": ("patchcore", dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25}, embedding_dim=64,
                               coreset_ratio=0.02)),
    "r18": ("patchcore", dict(backbone="resnet18", pretrained=None, coreset_ratio=0.05)),
    "r18_small": ("patchcore", dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.5, "small_input": True},
                                    coreset_ratio=0.02)),
    "wafer_r18": ("patchcore", dict(backbone="wafer_resnet18", pretrained="wafer", coreset_ratio=0.02)),
    "wrn50": ("patchcore", dict(backbone="wide_resnet50_2", pretrained=None, embedding_dim=256, coreset_ratio=0.05)),
    "recon_fast": ("reconpatch", dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25}, embedding_dim=64,
                                      representation_dim=64, coreset_ratio=0.02)),
    "recon_r18": ("reconpatch", dict(backbone="resnet18", pretrained=None, coreset_ratio=0.05)),
    "recon_wafer_r18": ("reconpatch", dict(backbone="wafer_resnet18", pretrained="wafer", coreset_ratio=0.02)),
}


def real_split(seed: int = 0):
    ds = load(DEV)
    normal = np.flatnonzero(ds.labels == "none")
    rng = np.random.default_rng(seed)
    normal = rng.permutation(normal)
    train_real = ds.subset(np.sort(normal[:250]))
    test = ds.subset(np.r_[np.sort(normal[250:]), np.flatnonzero(ds.labels != "none")])
    return train_real, test


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="fast,r18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kfold", action="store_true", help="also compute the 5-fold mean-of-max threshold")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train_real, test_real = real_split()
    syn_none = generate(2000, seed=0, classes=["none"])
    train = WaferDataset.concat([train_real, syn_none], name="real250+syn2000")
    syn_test = generate(900, seed=1)
    results = {}
    for name in args.configs.split(","):
        kind, params = CONFIGS[name]
        make = lambda: registry.create(kind, kind="detector", verbose=False, **params)  # noqa: E731
        out: dict = {"detector": kind, "params": params}
        t = time.perf_counter()
        det = make().fit(train)
        out["fit_seconds"] = round(time.perf_counter() - t, 1)
        out["fit_info"] = det.fit_info_
        t = time.perf_counter()
        res = det.score(test_real)
        out["score_wafers_per_s"] = round(len(test_real) / (time.perf_counter() - t), 1)
        out["real"] = evaluate_detection(res, test_real)
        per = {}
        normal = test_real.labels == "none"
        for cls in sorted(set(test_real.labels) - {"none"}):
            sel = normal | (test_real.labels == cls)
            per[cls] = round(image_metrics((~normal[sel]).astype(int), res.scores[sel])["image_auroc"], 4)
        out["real_per_pattern_auroc"] = per
        if args.kfold:
            thr = threshold_kfold_mean_of_max(make, train, n_splits=5, seed=0)
            y = (~normal).astype(int)
            out["kfold_threshold"] = thr
            out["real_at_kfold_threshold"] = prf_at(y, res.scores, thr["threshold"])
        if not args.skip_synthetic:
            det_s = make().fit(syn_none)
            res_s = det_s.score(syn_test)
            out["synthetic"] = evaluate_detection(res_s, syn_test)
        results[name] = out
        print(name, json.dumps({k: out[k] for k in out if k not in ("params", "fit_info")}, default=float),
              file=sys.stderr, flush=True)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1, default=float)
        import os

        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
