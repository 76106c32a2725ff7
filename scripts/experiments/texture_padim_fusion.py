"""Experiment (issue 29): score-level fusion of ``texture_padim`` (the default, filter bank) with
backbone-PaDiM on the shipped formula backbone, screened on the sixth round's VALIDATION split; the
test split is run once, only for a rule that passes.

Detectors (the package's own estimators, fitted as shipped; no new detector code):

  texture    ``texture_padim`` with its defaults (sixth round: σ = 2, 4 on the 128 px canvas + σ = 0.7, 1
             from a 256 px canvas, energy-pooled; stride 1 / grid 128; per-cell z calibration)
  backbone   ``texture_padim`` with ``filter_bank=False, backbone="formula_resnet18", pretrained="formula",
             backbone_input_size=256, grid=32, backbone_channels=100`` (backbone-PaDiM; test 0.858)

Both produce per-cell z maps on the same 128 px canvas (the backbone's 32 × 32 cells stretched onto the
image box and smoothed there by the detector's own ``from_grid``), so maps can be combined pixel by
pixel. Each detector's *image-score* distribution on normals is taken from its own fit, without
extra cost and without touching the evaluation normals: the fit's calibration pass already scores
every training normal with the Gaussians of the other folds (5 folds); this script records those
held-out distances (a wrapper around ``mahalanobis_maps`` during ``fit``), turns them into the
detector's map (per-cell z, ``from_grid``) and keeps the per-image maxima: mean μ and std s per
detector. A' = (A − μ_A) / s_A is a map in "normal image-score z" units.

Fusion rules (decided before any result; A = texture map, B = backbone map, both per-cell z):

  (a) mean_score  image score (max A' + max B') / 2;  map (A' + B') / 2
  (b) mean_map    image score max((A + B) / 2);       map (A + B) / 2   (the detectors' own per-cell z)
  (c) max_score   image score max(max A', max B');    map max(A', B')  (its maximum is the image score)

Validation (``--split val``): the sixth round's split and anomaly sets, regenerated with its code and
seeds (``texture_padim_val_round6.py``): fit on 533 of the 666 training normals, score the 133
held-out normals + 266 anomalies per set (nat_val, nat_crack, nat_chip, nat_band), anomalies drawn on
the native grey images. Metrics on the 128 canvas as there (masks area-resized > 0.25, cracks any
overlap): image AUROC, pixel AUROC, max in mask.

Adoption rule (written 14:42 UTC, before any result of this script), validation figures only,
against ``texture`` alone (the package default) on the same run: a rule passes if
  - nat_val image AUROC >= texture + 0.01, and
  - on every one of nat_val, nat_crack, nat_chip, nat_band: image AUROC and pixel AUROC >= texture − 0.005
    and max in mask >= texture − 0.015.
Among passing rules the highest nat_val image AUROC (within 0.005: the higher mean image AUROC over
the four sets). Only the chosen rule, if any, goes to the test split, once (``--split test``: fit both
on the 666 training tiles, score the 678 test tiles, the package's metrics at native resolution,
``waferscope.metrics.detection.evaluate_detection`` and ``evaluate.detection.max_in_mask_rate``).
The fused detector's cost is the sum of both (reported, not part of the rule).

Run from the worktree root, one thread each (the two detectors may run side by side):
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_fusion.py --split val --detector texture``
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_fusion.py --split val --detector backbone``
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_fusion.py --split val --fuse``
(test: the same with ``--split test``, and ``--fuse --rule NAME``.)
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

torch.set_num_threads(1)
S = 128
SETS = ("nat_val", "nat_crack", "nat_chip", "nat_band")
RULES = ("mean_score", "mean_map", "max_score")
PARAMS = {"texture": {},
          "backbone": {"filter_bank": False, "backbone": "formula_resnet18", "pretrained": "formula",
                       "backbone_input_size": 256, "grid": 32, "backbone_channels": 100}}


def cache(split, name):
    return f"/tmp/waferscope_fusion_{split}_{name}.npz"


def val_data(seed0=61):
    """(fit normals, evaluation set, canvas masks per set) of the sixth round's validation split.

    ``seed0`` seeds the four anomaly sets (seed0 … seed0 + 3); 61 is the sixth round's draw.
    """
    import pandas as pd

    import texture_padim_val_round6 as r6
    from waferscope.data.dataset import WaferDataset
    from waferscope.evaluate.detection import load_image_set
    from waferscope.models.detectors.common import image_canvas

    train, _ = load_image_set()
    perm = np.random.default_rng(0).permutation(len(train))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    greys = [r6.grey(m) for m in train.maps]
    imgs, masks_by_set = [greys[i] for i in val], {}
    for name, (augs, ms) in r6.native_sets(greys, val, seed0).items():  # round 6's draws when seed0 = 61
        imgs += [a.astype(np.float32) for a in augs]
        masks_by_set[name] = ms

    def ds(maps, labels):
        return WaferDataset(maps=maps, labels=np.array(labels, dtype=object),
                            meta=pd.DataFrame({"split": [""] * len(maps)}), kind="image", name="fusion-val")

    fit = ds([greys[i] for i in fitidx], ["good"] * len(fitidx))
    ev = ds(imgs, ["good"] * len(val) + ["defect"] * (len(imgs) - len(val)))
    boxes = image_canvas(ev, S, "image").boxes
    nval, na = len(val), 2 * len(val)
    masks = {name: r6.canvas_masks(ms, boxes[nval + j * na: nval + (j + 1) * na], 0.0 if name == "nat_crack" else 0.25)
             for j, (name, ms) in enumerate(masks_by_set.items())}
    return fit, ev, masks, nval


def canvas_maps(det, dataset):
    """(N, S, S) canvas maps of ``det`` (its ``score`` without the resize to each image's own size)."""
    from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps

    sigma = float(det.smoothing_sigma) * int(det.input_size) / 256.0
    out = []
    with torch.no_grad():
        for _, _, canvas, f in det._batches(dataset, "score"):
            cell = mahalanobis_maps(det._standardise(f), det.mean_, det.precision_).sqrt()
            out.append(from_grid((cell - det.cell_loc_) / det.cell_scale_, canvas.boxes, int(det.input_size), sigma))
    return torch.cat(out).numpy()


def fit_recording(det, normals):
    """``det.fit(normals)``, also returning the fold-held-out image scores of the training normals.

    The fit's calibration pass calls ``mahalanobis_maps`` once per batch of each fold's images (sorted
    positions, fold by fold); after it, the base class's ``_after_fit`` scores the training normals
    in-sample for ``threshold_`` (more calls, not used here). The wrapper keeps the first n distances.
    """
    import waferscope.models.detectors.texture_padim.detector as mod
    from waferscope.models.detectors.common import image_canvas, masked_max
    from waferscope.models.detectors.texture_padim.anomaly_map import from_grid

    seen, orig = [], mod.mahalanobis_maps

    def rec(*a):
        d = orig(*a)
        seen.append(d.sqrt())
        return d

    mod.mahalanobis_maps = rec
    try:
        det.fit(normals)
    finally:
        mod.mahalanobis_maps = orig
    n = len(normals)
    k = min(int(det.calibration_folds), n // 3)
    order = np.concatenate([np.sort(f) for f in np.array_split(np.random.default_rng(0).permutation(n), k)])
    held = torch.empty(n, *seen[0].shape[1:])
    held[torch.from_numpy(order)] = torch.cat(seen)[:n]
    canvas = image_canvas(normals, int(det.input_size), "image")
    sigma = float(det.smoothing_sigma) * int(det.input_size) / 256.0
    maps = from_grid((held - det.cell_loc_) / det.cell_scale_, canvas.boxes, int(det.input_size), sigma)
    return masked_max(maps, canvas.valid)


def run_detector(split, name):
    from waferscope.evaluate.detection import load_image_set
    from waferscope.models.detectors.common import image_canvas
    from waferscope.registry import create

    t0, w0 = time.process_time(), time.time()
    if split == "val":
        fit, ev, masks, nval = val_data()
        extra = {f"m_{k}": v for k, v in masks.items()}
        extra["nval"] = nval
    else:
        fit, ev = load_image_set()
        extra = {}
    t_data = time.process_time() - t0
    det = create(name="texture_padim", kind="detector", **PARAMS[name], progress=False)
    c0 = time.process_time()
    held_scores = fit_recording(det, fit)
    c1 = time.process_time()
    maps = canvas_maps(det, ev)
    c2 = time.process_time()
    canvas = image_canvas(ev, S, "image")
    cost = {"detector": name, "split": split, "data_cpu_s": round(t_data, 1), "fit_cpu_s": round(c1 - c0, 1),
            "score_cpu_s": round(c2 - c1, 1), "n_scored": len(ev), "wall_s": round(time.time() - w0, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            "load_end": os.getloadavg()}
    np.savez(cache(split, name) + ".tmp.npz", maps=maps.astype(np.float32), held=held_scores,
             valid=canvas.valid, boxes=np.array(canvas.boxes), **extra)
    os.replace(cache(split, name) + ".tmp.npz", cache(split, name))
    print(json.dumps(cost), flush=True)


def fused(a, b, rule):
    """(scores, maps) of a rule from the two detectors' caches."""
    za = (a["maps"] - a["held"].mean()) / a["held"].std()
    zb = (b["maps"] - b["held"].mean()) / b["held"].std()
    v = a["valid"]
    mx = lambda m: np.where(v, m, -np.inf).reshape(len(m), -1).max(1)  # noqa: E731
    if rule == "texture":
        m = a["maps"]
        return mx(m), m
    if rule == "backbone":
        m = b["maps"]
        return mx(m), m
    if rule == "mean_score":
        return (mx(za) + mx(zb)) / 2, (za + zb) / 2
    if rule == "mean_map":
        m = (a["maps"] + b["maps"]) / 2
        return mx(m), m
    if rule == "max_score":
        m = np.maximum(za, zb)
        return mx(m), m
    raise SystemExit(f"unknown rule {rule}")


def val_report(rule, sc_all, maps_all, a):
    nval = int(a["nval"])
    na = 2 * nval
    rows = {}
    for j, name in enumerate(SETS):
        sl = np.r_[np.arange(nval), nval + j * na + np.arange(na)]
        sc, maps, v = sc_all[sl], maps_all[sl], a["valid"][sl].astype(bool)
        m = np.concatenate([np.zeros((nval, S, S), bool), a[f"m_{name}"]])
        normal = np.r_[np.ones(nval, bool), np.zeros(na, bool)]
        hit = [m[i].flat[np.argmax(np.where(v[i], maps[i], -1e9))] for i in np.flatnonzero(~normal) if m[i].any()]
        rows[name] = {"image_auroc": round(roc_auc_score(~normal, sc), 4),
                      "pixel_auroc": round(roc_auc_score(m[v], maps[v]), 4), "max_in_mask": round(float(np.mean(hit)), 3)}
    print(json.dumps({"rule": rule, **rows}), flush=True)
    return rows


def passes(row, base):
    ok = row["nat_val"]["image_auroc"] >= base["nat_val"]["image_auroc"] + 0.01
    for s in SETS:
        ok &= row[s]["image_auroc"] >= base[s]["image_auroc"] - 0.005
        ok &= row[s]["pixel_auroc"] >= base[s]["pixel_auroc"] - 0.005
        ok &= row[s]["max_in_mask"] >= base[s]["max_in_mask"] - 0.015
    return bool(ok)


def fuse_val():
    a, b = dict(np.load(cache("val", "texture"))), dict(np.load(cache("val", "backbone")))
    print(json.dumps({"held_out_image_score": {"texture": [float(a["held"].mean()), float(a["held"].std())],
                                               "backbone": [float(b["held"].mean()), float(b["held"].std())]}}))
    rows = {r: val_report(r, *fused(a, b, r), a) for r in ("texture", "backbone") + RULES}
    ok = {r: passes(rows[r], rows["texture"]) for r in RULES}
    print(json.dumps({"passes": ok}), flush=True)
    good = [r for r in RULES if ok[r]]
    if good:
        best = max(rows[r]["nat_val"]["image_auroc"] for r in good)
        near = [r for r in good if rows[r]["nat_val"]["image_auroc"] >= best - 0.005]
        chosen = max(near, key=lambda r: np.mean([rows[r][s]["image_auroc"] for s in SETS]))
        print(json.dumps({"chosen": chosen}), flush=True)


def fuse_test(rules, other="backbone", fuse=None):
    """Test-split figures of ``rules`` from the caches of ``texture`` and ``other`` (fused by ``fuse``)."""
    from waferscope.base import DetectionResult
    from waferscope.evaluate.detection import load_image_set, max_in_mask_per_class, max_in_mask_rate, per_class_auroc
    from waferscope.metrics.detection import evaluate_detection
    from waferscope.models.detectors.common import canvas_maps_to_input, image_canvas

    a, b = dict(np.load(cache("test", "texture"))), dict(np.load(cache("test", other)))
    _, test = load_image_set()
    canvas = image_canvas(test, S, "image")
    for rule in rules:
        sc, maps = (fuse or fused)(a, b, rule)
        res = DetectionResult(scores=sc.astype(np.float64),
                              maps=canvas_maps_to_input(torch.from_numpy(maps.astype(np.float32)), canvas, test))
        met = evaluate_detection(res, test)
        print(json.dumps({"rule": rule, "image_auroc": round(met["image_auroc"], 4),
                          "pixel_auroc": round(met["pixel_auroc"], 4), "aupro": round(met["aupro"], 4),
                          "max_in_mask": round(max_in_mask_rate(res.maps, test), 3),
                          "auroc_per_class": {k: round(v, 3) for k, v in per_class_auroc(res.scores, test).items()},
                          "max_in_mask_per_class": max_in_mask_per_class(res.maps, test)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--detector", choices=tuple(PARAMS))
    ap.add_argument("--fuse", action="store_true")
    ap.add_argument("--rule", action="append", help="test split: the rule chosen on validation (repeatable)")
    args = ap.parse_args()
    if args.detector:
        run_detector(args.split, args.detector)
    if args.fuse:
        if args.split == "val":
            fuse_val()
        else:
            fuse_test(["texture", "backbone"] + list(args.rule or []))


if __name__ == "__main__":
    main()
