"""Experiment (issue 29, third round): large-scale channels and border handling for texture_padim.

Variants of the per-relative-position Gaussian (128 px canvas, σ = 1, 2, 4, energy window 7,
stride 4, grid 32, ridge 0.01 — the detector's defaults) with extra *large-scale* channels aimed at
the `uneven` defects (broad bands of another grinding texture / brightness):
  brightness  the grey level smoothed at σ_L (8, 16 px), relative to the image's own mean;
  energy      log of squared fine-scale responses (σ 1, 2: Gx², Gy², |H|²) smoothed at σ_L,
              relative to the image's own mean log energy (the texture's local strength and
              direction against the image's global level).
They enter either the same Gaussian ("J32": joint, at --grid) or a second Gaussian ("B16" / "B32":
grid 16 / --grid; map = sqrt(D_base² + D_large²), i.e. the joint Gaussian with a block-diagonal
covariance). "A" is the filter bank alone; "*_nb1" scores each cell by its nearest Gaussian within
±1 cell (misalignment tolerance); "*_cal" is the per-cell calibration (``calibration_folds=5``).
``--stride`` / ``--grid`` set the cell size (4 / 32 was the default, 2 / 64 is now).

Selection protocol (no test labels): fit on 80 % of the training normals, score the other 20 % and
one synthetic anomalous copy of each (the package's DRAEM / CutPaste-scar synthesis of
texture_contrast, inside the image box); the variant with the best validation figures is the one
adopted. Test figures of every variant are printed too and are reported as exploration.

Run from the worktree root:
``PYTHONPATH=src python scripts/experiments/texture_padim_channels.py [--stride 2 --grid 64] [--only A,A_cal]``
(features are cached in /tmp/img29; stride 1 / grid 128 needs ~9 GB of memory, use ``--no-large``).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps, to_grid
from waferscope.models.detectors.texture_padim.detector import TexturePaDiMDetector
from waferscope.models.detectors.texture_padim.features import large_scale_channels

torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument("--only", default="")
p.add_argument("--split", default="val,test")
p.add_argument("--stride", type=int, default=4)
p.add_argument("--grid", type=int, default=32)
p.add_argument("--no-large", action="store_true", help="base filter bank only (variants A*)")
a = p.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _canvas_cache import canvas_cache, per_class_auroc, synth_val  # noqa: E402

S, STRIDE, G = 128, a.stride, a.grid
d = canvas_cache(S)
bank = FilterBank((1.0, 2.0, 4.0), 7, STRIDE).eval()




def all_features(x, boxes):
    base, large = [], {16: [], G: []}
    with torch.inference_mode():
        for s in range(0, len(x), 32):
            xb, bb = torch.from_numpy(x[s:s + 32]), [tuple(b) for b in boxes[s:s + 32]]
            base.append(to_grid(bank(xb), bb, STRIDE, G))
            if a.no_large:
                continue
            lf = large_scale_channels(xb, bb, (1.0, 2.0), (8.0, 16.0))
            for g in (16, G):
                large[g].append(to_grid(lf, bb, 1, g))
    return torch.cat(base), {g: torch.cat(v) for g, v in large.items() if v}


def cached(name, fn):
    path = f"/tmp/img29/{name}_s{STRIDE}g{G}{'_base' if a.no_large else ''}.pt"
    if not os.path.exists(path):
        torch.save(fn(), path)
    return torch.load(path)


def fit(f):
    """The package's per-cell Gaussians (mean, ridge-regularised precision), ridge 0.01."""
    return TexturePaDiMDetector(shrinkage=0.01)._gaussians(f)


def standardise(tr, *others):
    m, s = tr.mean((0, 2, 3)), tr.std((0, 2, 3)).clamp_min(1e-6)
    return [(f - m[None, :, None, None]) / s[None, :, None, None] for f in (tr, *others)]


def neighbour_min(te, mean, prec, g, r):
    """Squared Mahalanobis distance to the nearest of the Gaussians within ±r cells (tolerance to
    small misalignment of the parts in their frame)."""
    if r == 0:
        return mahalanobis_maps(te, mean, prec)
    c = mean.shape[1]
    mg, pg = mean.view(g, g, c), prec.view(g, g, c, c)
    best = None
    idx = torch.arange(g)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            iy, ix = (idx + dy).clamp(0, g - 1), (idx + dx).clamp(0, g - 1)
            dd = mahalanobis_maps(te, mg[iy][:, ix].reshape(g * g, c), pg[iy][:, ix].reshape(g * g, c, c))
            best = dd if best is None else torch.minimum(best, dd)
    return best


def upg(cell, g):
    return torch.nn.functional.interpolate(cell[:, None], size=(G, G), mode="bilinear", align_corners=False)[:, 0] \
        if g != G else cell


