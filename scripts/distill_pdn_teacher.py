"""Distil the wafer ResNet-18's mid-level features into a narrow PDN-S: EfficientAD's teacher.

EfficientAD pre-trains its PDN teacher to reproduce a WideResNet-101's layer2+layer3 features on
ImageNet. Wafer maps are far from ImageNet, so here the feature source is the shipped wafer-domain
``wafer_resnet18`` and the images are synthetic wafer maps of all nine classes
(``waferscope.data.synthetic.generate``; no real map is used, so no evaluation map leaks in).

Target per PDN output cell: the ResNet's layer2 and layer3 maps of the 64×64 map, average-pooled (layer2) or
bilinearly upsampled (layer3) to the PDN's output grid, concatenated (64 + 128 = 192 channels) and standardised per channel. The PDN
sees the 32×32 map (its padded output grid is 8×8, each cell a 33-px patch). Loss: MSE.

    python scripts/distill_pdn_teacher.py            # writes src/waferscope/weights/pdn_small.{safetensors,json}

Runs in about 3 minutes on 2 CPU cores.

``--domain formula`` (issue 29): EfficientAD's teacher for *images*. The feature source is the shipped
``formula_resnet18`` (pre-trained on procedural grey textures, docs/detection.md "A formula-driven image
backbone") and the images are made by the same generator (``scripts/pretrain_formula_backbone.make_batch``,
another seed; no real image). PDN and ResNet see the same image at ``--input-size`` (64 by default for this
domain): the PDN input is what EfficientAD feeds images — the grey image standardised by its own mean/std,
mapped by ``z / 4 + 0.5`` and replicated to 3 channels — while the ResNet standardises its input itself.
An experiment of issue 29, not shipped: EfficientAD with this teacher on the 64-px grey canvas scored
0.594 image AUROC on the magnetic tile test split, below the pixel z-score baseline (0.698), so EfficientAD
takes wafer maps only (docs/detection.md, "Autoencoder, EfficientAD and texture_knn on images"). Writes
``pdn_small_formula.{safetensors,json}`` in the current directory unless ``--out`` says otherwise::

    python scripts/distill_pdn_teacher.py --domain formula --n-maps 2000 --epochs 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from waferscope.data.synthetic import generate
from waferscope.models.backbones import FeatureExtractor, create_backbone, wafer_weights_path
from waferscope.models.detectors.common import batch_slices, dataset_to_input, fit_loop, progress

FORMULA_OUT = Path("pdn_small_formula.safetensors")  # not shipped (module docstring)


def formula_inputs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(source input, PDN input) of ``n`` procedural grey images (the formula backbone's generator).

    Seeds offset by 20000 from the backbone's own training (0) and held-out (10000) images.
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pretrain_formula_backbone import make_batch  # noqa: E402

    g = torch.Generator().manual_seed(20000 + seed)
    imgs = torch.cat([make_batch(min(256, n - s), size, g)[0] for s in range(0, n, 256)])
    grey = imgs[:, :1]
    z = (grey - grey.mean((2, 3), keepdim=True)) / (grey.std((2, 3), keepdim=True, unbiased=False) + 1e-3)
    return imgs.numpy(), (z / 4 + 0.5).expand(-1, 3, -1, -1).contiguous().numpy()


def to_grid(f: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool a finer map down to the grid, bilinearly upsample a coarser one."""
    if f.shape[-1] >= grid:
        return F.adaptive_avg_pool2d(f, grid)
    return F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-maps", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=float, default=0.25, help="PDN-S hidden width (1.0 = 128/256 channels)")
    ap.add_argument("--input-size", type=int, default=None, help="PDN input size (default 32 wafer, 64 formula)")
    ap.add_argument("--source-size", type=int, default=64, help="input size of the ResNet whose features are copied")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--source-weights", default="wafer", help="'wafer' (shipped) or a checkpoint path for wafer_resnet18")
    ap.add_argument("--domain", choices=("wafer", "formula"), default="wafer",
                    help="wafer: wafer_resnet18 on synthetic wafer maps; formula: formula_resnet18 on procedural images")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    formula = args.domain == "formula"
    if args.input_size is None:
        args.input_size = 64 if formula else 32
    if args.out is None:
        args.out = FORMULA_OUT if formula else wafer_weights_path("pdn_small")
    if formula:
        src_in, pdn_in = formula_inputs(args.n_maps, args.input_size, args.seed)
        source = FeatureExtractor(create_backbone("formula_resnet18", pretrained="formula"), layers=("layer2", "layer3"))
    else:
        data = generate(args.n_maps, seed=args.seed)
        source = FeatureExtractor(create_backbone("wafer_resnet18", pretrained=args.source_weights),
                                  layers=("layer2", "layer3"))
    pdn_kwargs = {"width": args.width, "padding": True}
    probe = create_backbone("pdn_small", out_channels=1, **pdn_kwargs)
    with torch.no_grad():
        grid = probe(torch.zeros(1, 3, args.input_size, args.input_size)).shape[-1]

    if not formula:
        src_in = dataset_to_input(data, args.source_size)
    targets = []
    with torch.inference_mode():
        for sl in progress(list(batch_slices(len(src_in), 256)), desc="source features"):
            feats = source(torch.from_numpy(src_in[sl]))
            targets.append(torch.cat([to_grid(f, grid) for f in feats.values()], 1))
    targets = torch.cat(targets)
    mean, std = targets.mean((0, 2, 3), keepdim=True), targets.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    targets = (targets - mean) / std
    channels = targets.shape[1]

    torch.manual_seed(args.seed)
    pdn = create_backbone("pdn_small", out_channels=channels, **pdn_kwargs)
    if not formula:
        pdn_in = dataset_to_input(data, args.input_size)
    # Pair each input with its target through the sample index (channel 0 carries it through fit_loop's
    # shuffling; dihedral augmentation is off because the targets were computed unrotated).
    index = np.arange(len(pdn_in), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, args.input_size, args.input_size), np.float32)
    packed = np.concatenate([pdn_in, index], 1)

    def step(batch: torch.Tensor) -> torch.Tensor:
        x, idx = batch[:, :3], batch[:, 3, 0, 0].long()
        return F.mse_loss(pdn(x), targets[idx])

    history = fit_loop(list(pdn.parameters()), step, packed, epochs=args.epochs, batch_size=64, lr=args.lr,
                       seed=args.seed, augment=False, desc="distil PDN", modules=[pdn])

    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    save_file({k: v.contiguous() for k, v in pdn.state_dict().items()}, str(tmp))
    info = {
        **({"backbone": "pdn_small", "domain": "formula"} if formula else {}),
        "kwargs": dict(pdn_kwargs, out_channels=channels),
        "input_size": args.input_size,
        "provenance": {
            "script": "scripts/distill_pdn_teacher.py",
            "source": (f"formula_resnet18 (pretrained='formula') layer2+layer3 at {args.input_size} px, upsampled to the "
                       "PDN grid, standardised" if formula else
                       f"wafer_resnet18 (pretrained={args.source_weights!r}) layer2+layer3, avg-pooled to the PDN grid, standardised"),
            "source_input_size": args.input_size if formula else args.source_size,
            "data": (f"scripts/pretrain_formula_backbone.make_batch({args.n_maps}, {args.input_size}, generator seed "
                     f"{20000 + args.seed}); PDN input: per-image standardised grey z / 4 + 0.5, 3 channels" if formula else
                     f"waferscope.data.synthetic.generate({args.n_maps}, seed={args.seed}) (all 9 classes, no real maps)"),
            "command": "python scripts/distill_pdn_teacher.py " + " ".join(__import__("sys").argv[1:]),
            "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
            "final_mse": round(history[-1], 5), "mse_per_epoch": [round(h, 5) for h in history],
            "seconds": round(time.time() - t0, 1),
        },
    }
    tmp_json = args.out.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(info, indent=2))
    os.replace(tmp, args.out)
    os.replace(tmp_json, args.out.with_suffix(".json"))
    print(f"wrote {args.out} ({channels} channels, final MSE {history[-1]:.4f}, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
