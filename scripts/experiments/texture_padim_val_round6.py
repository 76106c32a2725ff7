"""Experiment (issue 29, sixth round): texture_padim's fine scales computed on a larger canvas and pooled
to the 128 grid, screened on a VALIDATION split whose anomalies are drawn at NATIVE resolution
(no test labels are read).

Split as in the third to fifth rounds: fit on 80 % of the 666 training normals (seeded), score the
other 133. Unlike those rounds, the synthetic anomalies are drawn on the held-out tiles' *native*
grey images (279–606 px for the cracked tiles of the set, so a crack a few native px wide is
sub-pixel on the 128 px canvas), and every canvas (128 and 256 px) is made from the native image by
the package's own ``image_canvas`` — normals and anomalies go through the same pipeline. Two
anomalous copies of each held-out normal per set (266 per set; seeded):

  nat_val    the third round's kinds at native resolution: DRAEM Perlin-masked foreign texture
             (even copies) or CutPaste scar (odd), in the native image's own standardised units
             (``texture_contrast.synthesis``, whose sizes are relative to the image)
  nat_crack  hairline cracks: a smooth random walk of 10–35 % of the tile's longer side (1 native px
             steps), pen 1–3 native px wide, anti-aliased, darkened by 0.5–2 × the tile's native std
             — from the defect type's description (thin dark lines across the ground surface)
  nat_chip   edge breaks: a half-disk of radius 2–6 % of the longer side on a random side of the tile,
             set to the tile's darkest (1st percentile) grey — a missing piece at the edge
  nat_band   broad bands of another grinding texture (``uneven``): a low-frequency Perlin region
             (8–50 % of the tile) whose fine detail is weakened or strengthened and brightness shifted

Metrics on the 128 canvas (masks area-resized to the box, > 0.25; for ``nat_crack`` any overlap
(> 0), else a 1–3 px crack vanishes from its own mask): image AUROC, pixel AUROC, max in mask.

Variants (``--variant``); the fit / calibration is the detector's (streaming per-cell Gaussians,
stride 1 / grid 128, per-cell z of 5-fold held-out distances, map σ = 2 canvas px):

  base             σ = 0.7, 1, 2, 4 on the 128 canvas (the package default; 48 channels)
  hr{S}_{pool}     σ = 2, 4 on the 128 canvas + the six derivatives and their local energies at
                   σ ∈ S on a 256 canvas (S = ``fine``: 0.7, 1 — half the 128 canvas's finest scales;
                   ``same``: 1.4, 2 — the same physical scales as 0.7, 1 at 128), resampled to a 256
                   relative grid and pooled 2×2 to the 128 grid: ``avg`` mean, ``max`` the signed
                   value of largest magnitude, ``energy`` √(mean of squares) (signless; order 0 by
                   mean). Energies (window 13 px at 256 ≈ 7 at 128) by mean. Still 48 channels.
  add_{pool}       base + the σ = 0.7, 1 (256 canvas) responses only, pooled (60 channels)
  large            base + the detector's ``large_sigmas=[8, 16]`` channels (brightness and log texture
                   energy smoothed at σ = 8, 16 px, relative to the image's level; 62 channels)

Adoption rule (written 13:05 UTC, before any result of this round), validation figures only,
against ``base`` of this script: a variant passes if on nat_crack max in mask >= base + 0.03 and
image AUROC >= base - 0.005; on nat_val image and pixel AUROC >= base - 0.005 and max in mask
>= base - 0.015; on nat_chip max in mask >= base - 0.015 and image AUROC >= base - 0.005; and its fit
costs <= 2x base's CPU time and <= 1.5x base's peak RSS. Among passing variants the highest nat_crack
max in mask; within 0.015 of it, the cheaper one. Edge variants (direction 2) pass with nat_chip max
in mask >= base + 0.03 and the other two sets within the same tolerances. Broad-band variants
(direction 3; rule added 13:22 UTC with the nat_band set, before its results) pass with nat_band
pixel AUROC >= base + 0.02 and image AUROC >= base - 0.005, the other three sets within the same
tolerances.

Run from the worktree root (one thread; the first run builds /tmp caches):
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_val_round6.py --variant base``
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from waferscope.models.detectors.common import image_canvas
from waferscope.models.detectors.texture_contrast.synthesis import draem_anomaly, scar_anomaly
from waferscope.models.detectors.texture_knn.torch_model import FilterBank
from waferscope.models.detectors.texture_padim.anomaly_map import from_grid, mahalanobis_maps, to_grid
from waferscope.models.detectors.texture_padim.features import LARGE_FINE_SIGMAS, large_scale_channels
from waferscope.models.detectors.texture_padim.gaussians import fold_moments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

torch.set_num_threads(1)
S, G = 128, 128
CACHE = "/tmp/waferscope_round6_val.npz"
SETS = ("nat_val", "nat_crack", "nat_chip", "nat_band")


class _Imgs:
    """The part of a Dataset that ``image_canvas`` reads (grey float images, 0–255 scale)."""

    kind, name = "image", "round6"

    def __init__(self, maps):
        self.maps = maps

    def __len__(self):
        return len(self.maps)


def grey(img):
    x = np.asarray(img, np.float32)
    return x.mean(2) if x.ndim == 3 else x


def resize(img, shape):
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def nat_general(g, others, rng, k):
    mu, sd = g.mean(), g.std() + 1e-3
    z = (g - mu) / sd
    if k % 2 == 0:
        aug, m = draem_anomaly(z, [(resize(o, g.shape) - o.mean()) / (o.std() + 1e-3) for o in others], rng)
    else:
        aug, m = scar_anomaly(z, rng)
    return aug * sd + mu, m


def stroke_mask(shape, pts, radius):
    """Anti-aliased coverage (0–1) of a polyline drawn with a round pen of ``radius`` px."""
    h, w = shape
    cov = np.zeros(shape, np.float32)
    for py, px in pts:
        y0, y1 = int(max(0, np.floor(py - radius - 1))), int(min(h, np.ceil(py + radius + 2)))
        x0, x1 = int(max(0, np.floor(px - radius - 1))), int(min(w, np.ceil(px + radius + 2)))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dist = np.sqrt((yy - py) ** 2 + (xx - px) ** 2)
        cov[y0:y1, x0:x1] = np.maximum(cov[y0:y1, x0:x1], np.clip(radius + 0.5 - dist, 0, 1))
    return cov


def nat_crack(g, rng):
    h, w = g.shape
    n = int(rng.uniform(0.10, 0.35) * max(h, w))
    py, px = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    ang = rng.uniform(0, 2 * np.pi)
    pts = []
    for _ in range(n):
        pts.append((py, px))
        ang += rng.normal(0, 0.08)
        py, px = np.clip(py + np.sin(ang), 0, h - 1), np.clip(px + np.cos(ang), 0, w - 1)
    cov = stroke_mask(g.shape, pts, rng.uniform(0.5, 1.5))
    out = g - rng.uniform(0.5, 2.0) * g.std() * cov
    return out, cov > 0


def nat_chip(g, rng):
    h, w = g.shape
    r = rng.uniform(0.02, 0.06) * max(h, w)
    side = int(rng.integers(4))
    cy, cx = ((0, rng.uniform(0, w)), (h - 1, rng.uniform(0, w)), (rng.uniform(0, h), 0), (rng.uniform(0, h), w - 1))[side]
    yy, xx = np.mgrid[:h, :w]
    cov = np.clip(r + 0.5 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0, 1).astype(np.float32)
    dark = np.percentile(g, 1)
    return g * (1 - cov) + dark * cov, cov > 0


def nat_band(g, rng):
    """A broad region (Perlin noise at 1–3 lattice cells per axis, 8–50 % of the tile) of another grinding
    texture: its fine detail (the image minus its blur at 2 % of the longer side) scaled by 0.4–0.7 or
    1.4–2, and its brightness shifted by ±0.2–0.8 × the tile's std; soft boundary."""
    from scipy.ndimage import gaussian_filter

    from waferscope.models.detectors.texture_contrast.synthesis import perlin

    h, w = g.shape
    for _ in range(50):
        noise = perlin((h, w), (int(rng.integers(1, 4)), int(rng.integers(1, 4))), rng)
        thr = rng.uniform(0.0, 0.3)
        m = noise > thr
        if 0.08 <= m.mean() <= 0.5:
            break
    soft = np.clip((noise - thr) / 0.1, 0, 1).astype(np.float32)
    blur = gaussian_filter(g, 0.02 * max(h, w), mode="reflect")
    factor = rng.uniform(0.4, 0.7) if rng.random() < 0.5 else rng.uniform(1.4, 2.0)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.8) * g.std()
    new = blur + factor * (g - blur) + shift
    return g * (1 - soft) + new * soft, m


