"""Pre-train the wafer-domain backbone shipped with waferscope (ImageNet weights cannot be downloaded).

Task: multi-label classification of the 8 base defect patterns (BCE) on synthetic wafer maps only —
MixedWM38-style mixed maps (``generate(mixed=True)``, 0–4 patterns each) plus single-pattern maps —
at 64×64, onehot3 input, random dihedral augmentation, AdamW with a cosine schedule. The real dev
maps are never trained on: they are only used afterwards for a transfer check (per-pattern AUROC of
the trained head on the 2,892 real maps), so detector results on them stay clean.

Writes ``<out>/<arch>.safetensors`` (float16 weights, a few MB) and ``<out>/<arch>.json`` (the
construction kwargs ``create_backbone(arch, pretrained="wafer")`` uses, the training config, the
measured metrics and timings).

    python scripts/pretrain_wafer_backbone.py --arch wafer_resnet18
    python scripts/pretrain_wafer_backbone.py --arch wafer_convnext --lr 2e-3 --weight-decay 0.05
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from waferscope.data import preprocess
from waferscope.data.classes import BASE_PATTERNS
from waferscope.data.synthetic import generate
from waferscope.models.backbones import create_backbone
from waferscope.models.backbones.checkpoint import write_shipped_weights
from waferscope.models.training import fit_loop, index_batches, one_cycle, seed_everything
from waferscope.data.paths import DEV_MAPS

ROOT = Path(__file__).resolve().parents[1]
DEV = DEV_MAPS


def to_uint8(ds, size: int) -> np.ndarray:
    return preprocess.resize_maps(ds.maps, size)


def macro_auroc(y: np.ndarray, p: np.ndarray) -> tuple[float, dict]:
    from sklearn.metrics import roc_auc_score

    per = {}
    for j, name in enumerate(BASE_PATTERNS):
        if 0 < y[:, j].sum() < len(y):
            per[name] = float(roc_auc_score(y[:, j], p[:, j]))
    return float(np.mean(list(per.values()))), per


@torch.no_grad()
def predict(model, maps_u8: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(maps_u8), batch):
        x = torch.from_numpy(preprocess.encode(maps_u8[s:s + batch], "onehot3"))
        out.append(torch.sigmoid(model(x)).numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="wafer_resnet18", choices=["wafer_resnet18", "wafer_convnext"])
    ap.add_argument("--n-mixed", type=int, default=6000)
    ap.add_argument("--n-single", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "src/waferscope/weights")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    t0 = time.perf_counter()

    mixed = generate(args.n_mixed, seed=1000 + args.seed, mixed=True)
    single = generate(args.n_single, seed=2000 + args.seed)
    x_train = np.concatenate([to_uint8(mixed, args.size), to_uint8(single, args.size)])
    y_train = np.concatenate([mixed.multilabels, single.multilabels]).astype(np.float32)
    held = generate(2000, seed=9000 + args.seed, mixed=True)
    x_held, y_held = to_uint8(held, args.size), held.multilabels
    t_data = time.perf_counter() - t0
    print(f"data: {len(x_train)} training maps, {len(x_held)} held-out ({t_data:.1f}s)", file=sys.stderr)

    model = create_backbone(args.arch, num_classes=len(BASE_PATTERNS))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def batches(epoch: int):
        for idx in index_batches(rng.permutation(len(x_train)), args.batch_size):
            x = torch.from_numpy(preprocess.encode(preprocess.augment_dihedral(x_train[idx], rng), "onehot3"))
            yield x, torch.from_numpy(y_train[idx])

    def step(batch):
        x, y = batch
        return loss_fn(model(x), y), len(y)

    def held_out() -> dict:
        return {"held_out_synthetic_macro_auroc": round(macro_auroc(y_held, predict(model, x_held))[0], 4)}

    t1 = time.perf_counter()
    result = fit_loop(model, batches, step, epochs=args.epochs, optimizer=opt, evaluate=held_out, progress=True,
                      schedule=one_cycle(opt, args.lr, args.epochs * steps_per_epoch), desc=f"pretrain {args.arch}")
    history = [{"epoch": h["epoch"], "train_bce": round(h["train_loss"], 5),
                "held_out_synthetic_macro_auroc": h["held_out_synthetic_macro_auroc"]} for h in result.history]
    for h in history:
        print(f"epoch {h['epoch']}/{args.epochs} bce {h['train_bce']:.4f} held-out macro AUROC "
              f"{h['held_out_synthetic_macro_auroc']:.4f}", file=sys.stderr)
    t_train = time.perf_counter() - t1

    metrics: dict = {"held_out_synthetic_mixed_macro_auroc": history[-1]["held_out_synthetic_macro_auroc"]}
    if DEV.is_file():  # transfer check on real maps (never trained on)
        from waferscope.data import load

        dev = load(DEV)
        y_dev = np.array([[lab == p for p in BASE_PATTERNS] for lab in dev.labels], dtype=np.uint8)
        dev_auroc, per = macro_auroc(y_dev, predict(model, to_uint8(dev, args.size)))
        metrics["real_dev_macro_auroc_transfer_check"] = round(dev_auroc, 4)
        metrics["real_dev_per_pattern_auroc"] = {k: round(v, 4) for k, v in per.items()}
        print(f"real dev (transfer check): macro AUROC {dev_auroc:.4f} {per}", file=sys.stderr)

    info = {
        "backbone": args.arch,
        "kwargs": {"num_classes": len(BASE_PATTERNS)},
        "head": {"outputs": list(BASE_PATTERNS), "activation": "sigmoid (multi-label)"},
        "input": {"size": args.size, "encoding": "onehot3 (no-die, pass, fail)", "resize": "nearest"},
        "training": {
            "data": f"synthetic only: generate({args.n_mixed}, seed={1000 + args.seed}, mixed=True) + "
                    f"generate({args.n_single}, seed={2000 + args.seed}); held-out generate(2000, seed={9000 + args.seed}, mixed=True)",
            "task": "multi-label BCE over BASE_PATTERNS", "augmentation": "random dihedral (8 rotations/flips)",
            "optimizer": f"AdamW lr={args.lr} weight_decay={args.weight_decay}, one-cycle schedule",
            "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
            "seconds_data": round(t_data, 1), "seconds_train": round(t_train, 1), "history": history,
        },
        "metrics": metrics,
    }
    wpath, jpath = write_shipped_weights(model.state_dict(), args.out, args.arch, info,
                                         "scripts/pretrain_wafer_backbone.py")
    print(f"wrote {wpath} ({wpath.stat().st_size / 1e6:.1f} MB) and {jpath}", file=sys.stderr)


if __name__ == "__main__":
    main()
