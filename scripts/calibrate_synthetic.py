#!/usr/bin/env python
"""Compare synthetic wafer maps with real ones: per-class fail rates, radial fail profiles, rim
statistics, grid sizes, and a montage of real vs synthetic examples per class.

    python scripts/calibrate_synthetic.py                  # dev maps vs generate(4500, seed=0)
    python scripts/calibrate_synthetic.py --n 9000 --out-md /tmp/table.md

Writes docs/img/synthetic_vs_real.png (distributions), docs/img/synthetic_montage.png (examples)
and prints a Markdown table (also written to --out-md if given) for docs/synthetic.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from waferscope.data import load  # noqa: E402
from waferscope.data.classes import CLASSES  # noqa: E402
from waferscope.data.render import render_map  # noqa: E402
from waferscope.data.synthetic import generate  # noqa: E402
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)
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
    """Shape of a wafer's largest 8-connected fail cluster: (dies, axis ratio, share of its dies on
    the outer two rings, distance of its centroid from the wafer centre). The area and axis ratio
    use interior dies only (ring >= 2), so a fail-dense rim does not merge into one cluster."""
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
    rr, sr = real.fail_rates(), syn.fail_rates()
    classes = [c for c in CLASSES if (real.labels == c).any()]
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
    rng = np.random.default_rng(seed)
    classes = [c for c in CLASSES if (real.labels == c).any()]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", default=DEV)
    ap.add_argument("--n", type=int, default=4500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--img-dir", default="docs/img")
    ap.add_argument("--out-md", default=None)
    args = ap.parse_args(argv)
    real = load(args.real)
    syn = generate(args.n, seed=args.seed)
    out = Path(args.img_dir)
    distribution_figure(real, syn, out / "synthetic_vs_real.png")
    size_figure(real, syn, out / "synthetic_sizes.png")
    montage(real, syn, out / "synthetic_montage.png")
    table = class_table(real, syn) + "\n\n" + shape_table(real, syn)
    print(table)
    if args.out_md:
        Path(args.out_md).write_text(table + "\n")
    print(f"wrote {out}/synthetic_vs_real.png, synthetic_sizes.png, synthetic_montage.png")


if __name__ == "__main__":
    main()