def canvas_masks(masks, boxes, thr):
    out = np.zeros((len(masks), S, S), bool)
    for i, (t, left, nh, nw) in enumerate(boxes):
        mm = F.interpolate(torch.from_numpy(masks[i].astype(np.float32))[None, None], size=(nh, nw), mode="area")[0, 0]
        out[i, t:t + nh, left:left + nw] = mm.numpy() > thr
    return out


def native_sets(greys, val, seed0=61):
    """The four anomaly sets drawn at native resolution on the held-out normals ``val``, two per image.

    ``{name: (images, masks)}`` for nat_val, nat_crack, nat_chip, nat_band, seeded ``seed0`` … ``seed0 + 3``
    (61: this round's draw; the later screens reuse it, and draw afresh with another ``seed0``).
    """
    out = {}
    for name, seed in zip(("nat_val", "nat_crack", "nat_chip", "nat_band"), range(seed0, seed0 + 4)):
        rng = np.random.default_rng(seed)
        augs, ms = [], []
        for _ in range(2):
            for i in val:
                g = greys[i]
                if name == "nat_val":
                    others = [greys[j] for j in rng.choice(val, 3, replace=False)]
                    aug, m = nat_general(g, others, rng, len(ms))
                elif name == "nat_crack":
                    aug, m = nat_crack(g, rng)
                elif name == "nat_band":
                    aug, m = nat_band(g, rng)
                else:
                    aug, m = nat_chip(g, rng)
                augs.append(aug)
                ms.append(m)
        out[name] = (augs, ms)
    return out


