"""Why a ConvNeXt teacher hurts Reverse Distillation: statistics of the teacher maps it is compared on.

For each teacher stage, over every on-grid position of normal wafer maps, under three normalisations
(``none``: raw maps; ``layernorm``: per position over channels; ``channel``: per channel with the
training-set mean/std, as ``feature_norm="channel"`` does):

- ``cos_pairs``: mean cosine similarity of the feature vectors at two random positions of two random
  normal maps. Near 1 means every position points the same way, so 1 − cos has almost no range left
  to separate a defect from normal texture;
- ``top1_energy``: mean share of a position's squared norm carried by its single largest channel
  (a few dominant channels decide the cosine alone);
- ``offset_share``: ||channel mean||² / mean ||f||², how much of the vector is a constant offset
  shared by every position.

    python scripts/rd_feature_stats.py --convnext-weights <path or wafer>
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from waferscope.data.synthetic import generate
from waferscope.models.backbones import FeatureExtractor, create_backbone
from waferscope.models.detectors.common import dataset_to_input


def stats(f: torch.Tensor, rng: np.random.Generator) -> dict:
    v = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).double()
    i, j = rng.integers(0, len(v), 4000), rng.integers(0, len(v), 4000)
    sq = v.pow(2)
    return {"cos_pairs": round(float(F.cosine_similarity(v[i], v[j], dim=1).mean()), 3),
            "top1_energy": round(float((sq.max(1).values / sq.sum(1).clamp_min(1e-12)).mean()), 3),
            "offset_share": round(float(v.mean(0).pow(2).sum() / sq.sum(1).mean()), 3)}


def normalise(f: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "layernorm":
        return F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2]).permute(0, 3, 1, 2)
    if mode == "channel":
        mu, sd = f.mean((0, 2, 3), keepdim=True), f.std((0, 2, 3), keepdim=True).clamp_min(1e-4)
        return (f - mu) / sd
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resnet-weights", default="wafer")
    ap.add_argument("--convnext-weights", default="wafer")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.from_numpy(dataset_to_input(generate(args.n, seed=7, classes=["none"]), args.size))
    rng = np.random.default_rng(0)
    teachers = {"wafer_resnet18": (args.resnet_weights, ("layer1", "layer2", "layer3")),
                "wafer_convnext": (args.convnext_weights, ("stage1", "stage2", "stage3"))}
    for name, (weights, layers) in teachers.items():
        fe = FeatureExtractor(create_backbone(name, pretrained=weights), layers=layers)
        with torch.no_grad():
            feats = fe(x)
        for layer, f in feats.items():
            row = {"teacher": name, "layer": layer, "shape": list(f.shape[1:])}
            for mode in ("none", "layernorm", "channel"):
                row[mode] = stats(normalise(f, mode), rng)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
