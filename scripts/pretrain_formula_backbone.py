"""Pre-train the formula-driven image backbone shipped with waferscope (no download, no real images).

ImageNet weights cannot be had offline, and the wafer backbone was trained on three-state wafer
maps, which say nothing about grey-level texture. Following formula-driven supervised learning
(FractalDB, Kataoka et al. 2020) and "Learning to see by looking at noise" (Baradad et al. 2021),
this script trains ``formula_resnet18`` (ResNet-18 at half width, per-image input standardisation)
on procedurally generated grey images only, made on the fly from a seeded generator:

- ``iso``: isotropic 1/f^β noise (Perlin/fractal-like clouds and roughness);
- ``streak``: 1/f^β noise whose energy is concentrated across one orientation (grinding / polishing
  streaks, brushed metal);
- ``grating``: narrow-band noise around one spatial frequency and orientation (quasi-periodic
  gratings, moiré);
- ``lines``: random thin line segments of one dominant orientation on a noisy background (scratches,
  hairlines);
- ``leaves``: dead leaves (occluding ellipses with a power-law size distribution and one dominant
  orientation; Lee, Mumford & Huang 2001; the best simple generator in Baradad et al.).

Each image may be mixed with a weaker image of another family, then randomly blurred, noised and
contrast-changed. Task: three classification heads on the globally pooled layer-4 features —
family (5), orientation (8 bins of 22.5°, ignored for the isotropic family) and scale (4 bins of the
family's scale parameter: β, frequency, line density, leaf size). Why a classification of generator
parameters rather than a contrastive (SimCLR/MoCo) objective: contrastive learning needs large batches
and long schedules (Chen et al. 2020), out of reach on 1–2 shared CPU cores in ~40 minutes, while the
parameter labels are exactly the low-level attributes (orientation, spatial frequency, roughness,
blob size) that make first layers Gabor-like and that a texture-anomaly detector has to describe.

Writes ``<out>/formula_resnet18.safetensors`` (float16, torchvision key names) and
``formula_resnet18.json`` (construction kwargs, the ``domain`` ``"formula"``, training config,
held-out accuracy per head, timings).

    python scripts/pretrain_formula_backbone.py --steps 1200 --batch-size 96 --threads 1   # the shipped weights (~30 min, one thread)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from waferscope.models.backbones import create_backbone
from waferscope.models.backbones.checkpoint import write_shipped_weights

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("iso", "streak", "grating", "lines", "leaves")
N_THETA, N_SCALE = 8, 4
IGNORE = -100


def _freq_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    fy = torch.fft.fftfreq(size)[:, None].expand(size, size)
    fx = torch.fft.fftfreq(size)[None, :].expand(size, size)
    return torch.sqrt(fx ** 2 + fy ** 2), torch.atan2(fy, fx)


def _angle_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest difference of two axial angles (period π)."""
    d = torch.remainder(a - b, math.pi)
    return torch.minimum(d, math.pi - d)


def _spectral(n: int, size: int, g: torch.Generator, amp_fn) -> torch.Tensor:
    f, phi = _freq_grid(size)
    noise = torch.complex(torch.randn(n, size, size, generator=g), torch.randn(n, size, size, generator=g))
    img = torch.fft.ifft2(noise * amp_fn(f.clamp_min(1.0 / size), phi)).real
    return img


def gen_iso(n, size, g):
    scale = torch.randint(0, N_SCALE, (n,), generator=g)
    beta = 0.6 + 0.5 * (scale + torch.rand(n, generator=g))  # β in [0.6, 2.6)
    img = _spectral(n, size, g, lambda f, phi: f[None] ** -beta[:, None, None])
    return img, torch.full((n,), IGNORE), scale


def gen_streak(n, size, g):
    theta_bin = torch.randint(0, N_THETA, (n,), generator=g)
    theta = (theta_bin + torch.rand(n, generator=g)) * (math.pi / N_THETA)
    scale = torch.randint(0, N_SCALE, (n,), generator=g)
    beta = 0.6 + 0.5 * (scale + torch.rand(n, generator=g))
    bw = 0.05 + 0.2 * torch.rand(n, generator=g)  # angular spread of the energy (rad)

    def amp(f, phi):
        # energy across the streaks: the spectrum's orientation is the streak's + 90°
        d = _angle_diff(phi[None], theta[:, None, None] + math.pi / 2)
        return f[None] ** -beta[:, None, None] * torch.exp(-d ** 2 / (2 * bw[:, None, None] ** 2))

    return _spectral(n, size, g, amp), theta_bin, scale