def build():
    """Canvases (128 and 256) of the fit normals, held-out normals and the three native anomaly sets."""
    from waferscope.evaluate.detection import load_image_set

    train, _ = load_image_set()
    perm = np.random.default_rng(0).permutation(len(train))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    greys = [grey(m) for m in train.maps]
    imgs = [greys[i] for i in fitidx] + [greys[i] for i in val]
    masks_by_set = {}
    for name, (augs, ms) in native_sets(greys, val).items():
        imgs += [a.astype(np.float32) for a in augs]
        masks_by_set[name] = ms
    out = {"nfit": len(fitidx), "nval": len(val)}
    for size in (128, 256):
        c = image_canvas(_Imgs(imgs), size, "image")
        out[f"x{size}"], out[f"b{size}"] = c.x, np.array(c.boxes)
        if size == 128:
            out["valid"] = c.valid
    b = out["b128"]
    off = len(fitidx) + len(val)
    for j, (name, ms) in enumerate(masks_by_set.items()):
        bb = [tuple(x) for x in b[off + j * len(ms): off + (j + 1) * len(ms)]]
        out[f"m_{name}"] = canvas_masks(ms, bb, 0.0 if name == "nat_crack" else 0.25)
    np.savez(CACHE, **out)


def pool2(r, how):
    """(B, C, 2G, 2G) → (B, C, G, G)."""
    if how == "avg":
        return F.avg_pool2d(r, 2)
    if how == "energy":
        return F.avg_pool2d(r * r, 2).sqrt()
    mx, mn = F.max_pool2d(r, 2), -F.max_pool2d(-r, 2)
    return torch.where(mx.abs() >= mn.abs(), mx, mn)


