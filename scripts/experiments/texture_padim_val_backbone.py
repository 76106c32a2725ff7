"""Experiment (issue 29 item 2): do a backbone's layer-2/3 channels help texture_padim as extra
per-position channels? Screened on the VALIDATION split only (no test labels are read).

The fifth round's protocol (``texture_padim_val_round5.py``, whose split, synthetic anomalies,
streaming fit, per-cell z calibration at stride 1 / grid 128 and report are reused): the default
filter bank (σ = 0.7, 1, 2, 4; 48 channels) plus ``--k`` channels of a backbone — layer2 and layer3
(upsampled to layer2's size) of the 128 px canvas (``z / 4 + 0.5``, grey in 3 channels, what
``texture_padim(backbone=...)`` feeds it), a seeded random subset of ``k`` (PaDiM's reduction),
resampled to the grid like every other channel.

Variants (``--variant``): ``fine`` (the default detector, no backbone), ``formula``
(``formula_resnet18``, shipped weights), ``wafer`` (``wafer_resnet18``, shipped weights), ``random``
(``formula_resnet18``, seeded random init).

``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_val_backbone.py --variant formula``
"""

import argparse
import os
import sys

import numpy as np
import torch
from torch.nn import functional as F

sys.argv, _argv = sys.argv[:1], sys.argv  # the round-4 module reads --faint from argv at import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import texture_padim_val_round4 as r4  # noqa: E402

sys.argv = _argv

from waferscope.models.backbones import FeatureExtractor, create_backbone  # noqa: E402
from waferscope.models.detectors.texture_knn.torch_model import FilterBank  # noqa: E402
from waferscope.models.detectors.texture_padim.anomaly_map import to_grid  # noqa: E402

BACKBONES = {"formula": ("formula_resnet18", "formula"), "wafer": ("wafer_resnet18", "wafer"),
             "random": ("formula_resnet18", None)}


def make_features(variant, k, upsample=1):
    ext, pick = None, None
    if variant != "fine":
        name, pretrained = BACKBONES[variant]
        torch.manual_seed(0)
        ext = FeatureExtractor(create_backbone(name, pretrained=pretrained), layers=("layer2", "layer3")).eval()
        total = sum(c for c, _, _ in ext.feature_info(r4.S * upsample).values())
        pick = torch.from_numpy(np.sort(np.random.default_rng(0).choice(total, size=k, replace=False)))

    def features(x, boxes, stride, g):
        bank = FilterBank((0.7, 1.0, 2.0, 4.0), 7, stride).eval()
        with torch.no_grad():
            for s in range(0, len(x), 32):
                xb = torch.from_numpy(x[s:s + 32])
                bx = [tuple(b) for b in boxes[s:s + 32]]
                f = to_grid(bank(xb), bx, stride, g)
                if ext is not None:
                    xin = (xb * 0.25 + 0.5).expand(-1, 3, -1, -1)
                    if upsample > 1:  # a finer backbone grid: layer2 at 8 / upsample canvas px
                        xin = F.interpolate(xin, scale_factor=upsample, mode="bilinear", align_corners=False)
                    l2, l3 = ext(xin).values()
                    e = torch.cat([l2, F.interpolate(l3, size=l2.shape[-2:], mode="bilinear", align_corners=False)], 1)
                    f = torch.cat([f, to_grid(e[:, pick], bx, max(1, r4.S // l2.shape[-1]), g)], 1)
                yield s, f
    return features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="formula", choices=["fine", *BACKBONES])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--upsample", type=int, default=1, help="backbone input = the canvas upsampled by this factor")
    a = ap.parse_args()
    r4.features = make_features(a.variant, a.k, a.upsample)
    d = r4.d
    perm = np.random.default_rng(0).permutation(len(d["xtr"]))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    btr = d["btr"]
    bval = [tuple(btr[i]) for i in val]
    xa, ma = r4.synth_val(d["xtr"][val], bval, d["vtr"][val])
    xe, me = r4.synth_edge(d["xtr"][val], bval, d["vtr"][val])
    r4.CRACK_DARK, r4.CRACK_R2 = (0.3, 0.8), 0.5  # the fourth round's --faint cracks
    xf, mf = r4.synth_edge(d["xtr"][val], bval, d["vtr"][val])
    n = len(val)
    xv = np.concatenate([d["xtr"][val], xa, xe, xf])
    bv = np.concatenate([btr[val]] * 4)
    held, dv = r4.fit_and_score(d["xtr"][fitidx], btr[fitidx], xv, bv, 1, 128)
    z = (dv - held.mean(0)) / held.std(0).clamp_min(1e-6)
    boxes, valid = bval * 2, np.concatenate([d["vtr"][val]] * 2)
    normal = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    good = ["good"] * n
    name = a.variant if a.variant == "fine" else f"{a.variant}_k{a.k}" + (f"_up{a.upsample}" if a.upsample > 1 else "")
    sets = {"val": (ma, ["draem", "scar"], 1), "val_edge": (me, ["crack", "chip"], 2),
            "val_edge_faint": (mf, ["crack", "chip"], 3)}
    for split, (m, kinds, kk) in sets.items():
        labels = np.array(good + (kinds * n)[:n])
        r4.report(name, torch.cat([z[:n], z[kk * n:(kk + 1) * n]]), boxes, np.concatenate([np.zeros_like(m), m]),
                  valid, normal, labels, 2.0, split)


if __name__ == "__main__":
    main()