def gen_grating(n, size, g):
    theta_bin = torch.randint(0, N_THETA, (n,), generator=g)
    theta = (theta_bin + torch.rand(n, generator=g)) * (math.pi / N_THETA)
    scale = torch.randint(0, N_SCALE, (n,), generator=g)
    f0 = 0.04 * 2.0 ** (scale + torch.rand(n, generator=g))  # 0.04–0.64 → clipped below Nyquist
    f0 = f0.clamp(max=0.45)
    bw_f = f0 * (0.05 + 0.15 * torch.rand(n, generator=g))
    bw_a = 0.05 + 0.15 * torch.rand(n, generator=g)

    def amp(f, phi):
        d = _angle_diff(phi[None], theta[:, None, None] + math.pi / 2)
        return (torch.exp(-(f[None] - f0[:, None, None]) ** 2 / (2 * bw_f[:, None, None] ** 2))
                * torch.exp(-d ** 2 / (2 * bw_a[:, None, None] ** 2)))

    return _spectral(n, size, g, amp), theta_bin, scale


def _coords(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    return x, y


def gen_lines(n, size, g, k: int = 24):
    theta_bin = torch.randint(0, N_THETA, (n,), generator=g)
    theta = (theta_bin + torch.rand(n, generator=g)) * (math.pi / N_THETA)
    scale = torch.randint(0, N_SCALE, (n,), generator=g)
    count = (3 * 2.0 ** scale).long()  # 3, 6, 12, 24 segments
    x, y = _coords(size)
    cx = torch.rand(n, k, generator=g) * size
    cy = torch.rand(n, k, generator=g) * size
    ang = theta[:, None] + 0.15 * torch.randn(n, k, generator=g)
    half = size * (0.1 + 0.5 * torch.rand(n, k, generator=g))
    width = 0.5 + 1.5 * torch.rand(n, k, generator=g)
    sign = torch.where(torch.rand(n, k, generator=g) < 0.7, -1.0, 1.0)  # mostly dark lines
    active = (torch.arange(k)[None] < count[:, None]).float() * sign
    ux, uy = torch.cos(ang), torch.sin(ang)
    img = 0.3 * _spectral(n, size, g, lambda f, phi: f[None] ** -1.0) / size
    for i in range(int(count.max())):  # one segment per image at a time: (n, S, S) temporaries only
        sel = (active[:, i] != 0).nonzero().flatten()
        dx = x[None] - cx[sel, i, None, None]
        dy = y[None] - cy[sel, i, None, None]
        along = dx * ux[sel, i, None, None] + dy * uy[sel, i, None, None]
        across = -dx * uy[sel, i, None, None] + dy * ux[sel, i, None, None]
        prof = torch.exp(-across ** 2 / (2 * width[sel, i, None, None] ** 2)) * (along.abs() <= half[sel, i, None, None])
        img[sel] += active[sel, i, None, None] * prof
    return img, theta_bin, scale


def gen_leaves(n, size, g, k: int = 64):
    theta_bin = torch.randint(0, N_THETA, (n,), generator=g)
    theta = (theta_bin + torch.rand(n, generator=g)) * (math.pi / N_THETA)
    scale = torch.randint(0, N_SCALE, (n,), generator=g)
    r_max = size * 0.06 * 2.0 ** (scale.float() + torch.rand(n, generator=g))  # 6–100 % of the side
    r_min = 1.5
    # power-law radii ~ r^-3 between r_min and r_max (inverse-CDF sampling), the dead-leaves law
    u = torch.rand(n, k, generator=g)
    a, b = r_min ** -2, r_max[:, None] ** -2
    r = (a - u * (a - b)) ** -0.5
    aspect = (1.0 + 2.0 * torch.rand(n, k, generator=g)).sqrt()
    ang = theta[:, None] + 0.2 * torch.randn(n, k, generator=g)
    cx = torch.rand(n, k, generator=g) * size
    cy = torch.rand(n, k, generator=g) * size
    value = torch.rand(n, k, generator=g)
    x, y = _coords(size)
    ux, uy = torch.cos(ang), torch.sin(ang)
    # the background: a smooth iso noise field (dead leaves fill the image; what few pixels no leaf
    # covers should not be one flat colour)
    img = _standardise(_spectral(n, size, g, lambda f, phi: f[None] ** -2.0)) * 0.2 + 0.5
    for i in range(k):  # painted in order, each on top of the earlier ones
        dx = x[None] - cx[:, i, None, None]
        dy = y[None] - cy[:, i, None, None]
        along = (dx * ux[:, i, None, None] + dy * uy[:, i, None, None]) / (r[:, i, None, None] * aspect[:, i, None, None])
        across = (-dx * uy[:, i, None, None] + dy * ux[:, i, None, None]) * aspect[:, i, None, None] / r[:, i, None, None]
        img = torch.where(along ** 2 + across ** 2 <= 1.0, value[:, i, None, None], img)
    return img, theta_bin, scale


GENERATORS = (gen_iso, gen_streak, gen_grating, gen_lines, gen_leaves)


def _standardise(img: torch.Tensor) -> torch.Tensor:
    m = img.mean((1, 2), keepdim=True)
    s = img.std((1, 2), keepdim=True)
    return (img - m) / (s + 1e-6)


def _blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur in the Fourier domain (σ in px, 0 = none)."""
    f, _ = _freq_grid(img.shape[-1])
    h = torch.exp(-2 * math.pi ** 2 * sigma[:, None, None] ** 2 * f[None] ** 2)
    return torch.fft.ifft2(torch.fft.fft2(img) * h).real


def make_batch(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, size, size) grey images (the grey replicated to 3 channels, as detectors feed images) and
    (n, 3) labels: family, orientation bin (or IGNORE), scale bin."""
    fam = torch.randint(0, len(FAMILIES), (n,), generator=g)
    imgs = torch.empty(n, size, size)
    labels = torch.empty(n, 3, dtype=torch.long)
    for j, gen in enumerate(GENERATORS):
        sel = torch.nonzero(fam == j).flatten()
        if len(sel):
            img, th, sc = gen(len(sel), size, g)
            imgs[sel] = _standardise(img)
            labels[sel, 0], labels[sel, 1], labels[sel, 2] = j, th, sc
    # a weaker second texture under half of the images (the label stays the first one's)
    mix = torch.rand(n, generator=g) < 0.5
    if mix.any():
        other = torch.randint(0, len(FAMILIES), (1,), generator=g).item()
        m = int(mix.sum())
        img2, _, _ = GENERATORS[other](m, size, g)
        w = 0.1 + 0.3 * torch.rand(m, generator=g)
        imgs[mix] = imgs[mix] + w[:, None, None] * _standardise(img2)
    sigma = torch.where(torch.rand(n, generator=g) < 0.3, 1.2 * torch.rand(n, generator=g), torch.zeros(n))
    imgs = _blur(imgs, sigma)
    noise = 0.3 * torch.rand(n, generator=g)
    imgs = imgs + noise[:, None, None] * torch.randn(n, size, size, generator=g)
    # a monotone contrast change (gamma-like through a sigmoid) and random gain/offset: the network
    # standardises its input, so gain/offset only test that
    k = 0.5 + 1.5 * torch.rand(n, generator=g)
    imgs = torch.sigmoid(k[:, None, None] * _standardise(imgs))
    imgs = imgs * (0.2 + 0.8 * torch.rand(n, 1, 1, generator=g)) + 0.2 * torch.rand(n, 1, 1, generator=g)
    return imgs[:, None].expand(n, 3, size, size).contiguous(), labels


class Heads(nn.Module):
    """Three linear classifiers on the backbone's pooled layer-4 features."""

    def __init__(self, dim: int):
        super().__init__()
        self.family = nn.Linear(dim, len(FAMILIES))
        self.theta = nn.Linear(dim, N_THETA)
        self.scale = nn.Linear(dim, N_SCALE)

    def forward(self, z):
        return self.family(z), self.theta(z), self.scale(z)


def pooled(net, x):
    return torch.flatten(net.avgpool(net.forward_features(x)), 1)


def losses(net, heads, x, y):
    outs = heads(pooled(net, x))
    return [F.cross_entropy(o, y[:, i], ignore_index=IGNORE) for i, o in enumerate(outs)], outs


@torch.no_grad()
def evaluate(net, heads, held):
    net.eval()
    correct = np.zeros(3)
    total = np.zeros(3)
    for x, y in held:
        outs = heads(pooled(net, x))
        for i, o in enumerate(outs):
            ok = y[:, i] != IGNORE
            correct[i] += (o.argmax(1)[ok] == y[ok, i]).sum().item()
            total[i] += ok.sum().item()
    net.train()
    return {f"held_out_acc_{k}": round(float(c / t), 4) for k, c, t in zip(("family", "theta", "scale"), correct, total)}


def plot_filters(path: Path) -> None:
    """conv1 filters summed over the input channels (the filter a grey image replicated to 3 channels meets)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    nets = {"formula (shipped)": create_backbone("formula_resnet18", pretrained="formula"),
            "wafer (shipped)": create_backbone("wafer_resnet18", pretrained="wafer"),
            "random init": create_backbone("formula_resnet18")}
    fig, axes = plt.subplots(len(nets), 32, figsize=(16, 1.9))
    for r, (name, net) in enumerate(nets.items()):
        w = net.conv1.weight.detach().sum(1)
        for c in range(32):
            ax = axes[r, c]
            k = w[c] if c < len(w) else torch.zeros(7, 7)
            ax.imshow(k, cmap="gray", vmin=-k.abs().max(), vmax=k.abs().max())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.995, top=0.98, bottom=0.02, wspace=0.05, hspace=0.05)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=96)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "src/waferscope/weights")
    ap.add_argument("--samples", type=Path, default=None, help="write a PNG of generated examples and exit")
    ap.add_argument("--filters", type=Path, default=None,
                    help="write a PNG of the first-layer filters (as seen by grey input) of the shipped "
                         "formula and wafer weights and a random init, and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.samples:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        g = torch.Generator().manual_seed(args.seed)
        x, y = make_batch(40, 96, g)
        order = torch.argsort(y[:, 0], stable=True)
        fig, axes = plt.subplots(5, 8, figsize=(12, 7.8))
        for ax, i in zip(axes.flat, order.tolist()):
            ax.imshow(x[i, 0], cmap="gray")
            ax.set_title(f"{FAMILIES[y[i, 0]]} θ{y[i, 1].item() if y[i, 1] >= 0 else '-'} s{y[i, 2].item()}", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.samples, dpi=80)
        print(f"wrote {args.samples}")
        return

    if args.filters:
        plot_filters(args.filters)
        return

    net = create_backbone("formula_resnet18")
    heads = Heads(net.fc.in_features)
    params = list(net.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    g_held = torch.Generator().manual_seed(10_000 + args.seed)
    held = [make_batch(128, args.size, g_held) for _ in range(8)]  # 1,024 held-out images, own seed
    g = torch.Generator().manual_seed(args.seed)
    history = []
    t0 = time.perf_counter()
    t_gen = 0.0
    run_loss = None
    net.train()
    try:
        from tqdm import tqdm
        bar = tqdm(range(1, args.steps + 1), desc="pretrain formula_resnet18", mininterval=10, file=sys.stderr)
    except ImportError:  # pragma: no cover
        bar = range(1, args.steps + 1)
    for step in bar:
        tg = time.perf_counter()
        x, y = make_batch(args.batch_size, args.size, g)
        t_gen += time.perf_counter() - tg
        parts, _ = losses(net, heads, x, y)
        loss = sum(parts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            h = {"step": step, "train_loss_ema": round(run_loss, 4), "seconds": round(time.perf_counter() - t0, 1),
                 **evaluate(net, heads, held)}
            history.append(h)
            print(json.dumps(h), file=sys.stderr, flush=True)
    t_train = time.perf_counter() - t0

    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith("fc.")}  # the 1000-way fc was never trained: not shipped
    info = {
        "backbone": "formula_resnet18",
        "domain": "formula",
        "kwargs": {},
        "head": "none shipped (fc.* left at its initialisation; feature extraction never uses it)",
        "input": {"size": args.size, "channels": "grey replicated to 3", "normalisation": "per image, inside the network"},
        "training": {
            "data": f"procedural grey images made on the fly ({', '.join(FAMILIES)}), torch.Generator seed {args.seed}; "
                    f"held-out 1,024 images from seed {10_000 + args.seed}",
            "task": "cross-entropy: family (5) + orientation bin (8, not for iso) + scale bin (4)",
            "optimizer": f"AdamW lr={args.lr} weight_decay={args.weight_decay}, one-cycle schedule (10 % warm-up)",
            "steps": args.steps, "batch_size": args.batch_size, "images_seen": args.steps * args.batch_size,
            "seed": args.seed, "threads": args.threads,
            "seconds_train": round(t_train, 1), "seconds_generating_images": round(t_gen, 1), "history": history,
        },
        "metrics": {k: v for k, v in history[-1].items() if k.startswith("held_out")},
    }
    wpath, jpath = write_shipped_weights(state, args.out, "formula_resnet18", info,
                                         "scripts/pretrain_formula_backbone.py", metadata={"domain": "formula"})
    print(f"wrote {wpath} ({wpath.stat().st_size / 1e6:.1f} MB) and {jpath}", file=sys.stderr)


if __name__ == "__main__":
    main()