def hr_channels(x256, boxes256, sigmas, pool, energy=True):
    """Derivative responses (and local energies) at ``sigmas`` on the 256 canvas, on the 128 relative grid."""
    bank = FilterBank(sigmas, 0, 1)
    r = bank.responses(x256)
    parts = []
    rg = to_grid(r, boxes256, 1, 2 * G)
    if pool == "energy":  # the order-0 response (smoothed grey level) is pooled by its mean
        order0 = torch.zeros(rg.shape[1], dtype=torch.bool)
        order0[::6] = True
        parts.append(torch.where(order0[None, :, None, None], F.avg_pool2d(rg, 2), pool2(rg, "energy")))
    else:
        parts.append(pool2(rg, pool))
    if energy:
        # the 13 × 13 mean as two 1-D means (the same numbers, ~6× fewer operations)
        e = F.avg_pool2d(F.pad(r.abs(), (6,) * 4, mode="reflect"), (13, 1), 1)
        e = F.avg_pool2d(e, (1, 13), 1)
        parts.append(F.avg_pool2d(to_grid(e, boxes256, 1, 2 * G), 2))
    f = torch.cat(parts, 1)
    return F.avg_pool2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3, 1)  # the bank's "locally aware" step


def make_features(variant, d):
    x128, x256, b128, b256 = d["x128"], d["x256"], d["b128"], d["b256"]
    if variant == "base":
        coarse, hr = (0.7, 1.0, 2.0, 4.0), None
    elif variant.startswith("hr"):
        scales, pool = variant[2:].split("_")
        coarse, hr = (2.0, 4.0), ((0.7, 1.0) if scales == "fine" else (1.4, 2.0), pool, True)
    elif variant == "large":
        coarse, hr = (0.7, 1.0, 2.0, 4.0), "large"
    elif variant.startswith("add_"):
        coarse, hr = (0.7, 1.0, 2.0, 4.0), ((0.7, 1.0), variant[4:], False)
    else:
        raise SystemExit(f"unknown variant {variant}")
    bank = FilterBank(coarse, 7, 1).eval()

    def features(index, bs=16):
        with torch.no_grad():
            for s in range(0, len(index), bs):
                idx = index[s:s + bs]
                f = to_grid(bank(torch.from_numpy(x128[idx])), [tuple(b) for b in b128[idx]], 1, G)
                if hr == "large":
                    xb = torch.from_numpy(x128[idx])
                    bx = [tuple(b) for b in b128[idx]]
                    f = torch.cat([f, to_grid(large_scale_channels(xb, bx, LARGE_FINE_SIGMAS, (8.0, 16.0)), bx, 1, G)], 1)
                elif hr is not None:
                    h = hr_channels(torch.from_numpy(x256[idx]), [tuple(b) for b in b256[idx]], *hr)
                    f = torch.cat([f, h], 1)
                yield s, f
    return features


def fit_and_score(features, fitidx, validx):
    n = len(fitidx)
    folds = np.array_split(np.random.default_rng(0).permutation(n), 5)
    fold_of = np.empty(n, np.int64)
    for j, f in enumerate(folds):
        fold_of[f] = j
    mom = fold_moments(((np.arange(s, s + len(f)), f) for s, f in features(fitidx)), fold_of, len(folds))
    total = sum(mom[1:], mom[0])
    cm, cs = total.channel_stats()
    cs = cs.clamp_min(1e-6)
    std = lambda f: (f - cm[None, :, None, None]) / cs[None, :, None, None]  # noqa: E731
    held = torch.empty(n, G, G)
    for j, fold in enumerate(folds):
        gauss = (total - mom[j]).gaussians(cm, cs, 0.01)
        mom[j] = None
        fold = np.sort(fold)
        for s, f in features(fitidx[fold]):
            held[fold[s:s + len(f)]] = mahalanobis_maps(std(f), *gauss).sqrt()
    gauss = total.gaussians(cm, cs, 0.01)
    t_fit = time.process_time()
    dv = torch.cat([mahalanobis_maps(std(f), *gauss).sqrt() for _, f in features(validx)])
    return held, dv, t_fit, int(cm.numel())


def report(variant, split, cell, boxes, masks, valid, normal, extra):
    maps = from_grid(cell, boxes, S, 2.0).numpy()
    v, m = valid.astype(bool), masks
    sc = np.array([maps[i][v[i]].max() for i in range(len(maps))])
    hit, edge = [], []
    for i in np.flatnonzero(~normal):
        if not m[i].any():
            continue
        am = np.argmax(np.where(v[i], maps[i], -1e9))
        hit.append(m[i].flat[am])
        t, left, h, w = boxes[i]
        band = np.zeros((S, S), bool)
        band[t:t + h, left:left + w] = True
        band[t + 3:t + h - 3, left + 3:left + w - 3] = False
        if not (m[i] & band).any():
            edge.append(band.flat[am])
    row = {"split": split, "variant": variant, "image_auroc": round(roc_auc_score(~normal, sc), 4),
           "pixel_auroc": round(roc_auc_score(m[v], maps[v]), 4), "max_in_mask": round(float(np.mean(hit)), 3),
           "n_anomalous_with_mask": len(hit), "max_at_edge": round(float(np.mean(edge)), 3) if edge else None}
    row.update(extra)
    print(json.dumps(row), flush=True)


