"""Experiment (issue 29, fifth round): fine oriented line / ridge channels added to texture_padim's
filter bank, screened on the VALIDATION split only (no test labels are read).

Same validation split, fit and calibration as the fourth round (``texture_padim_val_round4.py``,
whose functions are reused: streaming per-cell Gaussians at stride 1 / grid 128, per-cell z-score
of 5-fold held-out distances, map smoothed with σ = 2 canvas px). Scored in one pass: the 133
held-out normals, the third round's anomalies (*val*), the fourth round's cracks / edge chips
(*val_edge*) and the same with faint cracks (*val_edge_faint*, 0.3–0.8 std darker, ~1 px wide).

Variants (``--variant``), each the 36 filter-bank channels plus:

  base      nothing (the default detector; reproduces the fourth round's ``z_g128``)
  ridge     per σ ∈ {0.7, 1}: the larger Hessian eigenvalue σ²·λ₊ — the oriented second derivative
            across a line, maximised over orientation: large where a thin *dark* line runs in any
            direction (2 channels)
  ridge_pm  per σ ∈ {0.7, 1, 1.5}: σ²·λ₊ and σ²·λ₋ (dark and bright lines; 6 channels)
  ridge_e   ``ridge`` plus each one's positive part averaged over 7 px (line energy; 4 channels)
  coh       ``ridge`` plus structure-tensor coherence ((μ₁−μ₂)/(μ₁+μ₂))² at derivative σ = 1,
            integration σ = 2 (how one-directional the local texture is; 3 channels)
  fine      no new kind: σ = 0.7 added to the bank's scales (48 channels)
  orient8   elongated line filters: the second derivative across a line of an anisotropic Gaussian
            (σ = 0.8 px across, 3 px along, zero-mean), 8 orientations 22.5° apart, each its own
            channel — integrates ~7 px *along* a crack, which a round σ = 1 filter does not; the
            per-position Gaussian keeps the streaks' own direction apart from a crack's (8 channels)
  orient_max  the same 8 responses maximised over orientation (1 channel)
  orient8_long  ``orient8`` with σ = 6 px along the line (integrates ~14 px of a crack)
  sep       a *second* per-cell Gaussian on the two ``ridge`` channels alone, calibrated the same
            way, its z map combined with the bank's: ``sep_mean`` (mean of the two z maps) and
            ``sep_max`` (their maximum) — in one 38-dimensional Mahalanobis distance a deviation of
            one channel is diluted by the 37 others' normal spread; apart, it is not
  sep_o8    the same with the 8 ``orient8`` channels as the second Gaussian (``sep_o8_mean`` /
            ``sep_o8_max``)

Every added channel gets the bank's 3×3 mean (its "locally aware" step) before the grid.

Run from the worktree root (one thread, ~2 GB):
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_val_round5.py --variant ridge``
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

from waferscope.models.detectors.common import gaussian_blur  # noqa: E402
from waferscope.models.detectors.texture_knn.torch_model import FilterBank, gaussian_kernels  # noqa: E402
from waferscope.models.detectors.texture_padim.anomaly_map import to_grid  # noqa: E402

S = r4.S


def hessian(x, sigma):
    """σ-normalised Gxx, Gyy, Gxy of (B, 1, S, S) canvases (reflect padding)."""
    g, d1, d2 = gaussian_kernels(sigma)
    d1, d2 = d1 * sigma, d2 * sigma * sigma
    sep = FilterBank._sep
    return sep(x, g, d2), sep(x, d2, g), sep(x, d1, d1)


def eig(a, b, c):
    """Eigenvalues (larger, smaller) of the symmetric 2×2 [[a, c], [c, b]]."""
    m, r = (a + b) / 2, torch.sqrt(((a - b) / 2) ** 2 + c ** 2)
    return m + r, m - r


def oriented_kernels(s_across=0.8, s_along=3.0, n=8):
    """(n, 1, k, k) zero-mean kernels: σ_across²·∂²/∂v² of an anisotropic Gaussian, v ⟂ the line."""
    r = int(np.ceil(3 * s_along))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    ks = []
    for t in np.arange(n) * np.pi / n:
        u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
        g = np.exp(-u ** 2 / (2 * s_along ** 2) - v ** 2 / (2 * s_across ** 2))
        k = (v ** 2 / s_across ** 2 - 1) * g / g.sum()
        ks.append(k - k.mean())
    return torch.from_numpy(np.stack(ks)[:, None].astype(np.float32))


def extra_channels(x, variant):
    out = []
    if variant in ("orient8", "orient_max", "orient8_long", "sep_o8"):
        k = oriented_kernels(s_along=6.0 if variant == "orient8_long" else 3.0)
        r = k.shape[-1] // 2
        o = F.conv2d(F.pad(x, (r,) * 4, mode="reflect"), k)
        out.append(o.amax(1, keepdim=True) if variant == "orient_max" else o)
    if variant in ("ridge", "ridge_e", "coh", "sep"):
        for s in (0.7, 1.0):
            lp, _ = eig(*hessian(x, s))
            out.append(lp)
            if variant == "ridge_e":
                out.append(F.avg_pool2d(F.pad(lp.clamp_min(0), (3,) * 4, mode="reflect"), 7, 1))
    if variant == "ridge_pm":
        for s in (0.7, 1.0, 1.5):
            out += list(eig(*hessian(x, s)))
    if variant == "coh":
        g, d1, _ = gaussian_kernels(1.0)
        gx, gy = FilterBank._sep(x, g, d1)[:, 0], FilterBank._sep(x, d1, g)[:, 0]
        jxx, jyy, jxy = (gaussian_blur(t, 2.0) for t in (gx * gx, gy * gy, gx * gy))
        m1, m2 = eig(jxx, jyy, jxy)
        out.append((((m1 - m2) / (m1 + m2 + 1e-6)) ** 2)[:, None])
    if not out:
        return None
    f = torch.cat(out, 1)
    return F.avg_pool2d(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3, 1)


def make_features(variant):
    sigmas = (0.7, 1.0, 2.0, 4.0) if variant == "fine" else (1.0, 2.0, 4.0)

    def features(x, boxes, stride, g):
        bank = FilterBank(sigmas, 7, stride).eval()
        with torch.no_grad():
            for s in range(0, len(x), 32):
                xb = torch.from_numpy(x[s:s + 32])
                bx = [tuple(b) for b in boxes[s:s + 32]]
                e = extra_channels(xb, variant)
                if variant in ("sep", "sep_o8"):  # the line channels alone (their own Gaussian)
                    yield s, to_grid(e, bx, 1, g)
                    continue
                f = to_grid(bank(xb), bx, stride, g)
                if e is not None:
                    f = torch.cat([f, to_grid(e, bx, 1, g)], 1)
                yield s, f
    return features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="base", choices=["base", "ridge", "ridge_pm", "ridge_e", "coh", "fine", "sep", "orient8", "orient_max", "orient8_long", "sep_o8"])
    variant = ap.parse_args().variant
    r4.features = make_features(variant)  # fit_and_score looks it up in its module
    d = r4.d
    perm = np.random.default_rng(0).permutation(len(d["xtr"]))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    btr = d["btr"]
    bval = [tuple(btr[i]) for i in val]
    xa, ma = r4.synth_val(d["xtr"][val], bval, d["vtr"][val])
    xe, me = r4.synth_edge(d["xtr"][val], bval, d["vtr"][val])
    r4.CRACK_DARK, r4.CRACK_R2 = (0.3, 0.8), 0.5  # the fourth round's --faint cracks (same seed, same walks)
    xf, mf = r4.synth_edge(d["xtr"][val], bval, d["vtr"][val])
    n = len(val)
    xv = np.concatenate([d["xtr"][val], xa, xe, xf])
    bv = np.concatenate([btr[val]] * 4)
    held, dv = r4.fit_and_score(d["xtr"][fitidx], btr[fitidx], xv, bv, 1, 128)
    z = (dv - held.mean(0)) / held.std(0).clamp_min(1e-6)
    maps = {variant: z}
    if variant in ("sep", "sep_o8"):
        r4.features = make_features("base")
        held, dv = r4.fit_and_score(d["xtr"][fitidx], btr[fitidx], xv, bv, 1, 128)
        zb = (dv - held.mean(0)) / held.std(0).clamp_min(1e-6)
        maps = {f"{variant}_lines_only": z, f"{variant}_mean": (z + zb) / 2, f"{variant}_max": torch.maximum(z, zb)}
    boxes, valid = bval * 2, np.concatenate([d["vtr"][val]] * 2)
    normal = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    good = ["good"] * n
    sets = {"val": (ma, ["draem", "scar"], 1), "val_edge": (me, ["crack", "chip"], 2),
            "val_edge_faint": (mf, ["crack", "chip"], 3)}
    for name, z in maps.items():
        for split, (m, kinds, k) in sets.items():
            labels = np.array(good + (kinds * n)[:n])
            report_masks = np.concatenate([np.zeros_like(m), m])
            r4.report(name, torch.cat([z[:n], z[k * n:(k + 1) * n]]), boxes, report_masks, valid, normal, labels,
                      2.0, split)


if __name__ == "__main__":
    main()
