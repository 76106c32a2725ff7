"""How real the synthetic maps are.

A CNN trained on synthetic maps only, scored on real wafers (:func:`realism_check`), and
synthetic-vs-real statistics and figures (:func:`compare_to_real`).

If the generator's classes look like the real ones, a classifier that never saw a real wafer still
classifies real wafers well; docs/synthetic.md's acceptance is macro-F1 >= 0.80 on the 2,892 real
dev maps (the default settings: 6 epochs × 45k fresh maps, 48 px, width 24; ~13 min CPU on 1 thread).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from waferscope.data import load
from waferscope.data.classes import CLASSES
from waferscope.data import paths
from waferscope.data.preprocess import augment_dihedral, dihedral, encode, resize_maps
from waferscope.data.render import render_map
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError
from waferscope.models.training import EMA, fit_loop, index_batches, one_cycle, seed_everything
from waferscope.utils import atomic_path

_OWN_REAL = ("real=, a load() spec (e.g. an .npz or .parquet file) or a WaferDataset of real maps labelled with "
             "the 9 WM-811K classes")


def _real_maps(real):
    """``real`` as a WaferDataset; None: the shared dev maps (a clear error when they are missing)."""
    if hasattr(real, "maps"):
        return real
    return load(paths.require_shared(paths.DEV_MAPS, _OWN_REAL) if real is None else real)


def small_cnn(n_classes: int, width: int = 16, grid: int = 4) -> nn.Module:
    """Four conv blocks (the first three halve the map) and a linear head on the flattened grid×grid map.

    Flattening (not global pooling) keeps *where* the fails are, which separates Center, Loc,
    Edge-Loc and Edge-Ring.
    """
    layers, c_in = [], 3
    for i, c in enumerate([width, 2 * width, 4 * width, 4 * width]):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Dropout(0.3),
                         nn.Linear(c_in * grid * grid, n_classes))


def to_input(maps, size: int) -> np.ndarray:
    """Return maps resized to ``size`` and one-hot encoded (the small CNN's input)."""
    return encode(resize_maps(maps, size), "onehot3")


def flip_dies(maps, max_rate: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Die noise: on each map flip a random share (drawn uniformly in [0, max_rate]) of its dies pass <-> fail.

    So the CNN does not lean on the exact background fail rate of the generator.
    """
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
    """Return the synthetic-data seed of epoch ``epoch``."""
    return seed + EPOCH_SEED_STRIDE * epoch


def realism_check(n: int = 45000, seed: int = 0, size: int = 48, epochs: int = 6, width: int = 24, grid: int = 6,
                  batch: int = 128, lr: float = 3e-3, fresh_per_epoch: bool = True, ema: float = 0.0,
                  die_noise: float = 0.0, real=None, tta: bool = True, progress: bool = True) -> dict:
    """Train :func:`small_cnn` on ``n`` synthetic maps per epoch and score it on real labelled maps.

    The synthetic maps are class-balanced; ``real`` is a load() spec or a WaferDataset (default: the
    dev maps).

    ``fresh_per_epoch``: every epoch draws new maps (seed + EPOCH_SEED_STRIDE × epoch); ``ema``: score
    an exponential moving average of the weights (decay per step; 0 = off); ``die_noise``: flip up to
    this share of each training map's dies (0 = off); ``tta``: also score the softmax averaged over
    the 8 rotations/flips of each real map (the headline figure). Returns macro-F1 (TTA and single
    view), per-class F1, the confusion matrix (rows real class), the predictions and the settings.
    Threads are the caller's (``torch.set_num_threads``).
    """
    from types import SimpleNamespace

    settings = dict(n=n, seed=seed, size=size, epochs=epochs, width=width, grid=grid, batch=batch, lr=lr,
                    fresh_per_epoch=fresh_per_epoch, ema=ema, die_noise=die_noise, tta=tta)
    for key in ("n", "epochs", "width", "grid", "batch"):
        if settings[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {settings[key]}")
    if n < batch:
        raise ConfigError(f"n ({n}) must be at least one batch ({batch})")
    if not 0.0 <= ema < 1.0 or not 0.0 <= die_noise <= 1.0:
        raise ConfigError("ema must be in [0, 1) and die_noise in [0, 1]")
    # after the settings are checked, so a bad option is the first error even where the data is missing
    real = _real_maps(real)
    args = SimpleNamespace(**settings)
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    rng = seed_everything(args.seed)
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
    x_real = to_input(real.maps, args.size)
    y_real = np.array([CLASSES.index(c) for c in real.labels])
    if progress:
        print(f"data: {len(syn)} synthetic, {len(real)} real maps, {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    model = small_cnn(len(CLASSES), args.width, args.grid)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)

    def batches(epoch: int):
        """Full batches only, of this epoch's maps (fresh and/or noisy from the second epoch on)."""
        nonlocal x_syn, y_syn
        if epoch > 0 and (args.fresh_per_epoch or args.die_noise > 0):
            x_syn, y_syn = training_maps(epoch)
        for idx in index_batches(rng.permutation(len(syn)), args.batch, min_size=args.batch):
            yield torch.from_numpy(encode(augment_dihedral(x_syn[idx], rng), "onehot3")), torch.from_numpy(y_syn[idx])

    def step(batch):
        xb, yb = batch
        return loss_fn(model(xb), yb), len(yb)

    # EMA: one network, and a running average of its weights from the first step on
    averaged = EMA(model, args.ema, from_start=False) if args.ema > 0 else None
    fit_loop(model, batches, step, epochs=args.epochs, optimizer=opt, ema=averaged, progress=progress,
             desc="realism: train on synthetic maps",
             schedule=one_cycle(opt, args.lr, args.epochs * (len(syn) // args.batch)))

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
    if not args.tta:
        prob = plain
    else:  # a wafer has no preferred orientation: average over the 8 symmetries of the square
        prob = sum(probabilities(dihedral(x_real, k, axes=(-2, -1))) for k in range(8)) / 8
    pred = prob.argmax(1)
    macro = f1_score(y_real, pred, labels=labels, average="macro")
    per_class = f1_score(y_real, pred, labels=labels, average=None)
    cm = confusion_matrix(y_real, pred, labels=labels)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"macro_f1": round(float(macro), 4), "macro_f1_single_view": round(float(macro_plain), 4),
              "cpu_seconds": round(cpu, 1),
              "per_class_f1": {c: round(float(f), 4) for c, f in zip(CLASSES, per_class)},
              "confusion": cm.tolist(), "predicted": [CLASSES[k] for k in pred], "classes": list(CLASSES), "args": settings,
              "report": classification_report(y_real, pred, labels=labels, target_names=CLASSES, digits=3),
              "seconds": round(wall, 1), "n_real": len(real)}
    return result


def realism_summary(result: dict) -> str:
    """Return the per-class report, the confusion matrix and the headline line of :func:`realism_check`."""
    lines = [result["report"], "confusion (rows real, cols predicted): " + " ".join(c[:6] for c in CLASSES)]
    lines += [f"{c:>10s} " + " ".join(f"{v:6d}" for v in row) for c, row in zip(CLASSES, result["confusion"])]
    single = "" if not result["args"]["tta"] else f" (8-fold dihedral average; single view {result['macro_f1_single_view']:.3f})"
    lines.append(f"macro-F1 on {result['n_real']} real maps (trained on synthetic only): {result['macro_f1']:.3f}"
                 f"{single}  [{result['seconds']:.0f}s wall, {result['cpu_seconds']:.0f}s CPU]")
    return "\n".join(lines)



RADIAL_BINS = np.linspace(0.0, 1.0001, 11)


def radial_profile(maps) -> np.ndarray:
    """Fail rate per tenth of the wafer radius (0 = centre, 9 = rim), pooled over the maps."""
    num, den = np.zeros(10), np.zeros(10)
    for m in maps:
        h, w = m.shape
        y, x = np.mgrid[:h, :w]
        r = np.hypot((y + 0.5 - h / 2) / (h / 2), (x + 0.5 - w / 2) / (w / 2))
        on = m > 0
        b = np.clip(np.digitize(r[on], RADIAL_BINS) - 1, 0, 9)
        np.add.at(num, b, m[on] == 2)
        np.add.at(den, b, 1)
    return num / np.maximum(den, 1)


def rim_rate(m: np.ndarray) -> float:
    """Fail rate of the outermost ring of dies."""
    on = m > 0
    ring = ndimage.distance_transform_cdt(np.pad(on, 1), metric="chessboard")[1:-1, 1:-1] == 1
    return float((m[ring] == 2).mean())


def neighbour_rate(maps) -> float:
    """P(die fails | its right-hand neighbour fails): how clustered the fails are."""
    both = first = 0
    for m in maps:
        a, b = m[:, :-1], m[:, 1:]
        ok = (a > 0) & (b > 0)
        both += np.count_nonzero((a == 2) & (b == 2) & ok)
        first += np.count_nonzero((a == 2) & ok)
    return both / max(first, 1)


def _ring(m: np.ndarray) -> np.ndarray:
    """0 for the outermost ring of dies, 1 for the next, ... (-1 off the wafer)."""
    return ndimage.distance_transform_cdt(np.pad(m > 0, 1), metric="chessboard")[1:-1, 1:-1] - 1


def cluster_stats(m: np.ndarray) -> tuple[float, float, float, float]:
    """Shape of a wafer's largest 8-connected fail cluster.

    (dies, axis ratio, share of its dies on the outer two rings, distance of its centroid from
    the wafer centre). The area and axis ratio use interior dies only (ring >= 2), so a
    fail-dense rim does not merge into one cluster.
    """
    from scipy import ndimage  # noqa: F401
    from skimage.measure import label, regionprops

    ring = _ring(m)
    inner = regionprops(label((m == 2) & (ring >= 2), connectivity=2))
    big = max(inner, key=lambda p: p.area) if inner else None
    area = float(big.area) if big is not None else 0.0
    ratio = big.axis_major_length / max(big.axis_minor_length, 1.0) if big is not None and big.area >= 3 else 0.0
    every = regionprops(label(m == 2, connectivity=2))
    if not every:
        return area, ratio, 0.0, 0.0
    whole = max(every, key=lambda p: p.area)
    on_rim = float((ring[tuple(whole.coords.T)] <= 1).mean())
    h, w = m.shape
    y, x = whole.centroid
    return area, float(ratio), on_rim, float(np.hypot((y + 0.5 - h / 2) / (h / 2), (x + 0.5 - w / 2) / (w / 2)))


def shape_table(real, syn) -> str:
    """Return the Markdown table comparing cluster shapes of real and synthetic maps per class."""
    lines = ["| class | largest interior cluster, dies: median (q10–q90) real / syn | its axis ratio (median) real / syn "
             "| largest cluster's share on the outer 2 rings (median) real / syn | its centre radius (median) real / syn |",
             "|---|---|---|---|---|"]
    for c in CLASSES:
        a, b = real.labels == c, syn.labels == c
        if not a.any() or not b.any() or c in ("Near-full", "Random"):
            continue
        r = np.array([cluster_stats(real.maps[i]) for i in np.flatnonzero(a)])
        s = np.array([cluster_stats(syn.maps[i]) for i in np.flatnonzero(b)])

        def q(x):
            return f"{np.median(x):.0f} ({np.quantile(x, 0.1):.0f}–{np.quantile(x, 0.9):.0f})"

        lines.append(f"| {c} | {q(r[:, 0])} / {q(s[:, 0])} | {np.median(r[:, 1]):.1f} / {np.median(s[:, 1]):.1f} "
                     f"| {np.median(r[:, 2]):.2f} / {np.median(s[:, 2]):.2f} | {np.median(r[:, 3]):.2f} / {np.median(s[:, 3]):.2f} |")
    return "\n".join(lines)


def class_table(real, syn) -> str:
    """Return the Markdown table comparing fail rates of real and synthetic maps per class."""
    rr, sr = real.fail_rates(), syn.fail_rates()
    lines = ["| class | n real | real fail rate mean / median / q10–q90 | synthetic mean / median / q10–q90 "
             "| rim fail real / syn (median) | P(f|nbr f) real / syn | rows×cols median real / syn |",
             "|---|---:|---|---|---|---|---|"]
    for c in CLASSES:
        a, b = real.labels == c, syn.labels == c
        if not a.any() or not b.any():
            continue
        ra, sa = rr[a], sr[b]

        def fmt(x):
            return f"{x.mean():.3f} / {np.median(x):.3f} / {np.quantile(x, 0.1):.3f}–{np.quantile(x, 0.9):.3f}"

        rim_r = np.median([rim_rate(real.maps[i]) for i in np.flatnonzero(a)])
        rim_s = np.median([rim_rate(syn.maps[i]) for i in np.flatnonzero(b)])
        nb_r = neighbour_rate([real.maps[i] for i in np.flatnonzero(a)])
        nb_s = neighbour_rate([syn.maps[i] for i in np.flatnonzero(b)])
        shr, shs = np.median(real.shapes[a], 0), np.median(syn.shapes[b], 0)
        lines.append(f"| {c} | {a.sum()} | {fmt(ra)} | {fmt(sa)} | {rim_r:.2f} / {rim_s:.2f} | {nb_r:.2f} / {nb_s:.2f} "
                     f"| {shr[0]:.0f}×{shr[1]:.0f} / {shs[0]:.0f}×{shs[1]:.0f} |")
    return "\n".join(lines)


def distribution_figure(real, syn, path: Path) -> None:
    """Draw the fail-rate distributions of real and synthetic maps per class to ``path``."""
    rr, sr = real.fail_rates(), syn.fail_rates()
    classes = [c for c in CLASSES if (real.labels == c).any()]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(classes), figsize=(2.1 * len(classes), 4.6))
    for j, c in enumerate(classes):
        a, b = real.labels == c, syn.labels == c
        ax = axes[0, j]
        hi = 1.0 if c in ("Near-full", "Random") else 0.45
        lo = 0.5 if c == "Near-full" else 0.0
        bins = np.linspace(lo, hi, 26)
        ax.hist(np.clip(rr[a], lo, hi), bins, density=True, alpha=0.55, color="tab:blue", label="real")
        ax.hist(np.clip(sr[b], lo, hi), bins, density=True, alpha=0.55, color="tab:orange", label="synthetic")
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("fail rate", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = axes[1, j]
        x = np.arange(10) / 10 + 0.05
        ax.plot(x, radial_profile([real.maps[i] for i in np.flatnonzero(a)]), "o-", ms=3, color="tab:blue")
        ax.plot(x, radial_profile([syn.maps[i] for i in np.flatnonzero(b)]), "s-", ms=3, color="tab:orange")
        ax.set_ylim(0, 1.0 if c in ("Near-full", "Random", "Center", "Edge-Ring", "Donut") else 0.4)
        ax.set_xlabel("radius (0 centre, 1 rim)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("density", fontsize=8)
    axes[1, 0].set_ylabel("fail rate by radius", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("Real WM-811K dev maps (blue) vs synthetic (orange): fail-rate distribution and radial profile",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def size_figure(real, syn, path: Path) -> None:
    """Draw the grid sizes of real and synthetic maps to ``path``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    for ax, k, name in ((axes[0], 0, "rows"), (axes[1], 1, "cols")):
        bins = np.arange(10, 90, 3)
        ax.hist(real.shapes[:, k], bins, density=True, alpha=0.55, color="tab:blue", label="real dev")
        ax.hist(syn.shapes[:, k], bins, density=True, alpha=0.55, color="tab:orange", label="synthetic")
        ax.set_xlabel(f"die grid {name}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def montage(real, syn, path: Path, per_class: int = 6, seed: int = 0) -> None:
    """Draw a montage of ``per_class`` real and synthetic maps of each class to ``path``."""
    rng = np.random.default_rng(seed)
    classes = [c for c in CLASSES if (real.labels == c).any()]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(classes), 2 * per_class + 1, figsize=(0.8 * (2 * per_class + 1), 0.85 * len(classes)),
                             gridspec_kw={"width_ratios": [1] * per_class + [0.25] + [1] * per_class})
    for r, c in enumerate(classes):
        for half, ds in enumerate((real, syn)):
            idx = np.flatnonzero(ds.labels == c)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False)
            for j in range(per_class):
                ax = axes[r, j + half * (per_class + 1)]
                ax.axis("off")
                if j < len(pick):
                    ax.imshow(render_map(ds.maps[pick[j]]), interpolation="nearest")
        axes[r, per_class].axis("off")
        axes[r, 0].set_title(c, fontsize=7, loc="left", pad=1)
    axes[0, 1].set_title("real", fontsize=8, pad=1)
    axes[0, per_class + 2].set_title("synthetic", fontsize=8, pad=1)
    fig.subplots_adjust(wspace=0.05, hspace=0.25, left=0.01, right=0.99, top=0.97, bottom=0.01)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def compare_to_real(real=None, n: int = 4500, seed: int = 0, img_dir: str | Path | None = None) -> str:
    """Synthetic ``generate(n, seed)`` vs the real labelled maps ``real`` (default the dev maps).

    Per-class fail rates, rim and neighbour statistics, grid sizes and cluster shapes as a Markdown
    table; with ``img_dir`` also synthetic_vs_real.png, synthetic_sizes.png and synthetic_montage.png.
    """
    import matplotlib

    matplotlib.use("Agg")
    real = _real_maps(real)
    syn = generate(n, seed=seed)
    if img_dir is not None:
        out = Path(img_dir)
        distribution_figure(real, syn, out / "synthetic_vs_real.png")
        size_figure(real, syn, out / "synthetic_sizes.png")
        montage(real, syn, out / "synthetic_montage.png")
    return class_table(real, syn) + "\n\n" + shape_table(real, syn)