def side_background(z, band=4, window=0):
    """z minus, in the outer ``band`` cells of each side, the positive part of the median of z along that
    side (``window`` 0: the whole side; else a running median of ``window`` cells): a normal tile whose
    rim deviates along a whole side loses it, a chip (local along the side) keeps its peak."""
    out = z.clone()
    g = z.shape[-1]

    def bg(strip):  # strip (N, band, L): median along L per depth row
        if window <= 0:
            return strip.median(-1, keepdim=True).values.expand_as(strip)
        r = window // 2
        p = F.pad(strip, (r, r), mode="reflect")
        return p.unfold(-1, window, 1).median(-1).values

    sides = [(slice(None), slice(0, band), slice(None)), (slice(None), slice(g - band, g), slice(None))]
    for sl in sides:  # top, bottom: strips run along columns
        out[sl] = z[sl] - bg(z[sl]).clamp_min(0)
    zt, ot = z.transpose(1, 2), out.transpose(1, 2)
    for sl in sides:  # left, right (corners get both, the larger subtraction wins)
        ot[sl] = torch.minimum(ot[sl], zt[sl] - bg(zt[sl]).clamp_min(0))
    return out


def edge_variants(held, dv):
    """Map-level variants of direction 2 from the same distances (no refit)."""
    loc, scale = held.mean(0), held.std(0).clamp_min(1e-6)
    z = (dv - loc) / scale
    med, q99 = held.quantile(0.5, dim=0), held.quantile(0.99, dim=0)
    return {"zq": (dv - med) / (q99 - med).clamp_min(1e-6),
            "side_med": side_background(z, 4, 0), "side_med31": side_background(z, 4, 31),
            "side_med_b8": side_background(z, 8, 0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="base")
    ap.add_argument("--edge", action="store_true", help="also the map-level edge variants of the variant's distances")
    args = ap.parse_args()
    variant = args.variant
    if not os.path.exists(CACHE):
        t0 = time.time()
        build()
        print(f"built {CACHE} in {time.time() - t0:.0f} s", flush=True)
    d = dict(np.load(CACHE))
    nfit, nval = int(d["nfit"]), int(d["nval"])
    fitidx = np.arange(nfit)
    validx = np.arange(nfit, len(d["x128"]))
    features = make_features(variant, d)
    w0, c0 = time.time(), time.process_time()
    held, dv, t_fit, _ = fit_and_score(features, fitidx, validx)
    z = (dv - held.mean(0)) / held.std(0).clamp_min(1e-6)
    nimg = len(validx)
    cost = {"fit_cpu_s": round(t_fit - c0, 1), "score_cpu_s": round(time.process_time() - t_fit, 1),
            "score_images_per_cpu_s": round(nimg / max(1e-9, time.process_time() - t_fit), 1),
            "wall_s": round(time.time() - w0, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            "load": os.getloadavg()[0], "channels": next(features(fitidx[:1]))[1].shape[1]}
    boxes_all = [tuple(b) for b in d["b128"][nfit:]]
    valid_all = d["valid"][nfit:]
    na = 2 * nval
    maps = {variant: z}
    if args.edge:
        maps.update({f"{variant}+{k}": v for k, v in edge_variants(held, dv).items()})
    for vname, zz in maps.items():
        for j, name in enumerate(SETS):
            sl = np.r_[np.arange(nval), nval + j * na + np.arange(na)]
            masks = np.concatenate([np.zeros((nval, S, S), bool), d[f"m_{name}"]])
            normal = np.r_[np.ones(nval, bool), np.zeros(na, bool)]
            report(vname, name, zz[sl], [boxes_all[i] for i in sl], masks, valid_all[sl], normal, cost)


if __name__ == "__main__":
    main()
