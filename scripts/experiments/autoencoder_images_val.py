"""Experiment (issue 29, autoencoder on images): what the autoencoder needs to clear the pixel z-score baseline,
screened on a VALIDATION split (no test labels are read).

Today the image path squashes each tile to a 64 px RGB square, reconstructs it with MSE and scores the top 2 %
of the smoothed squared residual: 0.587 image AUROC on the magnetic tile test split, below the pixel z-score
baseline (0.698: per-image standardised, max |z| against the normal mean image). Texture autoencoders in the
literature (Bergmann et al., VISAPP 2019, "Improving unsupervised defect segmentation by applying structural
similarity to autoencoders"; MVTec AD, CVPR 2019) work on grey, standardised input and compare structure
(SSIM) rather than squared intensity; the baseline itself is a per-pixel z-score, i.e. the residual against
a mean image *scaled by each pixel's normal spread*. Variants (one network per canvas size, trained once):

  mse            grey aspect-kept canvas (``image_canvas``, per-image standardised), squared residual
  mse_cal        same, each pixel's residual as a z-score against held-out normals' residuals at that pixel
  ssim           1 − SSIM (Gaussian window σ = 1.5 px) between input and reconstruction
  ssim_cal       same, per-pixel z-score calibrated

Split: the texture_padim rounds' (``_canvas_cache``: perm seed 0; 533 fit, 133 held out + one synthetic
anomaly each). The fit part is split again (seed 1, 80/20): the network trains on 426, the per-pixel
calibration is measured on the other 107 (residuals of images the network never saw). Image score: map
maximum after smoothing σ = 4 px per 256 (texture_knn's), or mean of the top 2 % (the autoencoder's).

A reference row ``zscore`` is the pixel z-score baseline on the same split and canvas (|x − μ| / σ per
canvas pixel over the 533 fit normals).

Adoption rule (written 16:00 UTC before any result): the variant (canvas size × residual × score) with the
highest val image AUROC is the new image default if it beats ``zscore`` of the same canvas on val by ≥ 0.02
image AUROC; otherwise the autoencoder refuses images (it would be no better than the trivial baseline).
Among variants within 0.01 of the best, the cheaper (64 px before 128).

``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/autoencoder_images_val.py``
"""

import json
import os
import resource
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from waferscope.models.detectors.autoencoder.torch_model import ConvAutoencoder
from waferscope.models.detectors.common import fit_loop, gaussian_blur, masked_topk_mean

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _canvas_cache import canvas_cache, synth_val  # noqa: E402

torch.set_num_threads(1)


def ssim_map(x, y, sigma=1.5, c1=0.01 ** 2, c2=0.03 ** 2, data_range=None):
    """(N, S, S) → (N, S, S) local SSIM with a Gaussian window (Wang et al. 2004)."""
    L = data_range
    c1, c2 = c1 * L * L, c2 * L * L
    blur = lambda t: gaussian_blur(t, sigma)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def report(name, maps, valid, masks, normal, extra):
    v, mk = valid.astype(bool), masks > 0
    t = torch.from_numpy(maps)
    for sname, sc in (("max", np.array([maps[i][v[i]].max() for i in range(len(maps))])),
                      ("top2", masked_topk_mean(t, v, 0.02))):
        hits = [mk[i].flat[int(np.argmax(np.where(v[i], maps[i], -1e9)))] for i in range(len(maps))
                if not normal[i] and mk[i].any()]
        print(json.dumps({"variant": f"{name}_{sname}", "image_auroc": round(roc_auc_score(~normal, sc), 4),
                          "pixel_auroc": round(roc_auc_score(mk[v], maps[v]), 4),
                          "max_in_mask": round(float(np.mean(hits)), 3), **extra}), flush=True)


