#!/usr/bin/env python
"""Realism check: train a plain CNN on synthetic maps ONLY, evaluate it on real wafer maps.

If the generator's classes look like the real ones, a classifier that never saw a real wafer
still classifies real wafers well. Acceptance: macro-F1 >= 0.80 on the 2,892 real dev maps.

    python scripts/realism_check.py        # 6 epochs × 45k fresh maps, 48 px, width 24, 1 thread: ~13 min CPU
    python scripts/realism_check.py --n 27000 --epochs 3 --width 16   # quick comparison run: ~2.5 min CPU

Every epoch trains on --n maps never shown before (``--no-fresh-per-epoch``: the same maps every
epoch, the recipe before 2026-11-24, with ``--epochs 4``). Optional, off by default and not
helpful in the measurements of docs/synthetic.md: ``--ema DECAY`` (score a moving average of the
weights), ``--die-noise RATE`` (flip a few dies pass <-> fail on every training map).

Prints per-class precision/recall/F1 and the confusion matrix (rows = real class, columns =
prediction) of the softmax averaged over the 8 rotations/flips of each real map, and the
single-view macro-F1 beside it; ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn

from waferscope.data import load
from waferscope.data.classes import CLASSES
from waferscope.data.preprocess import augment_dihedral, dihedral, encode, resize_maps
from waferscope.data.synthetic import generate
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)


def small_cnn(n_classes: int, width: int = 16, grid: int = 4) -> nn.Module:
    """Four conv blocks (the first three halve the map) and a linear head on the flattened grid×grid map:
    flattening (not global pooling) keeps *where* the fails are, which separates Center, Loc,
    Edge-Loc and Edge-Ring."""
    layers, c_in = [], 3
    for i, c in enumerate([width, 2 * width, 4 * width, 4 * width]):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Dropout(0.3),
                         nn.Linear(c_in * grid * grid, n_classes))


def to_input(maps, size: int) -> np.ndarray:
    return encode(resize_maps(maps, size), "onehot3")


def flip_dies(maps, max_rate: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Die noise: on each map flip a random share (drawn uniformly in [0, max_rate]) of its dies
    pass <-> fail, so the CNN does not lean on the exact background fail rate of the generator."""
    out = []
    for m, rate in zip(maps, rng.uniform(0.0, max_rate, len(maps))):
        flip = (m > 0) & (rng.random(m.shape) < rate)
        noisy = m.copy()
        noisy[flip] = 3 - noisy[flip]  # 1 (pass) <-> 2 (fail)
        out.append(noisy)
    return out


# Seed of the synthetic maps of epoch e with --fresh-per-epoch: epoch 0 uses --seed itself (the same
# maps as without the flag); later epochs are far from any seed a user would pass to --seed.
EPOCH_SEED_STRIDE = 100_000


