"""Detection quality of registered detectors under the protocol of docs/detection.md.

Protocol (seeded, the same for every detector):
- real dev maps (wm811k_dev.npz): the 500 `none` maps are split 50/50 (seed 0, `--split-seed`); detectors train on
  the first half only (optionally plus synthetic `none` maps, --synthetic-normals N); the test set is
  the other 250 `none` maps (normal) + all 2,392 maps of the 8 defect classes (anomalous).
- synthetic maps (pixel metrics): train on generate(N, seed=11, classes=["none"]), test on
  generate(900, seed=12) (100 per class, masks = the pattern's failing dies).

    python benchmarks/eval_detect_dev.py --detector autoencoder [--param epochs=30 ...] [--synthetic-normals 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from waferscope import registry
from waferscope.data import load
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.metrics.detection import evaluate_detection
from waferscope.data.paths import DEV_MAPS

DEV = DEV_MAPS


def dev_split(seed: int = 0) -> tuple[WaferDataset, WaferDataset]:
    dev = load(DEV)
    normal = np.flatnonzero(dev.is_normal)
    rng = np.random.default_rng(seed)
    train_idx = np.sort(rng.permutation(normal)[: len(normal) // 2])
    test_mask = np.ones(len(dev), bool)
    test_mask[train_idx] = False
    return dev.subset(train_idx), dev.subset(test_mask)


def per_class_auroc(scores: np.ndarray, test: WaferDataset) -> dict[str, float]:
    """AUROC of each defect class's maps against the test set's normal maps."""
    from sklearn.metrics import roc_auc_score

    labels, normal = np.asarray(test.labels).astype(str), test.is_normal
    return {c: float(roc_auc_score(np.r_[np.zeros(normal.sum()), np.ones((labels == c).sum())],
                                   np.r_[scores[normal], scores[labels == c]]))
            for c in sorted(set(labels[~normal]))}


def parse_params(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--param", action="append", default=[], help="constructor parameter key=value (JSON value)")
    ap.add_argument("--synthetic-normals", type=int, default=0, help="add N synthetic none maps to the real training normals")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the 50/50 split of the dev none maps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = parse_params(args.param)
    params.setdefault("verbose", False)

    train, test = dev_split(args.split_seed)
    if args.synthetic_normals:
        train = WaferDataset.concat([train, generate(args.synthetic_normals, seed=10, classes=["none"])])
    det = registry.create(args.detector, "detector", **params)
    t0 = time.perf_counter()
    det.fit(train)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = det.score(test)
    t_score = time.perf_counter() - t0
    real = evaluate_detection(res, test)
    per_class = {c: round(v, 4) for c, v in per_class_auroc(res.scores, test).items()}
    out = {"detector": args.detector, "params": params, "split_seed": args.split_seed,
           "synthetic_normals": args.synthetic_normals,
           "n_train": len(train), "fit_s": round(t_fit, 1), "score_maps_per_s": round(len(test) / t_score, 1),
           "real_dev": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in real.items()},
           "real_dev_auroc_per_class": per_class}
    if not args.skip_synthetic:
        syn_train = generate(max(args.synthetic_normals, 500), seed=11, classes=["none"])
        syn_test = generate(900, seed=12)
        det_s = registry.create(args.detector, "detector", **params).fit(syn_train)
        syn = evaluate_detection(det_s.score(syn_test), syn_test)
        out["synthetic"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in syn.items()}
    line = json.dumps(out)
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