def main():
    d = canvas_cache(128)
    perm = np.random.default_rng(0).permutation(len(d["xtr"]))
    val, fitidx = np.sort(perm[: len(perm) // 5]), np.sort(perm[len(perm) // 5:])
    btr = d["btr"]
    xa, ma = synth_val(d["xtr"][val], [tuple(btr[i]) for i in val], d["vtr"][val])
    n = len(val)
    xv128 = np.concatenate([d["xtr"][val], xa])
    valid128 = np.concatenate([d["vtr"][val]] * 2)
    masks128 = np.concatenate([np.zeros_like(ma), ma])
    normal = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    p2 = np.random.default_rng(1).permutation(len(fitidx))
    cal_i, tr_i = np.sort(fitidx[p2[: len(p2) // 5]]), np.sort(fitidx[p2[len(p2) // 5:]])
    sizes = [int(a) for a in sys.argv[1:]] or [64, 128]
    for size in sizes:
        f = 128 // size
        down = (lambda a: F.avg_pool2d(torch.from_numpy(a), f).numpy()) if f > 1 else (lambda a: a)  # noqa: E731
        xtr, xcal, xv = down(d["xtr"][tr_i]), down(d["xtr"][cal_i]), down(xv128)
        valid = (F.avg_pool2d(torch.from_numpy(valid128).float()[:, None], f)[:, 0] > 0.5).numpy() if f > 1 else valid128
        masks = (F.avg_pool2d(torch.from_numpy(masks128).float()[:, None], f)[:, 0] > 0.25).numpy() if f > 1 else masks128
        vtr = (F.avg_pool2d(torch.from_numpy(d["vtr"][tr_i]).float()[:, None], f) > 0.5).float().numpy()
        xall = down(d["xtr"][fitidx])[:, 0]
        zm = np.abs(xv[:, 0] - xall.mean(0)) / (xall.std(0) + 1e-6)
        report(f"s{size}_zscore", zm, valid, masks, normal, {"size": size})
        torch.manual_seed(0)
        net = ConvAutoencoder(size, 1, 1, 32, 16)
        t0 = time.process_time()
        packed = np.concatenate([xtr, vtr], 1).astype(np.float32)

        def step(b):
            x, v = b[:, :1], b[:, 1:]
            return ((net(x) - x) ** 2 * v).sum() / v.sum().clamp_min(1)

        hist = fit_loop(list(net.parameters()), step, packed, epochs=30, batch_size=64, lr=2e-3, seed=0,
                        augment=False, weight_decay=1e-5, desc=f"ae {size}", progress=False, modules=[net])
        fit_s = time.process_time() - t0
        net.eval()
        with torch.no_grad():
            rec = lambda a: torch.cat([net(torch.from_numpy(a[s:s + 64])) for s in range(0, len(a), 64)])[:, 0]  # noqa: E731
            rv, rc = rec(xv), rec(xcal)
        xv_t, xc_t = torch.from_numpy(xv[:, 0]), torch.from_numpy(xcal[:, 0])
        sigma = 4.0 * size / 256
        rng = float(np.percentile(xtr, 99.5) - np.percentile(xtr, 0.5))
        for rname, fn in (("mse", lambda a, b: (a - b) ** 2),
                          ("ssim", lambda a, b: 1 - ssim_map(a, b, 1.5 * size / 128, data_range=rng))):
            mv, mc = fn(xv_t, rv), fn(xc_t, rc)
            extra = {"size": size, "fit_cpu_s": round(fit_s, 1), "final_loss": round(hist[-1], 4),
                     "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
            report(f"s{size}_{rname}", gaussian_blur(mv, sigma).numpy(), valid, masks, normal, extra)
            mu, sd = mc.mean(0), mc.std(0)
            sd = gaussian_blur(sd[None], 2 * sigma)[0].clamp_min(1e-6)  # 107 images: the per-pixel spread smoothed
            report(f"s{size}_{rname}_cal", gaussian_blur((mv - mu) / sd, sigma).numpy(), valid, masks, normal, extra)


if __name__ == "__main__":
    main()