def epoch_seed(seed: int, epoch: int) -> int:
    return seed + EPOCH_SEED_STRIDE * epoch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=45000, help="synthetic training maps (class-balanced)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=48, help="network input size (maps resized to size×size); "
                    "at least the grid size, so nearest resizing never drops a row of dies")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--width", type=int, default=24, help="channels of the first conv block (doubles twice)")
    ap.add_argument("--grid", type=int, default=6, help="spatial grid of the flattened head (size/8 keeps "
                    "the last feature map unpooled)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh-per-epoch", action=argparse.BooleanOptionalAction, default=True,
                    help="draw --n new synthetic maps for every epoch (seed --seed + %d × epoch) instead "
                    "of showing the same maps every epoch" % EPOCH_SEED_STRIDE)
    ap.add_argument("--ema", type=float, default=0.0, help="evaluate an exponential moving average of the "
                    "weights with this decay per step (0 = off; e.g. 0.995)")
    ap.add_argument("--die-noise", type=float, default=0.0, help="flip up to this share of each training "
                    "map's dies pass <-> fail (per-map share uniform in [0, value]; 0 = off)")
    ap.add_argument("--real", default=DEV, help="real labelled maps to evaluate on")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--no-tta", action="store_true", help="score the plain prediction only (by default the "
                    "softmax averaged over the 8 rotations/flips of each real map is scored too)")
    args = ap.parse_args(argv)

    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    syn = generate(args.n, seed=args.seed)
    noise_rng = np.random.default_rng([args.seed, 1])  # separate stream: --die-noise 0 leaves the rest unchanged

    def training_maps(epoch: int):
        """(resized maps, class indices) of one epoch: fresh maps if asked, die noise if asked."""
        nonlocal syn
        if args.fresh_per_epoch and epoch > 0:
            syn = generate(args.n, seed=epoch_seed(args.seed, epoch))
        maps = flip_dies(syn.maps, args.die_noise, noise_rng) if args.die_noise > 0 else syn.maps
        return resize_maps(maps, args.size), np.array([CLASSES.index(c) for c in syn.labels])

    x_syn, y_syn = training_maps(0)
    real = load(args.real)
    x_real = to_input(real.maps, args.size)
    y_real = np.array([CLASSES.index(c) for c in real.labels])
    print(f"data: {len(syn)} synthetic, {len(real)} real maps, {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    model = small_cnn(len(CLASSES), args.width, args.grid)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(syn) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    averaged = None
    if args.ema > 0:  # one network: a running average of its own weights
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema))
    step = 0
    for epoch in range(args.epochs):
        if epoch > 0 and (args.fresh_per_epoch or args.die_noise > 0):
            x_syn, y_syn = training_maps(epoch)
        model.train()
        order = rng.permutation(len(syn))
        total = 0.0
        for b in range(len(syn) // args.batch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            xb = torch.from_numpy(encode(augment_dihedral(x_syn[idx], rng), "onehot3"))
            yb = torch.from_numpy(y_syn[idx])
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            total += loss.item()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / (b + 1):.3f} ({time.perf_counter() - t0:.0f}s)",
              file=sys.stderr)

    if averaged is not None:
        # BatchNorm statistics must be recomputed for the averaged weights (averaging the running
        # statistics of the changing network scored 0.47 on the quick check): one pass over up to
        # 100 batches of the last epoch's training maps, augmented as in training.
        from torch.optim.swa_utils import update_bn
        model = averaged.module
        n_bn = min(len(x_syn) // args.batch, 100) * args.batch
        update_bn((torch.from_numpy(encode(augment_dihedral(x_syn[i:i + args.batch], rng), "onehot3"))
                   for i in range(0, n_bn, args.batch)), model)
    model.eval()

    def probabilities(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([model(torch.from_numpy(np.ascontiguousarray(x[i:i + 512]))).softmax(1)
                              for i in range(0, len(x), 512)]).numpy()

    labels = list(range(len(CLASSES)))
    plain = probabilities(x_real)
    macro_plain = f1_score(y_real, plain.argmax(1), labels=labels, average="macro")
    if args.no_tta:
        prob = plain
    else:  # a wafer has no preferred orientation: average over the 8 symmetries of the square
        prob = sum(probabilities(dihedral(x_real, k, axes=(-2, -1))) for k in range(8)) / 8
    pred = prob.argmax(1)
    macro = f1_score(y_real, pred, labels=labels, average="macro")
    per_class = f1_score(y_real, pred, labels=labels, average=None)
    cm = confusion_matrix(y_real, pred, labels=labels)
    print(classification_report(y_real, pred, labels=labels, target_names=CLASSES, digits=3))
    print("confusion (rows real, cols predicted):", " ".join(c[:6] for c in CLASSES))
    for c, row in zip(CLASSES, cm):
        print(f"{c:>10s} " + " ".join(f"{v:6d}" for v in row))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"macro-F1 on {len(real)} real maps (trained on synthetic only): {macro:.3f}"
          + ("" if args.no_tta else f" (8-fold dihedral average; single view {macro_plain:.3f})")
          + f"  [{wall:.0f}s wall, {cpu:.0f}s CPU]")
    result = {"macro_f1": round(float(macro), 4), "macro_f1_single_view": round(float(macro_plain), 4),
              "cpu_seconds": round(cpu, 1),
              "per_class_f1": {c: round(float(f), 4) for c, f in zip(CLASSES, per_class)},
              "confusion": cm.tolist(), "predicted": [CLASSES[k] for k in pred], "classes": list(CLASSES), "args": vars(args),
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
