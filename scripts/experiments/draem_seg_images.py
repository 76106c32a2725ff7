"""Experiment (not a shipped detector): DRAEM's discriminative half on the Magnetic Tile set.

A small U-Net (4 levels, width 16) segments synthetic anomalies (the package's DRAEM Perlin-masked
foreign textures and CutPaste scars, ``texture_contrast.synthesis``) pasted into the normal training
canvases (128 px, aspect kept, reflect-padded; plus 2 relative-position channels), focal loss,
Adam one-cycle. Then the test split is scored: image AUROC (map max), pixel AUROC and max-in-mask
on the canvas (masks area-resized to the canvas, > 0.25). Numbers in docs/detection.md.

Run from the worktree root: ``PYTHONPATH=src python scripts/experiments/draem_seg_images.py --steps 600 --bs 8``
(first run builds /tmp/waferscope_canvas128.npz from ../shared/data/images/magnetic_tile).
"""

import os
import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from sklearn.metrics import roc_auc_score
from waferscope.models.detectors.texture_contrast.synthesis import draem_anomaly, scar_anomaly
from waferscope.models.detectors.common import gaussian_blur

torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=128)
p.add_argument("--steps", type=int, default=600)
p.add_argument("--bs", type=int, default=16)
p.add_argument("--width", type=int, default=16)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--coords", type=int, default=1)
p.add_argument("--scar", type=float, default=0.3)
p.add_argument("--pnormal", type=float, default=0.3)
p.add_argument("--sigma", type=float, default=2.0)
p.add_argument("--save", default="")
a = p.parse_args()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _canvas_cache import canvas_cache, per_class_auroc  # noqa: E402

d = canvas_cache(a.size)
xtr, vtr, btr = d["xtr"][:, 0], d["vtr"], d["btr"]
xte, vte, bte, masks, normal, labels = d["xte"][:, 0], d["vte"], d["bte"], d["masks"], d["normal"], d["labels"]
S = a.size


def coords(boxes):
    out = np.zeros((len(boxes), 2, S, S), np.float32)
    for i, (t, left, h, w) in enumerate(boxes):
        yy = (np.arange(S) - t + 0.5) / h * 2 - 1
        xx = (np.arange(S) - left + 0.5) / w * 2 - 1
        out[i, 0] = np.clip(yy, -1.5, 1.5)[:, None]
        out[i, 1] = np.clip(xx, -1.5, 1.5)[None, :]
    return out


ctr, cte = coords(btr), coords(bte)


def block(i, o):
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1),
        nn.BatchNorm2d(o),
        nn.ReLU(inplace=True),
        nn.Conv2d(o, o, 3, padding=1),
        nn.BatchNorm2d(o),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(s, cin, w):
        super().__init__()
        s.e1, s.e2, s.e3, s.e4 = block(cin, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)
        s.d3, s.d2, s.d1 = block(12 * w, 4 * w), block(6 * w, 2 * w), block(3 * w, w)
        s.out = nn.Conv2d(w, 1, 1)

    def forward(s, x):
        e1 = s.e1(x)
        e2 = s.e2(F.max_pool2d(e1, 2))
        e3 = s.e3(F.max_pool2d(e2, 2))
        e4 = s.e4(F.max_pool2d(e3, 2))
        def up(t):
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        d3 = s.d3(torch.cat([up(e4), e3], 1))
        d2 = s.d2(torch.cat([up(d3), e2], 1))
        d1 = s.d1(torch.cat([up(d2), e1], 1))
        return s.out(d1)


cin = 1 + 2 * a.coords
torch.manual_seed(0)
rng = np.random.default_rng(0)
net = UNet(cin, a.width)
opt = torch.optim.Adam(net.parameters(), lr=a.lr)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
others = [xtr[i] for i in range(len(xtr))]


def batch():
    idx = rng.integers(0, len(xtr), a.bs)
    X = np.empty((a.bs, cin, S, S), np.float32)
    Y = np.zeros((a.bs, 1, S, S), np.float32)
    V = np.empty((a.bs, 1, S, S), np.float32)
    for j, i in enumerate(idx):
        img, v = xtr[i], vtr[i]
        r = rng.random()
        if r < a.pnormal:
            m = np.zeros_like(v)
        elif r < a.pnormal + a.scar * (1 - a.pnormal):
            img, m = scar_anomaly(img, rng, v)
        else:
            img, m = draem_anomaly(img, [others[k] for k in rng.integers(0, len(others), 1)], rng, v)
        c = ctr[i]
        if rng.random() < 0.5:
            img, m, v, c = (
                img[:, ::-1],
                m[:, ::-1],
                v[:, ::-1],
                c[:, :, ::-1] * np.array([1, -1], np.float32)[:, None, None],
            )
        if rng.random() < 0.5:
            img, m, v, c = img[::-1], m[::-1], v[::-1], c[:, ::-1] * np.array([-1, 1], np.float32)[:, None, None]
        X[j, 0] = img
        if a.coords:
            X[j, 1:] = c
        Y[j, 0] = m
        V[j, 0] = v
    return torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(V)


t0 = time.time()
net.train()
for step in range(a.steps):
    X, Y, V = batch()
    logit = net(X)
    bce = F.binary_cross_entropy_with_logits(logit, Y, reduction="none")
    pt = torch.exp(-bce)
    focal = ((1 - pt) ** 2 * bce * V).sum() / V.sum()
    opt.zero_grad()
    focal.backward()
    opt.step()
    sched.step()
    if step % 50 == 0:
        print(step, round(float(focal.detach()), 4), round(time.time() - t0, 1), flush=True)
train_s = time.time() - t0
net.eval()
maps = []
with torch.inference_mode():
    for s in range(0, len(xte), 32):
        X = torch.from_numpy(xte[s : s + 32, None])
        if a.coords:
            X = torch.cat([X, torch.from_numpy(cte[s : s + 32])], 1)
        m = torch.sigmoid(net(X))[:, 0]
        if a.sigma > 0:
            m = gaussian_blur(m, a.sigma * S / 256)
        maps.append(m)
maps = torch.cat(maps).numpy()
if a.save:
    np.save(a.save, maps)


def report(maps, name):
    v = vte.astype(bool)
    y = ~normal
    sc = np.array([maps[i][v[i]].max() for i in range(len(maps))])
    iau = roc_auc_score(y, sc)
    pix = roc_auc_score(masks[v].ravel() > 0, maps[v].ravel())
    hits = [
        masks[i].flat[np.argmax(np.where(v[i], maps[i], -1e9))] > 0
        for i in range(len(maps))
        if not normal[i] and masks[i].any()
    ]
    per = per_class_auroc(sc, normal, labels)
    print(
        json.dumps(
            {
                "name": name,
                "image_auroc": round(iau, 4),
                "pixel_auroc": round(pix, 4),
                "max_in_mask": round(float(np.mean(hits)), 3),
                "per": per,
            }
        )
    )


report(maps, json.dumps(vars(a)) + f" train_s={train_s:.0f}")