# variant name -> (channel groups: list of (source, grid, channel slice)), each group its own Gaussian
# large channel layout per σ_L: [brightness, then 3 energies per fine σ] -> 7 per σ_L, 14 in all
BR = [0, 7]
EN = [c for c in range(14) if c not in BR]
NB = {"A_nb1": "A", "J_nb1": "J32"}
VARIANTS = {
    "A": [("base", G, None)],
    "J32": [("joint", G, None)],
    "B16": [("base", G, None), ("large", 16, None)],
    "B32": [("base", G, None), ("large", 32, None)],
    "B16_bright": [("base", G, None), ("large", 16, BR)],
    "B16_energy": [("base", G, None), ("large", 16, EN)],
}
VARIANTS["A_nb1"], VARIANTS["J_nb1"] = VARIANTS["A"], VARIANTS["J32"]
VARIANTS["A_cal"], VARIANTS["J_cal"] = VARIANTS["A"], VARIANTS["J32"]


def calibrated(tr, te, g):
    """Per-cell z-score against 5-fold held-out distances of the fitting normals (calibration_folds=5)."""
    dist = mahalanobis_maps(te, *fit(tr)).sqrt()
    perm = np.random.default_rng(0).permutation(len(tr))
    held = torch.empty(len(tr), g, g)
    for k in np.array_split(perm, 5):
        held[k] = mahalanobis_maps(tr[k], *fit(tr[np.setdiff1d(perm, k)])).sqrt()
    return (dist - held.mean(0)) / held.std(0).clamp_min(1e-6)


def run(split, ftr, fte, boxes, masks, valid, normal, labels):
    btr, ltr = ftr
    bte, lte = fte
    for name, groups in VARIANTS.items():
        if a.only and name not in a.only.split(","):
            continue
        d2 = 0
        for src, g, sl in groups:
            if src == "base":
                tr, te = btr, bte
            elif src == "large":
                tr, te = ltr[g], lte[g]
            else:
                tr, te = torch.cat([btr, ltr[G]], 1), torch.cat([bte, lte[G]], 1)
            if sl is not None:
                tr, te = tr[:, sl], te[:, sl]
            tr, te = standardise(tr, te)
            if name.endswith("_cal"):
                d2 = calibrated(tr, te, g)  # single-group variants only
                continue
            d2 = d2 + upg(neighbour_min(te, *fit(tr), g, 1 if name.endswith("nb1") else 0), g)
        maps = from_grid(d2 if name.endswith("_cal") else d2.sqrt(), boxes, S, 4.0 * S / 256).numpy()
        v, m = valid.astype(bool), masks > 0
        sc = np.array([maps[i][v[i]].max() for i in range(len(maps))])
        hit = {}
        for i in range(len(maps)):
            if not normal[i] and m[i].any():
                hit.setdefault(labels[i], []).append(m[i].flat[np.argmax(np.where(v[i], maps[i], -1e9))])
        allhit = np.concatenate([np.array(h) for h in hit.values()])
        und = labels == "uneven"
        out = {"split": split, "variant": name, "image_auroc": round(roc_auc_score(~normal, sc), 4),
               "pixel_auroc": round(roc_auc_score(m[v], maps[v]), 4), "max_in_mask": round(float(allhit.mean()), 3),
               "mim_per_type": {k: round(float(np.mean(h)), 2) for k, h in hit.items()}}
        if und.any():
            sel = v & (und | normal)[:, None, None]
            out["pixel_auroc_uneven"] = round(roc_auc_score(m[sel], maps[sel]), 4)
            out["per_defect"] = per_class_auroc(sc, normal, labels)
        print(json.dumps(out), flush=True)


os.makedirs("/tmp/img29", exist_ok=True)
btr_all = [tuple(b) for b in d["btr"]]
if "val" in a.split:
    perm = np.random.default_rng(0).permutation(len(d["xtr"]))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    xa, ma = synth_val(d["xtr"][val], [btr_all[i] for i in val], d["vtr"][val])
    ftr_all = cached("tr", lambda: all_features(d["xtr"], d["btr"]))
    fa = cached("valanom", lambda: all_features(xa, d["btr"][val]))
    sub = lambda f, idx: (f[0][idx], {g: t[idx] for g, t in f[1].items()})  # noqa: E731
    fv = sub(ftr_all, torch.from_numpy(val))
    fval = (torch.cat([fv[0], fa[0]]), {g: torch.cat([fv[1][g], fa[1][g]]) for g in fv[1]})
    n = len(val)
    run("val", sub(ftr_all, torch.from_numpy(fitidx)), fval, [btr_all[i] for i in val] * 2,
        np.concatenate([np.zeros_like(ma), ma]), np.concatenate([d["vtr"][val]] * 2),
        np.r_[np.ones(n, bool), np.zeros(n, bool)], np.array(["good"] * n + ["draem", "scar"] * (n // 2) + ["draem"] * (n % 2)))
if "test" in a.split:
    ftr_all = cached("tr", lambda: all_features(d["xtr"], d["btr"]))
    fte = cached("te", lambda: all_features(d["xte"], d["bte"]))
    run("test", ftr_all, fte, [tuple(b) for b in d["bte"]], d["masks"], d["vte"], d["normal"], d["labels"])
