"""Experiment: texture_padim's per-cell calibration and map variants on the Magnetic Tile set.

Same canvas (128 px, aspect kept, own mean/std, reflect-padded) and filter bank as the detector
(``--sigmas``, energy window 7, stride 4), Gaussians on a ``--grid``² lattice of relative positions
(ridge 0.01), then the test maps of
  A: the Mahalanobis distance (what ``texture_padim`` does by default),
  B: per-cell z-score against 5-fold held-out distances of the training normals (``calibration_folds=5``),
  C: per-cell ratio to the held-out mean,
  D: B minus each image's own median (exploratory: image score relative to its own image).
Metrics on the canvas (masks area-resized, > 0.25), as scripts/experiments/draem_seg_images.py.

Run from the worktree root: ``PYTHONPATH=src python scripts/experiments/texture_padim_variants.py --sigmas 1,2,4,8``
"""

import argparse
import os
import json
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps, to_grid

torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=128)
p.add_argument("--sigmas", default="1,2,4")
p.add_argument("--grid", type=int, default=32)
a = p.parse_args()


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _canvas_cache import canvas_cache, per_class_auroc  # noqa: E402

d = canvas_cache(a.size)
S, stride = a.size, 4
bank = FilterBank([float(s) for s in a.sigmas.split(",")], 7, stride).eval()


def feats(x, boxes):
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), 32):
            out.append(
                to_grid(bank(torch.from_numpy(x[s : s + 32])), [tuple(b) for b in boxes[s : s + 32]], stride, a.grid)
            )
    return torch.cat(out)


def fit(f):
    x = f.double().permute(2, 3, 0, 1).reshape(-1, len(f), f.shape[1])
    mean = x.mean(1)
    dd = x - mean[:, None]
    cov = dd.transpose(1, 2) @ dd / (len(f) - 1)
    ridge = 0.01 * cov.diagonal(dim1=1, dim2=2).mean(1)
    return mean.float(), torch.linalg.inv(
        cov + ridge[:, None, None] * torch.eye(cov.shape[-1], dtype=cov.dtype)
    ).float()


def report(maps, name):
    v, masks, normal, labels = d["vte"].astype(bool), d["masks"] > 0, d["normal"], d["labels"]
    sc = np.array([maps[i][v[i]].max() for i in range(len(maps))])
    hits = [
        masks[i].flat[np.argmax(np.where(v[i], maps[i], -1e9))]
        for i in range(len(maps))
        if not normal[i] and masks[i].any()
    ]
    per = per_class_auroc(sc, normal, labels)
    print(
        json.dumps(
            {
                "variant": name,
                "args": vars(a),
                "image_auroc": round(roc_auc_score(~normal, sc), 4),
                "pixel_auroc": round(roc_auc_score(masks[v], maps[v]), 4),
                "max_in_mask": round(float(np.mean(hits)), 3),
                "per_defect": per,
            }
        ),
        flush=True,
    )


ftr, fte = feats(d["xtr"], d["btr"]), feats(d["xte"], d["bte"])
cm, cs = ftr.mean((0, 2, 3)), ftr.std((0, 2, 3)).clamp_min(1e-6)
ftr, fte = [(f - cm[None, :, None, None]) / cs[None, :, None, None] for f in (ftr, fte)]
cell = mahalanobis_maps(fte, *fit(ftr)).sqrt()
boxes, sm = [tuple(b) for b in d["bte"]], 4.0 * S / 256
report(from_grid(cell, boxes, S, sm).numpy(), "A distance")
perm = np.random.default_rng(0).permutation(len(ftr))
held = torch.empty(len(ftr), *cell.shape[1:])
for k in np.array_split(perm, 5):
    held[k] = mahalanobis_maps(ftr[k], *fit(ftr[np.setdiff1d(perm, k)])).sqrt()
mu, sd = held.mean(0), held.std(0).clamp_min(1e-6)
mapsB = from_grid((cell - mu) / sd, boxes, S, sm).numpy()
report(mapsB, "B per-cell z (calibration_folds=5)")
report(from_grid(cell / mu, boxes, S, sm).numpy(), "C per-cell ratio")
v = d["vte"].astype(bool)
report(
    mapsB - np.array([np.median(mapsB[i][v[i]]) for i in range(len(mapsB))])[:, None, None], "D B minus image median"
)
