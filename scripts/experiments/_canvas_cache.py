"""The Magnetic Tile canvases (train/test, 128 px etc.) and canvas-resolution masks, cached in /tmp
for the experiment scripts beside this file."""

import os

import numpy as np
import torch
from torch.nn import functional as F


def canvas_cache(size):
    path = f"/tmp/waferscope_canvas{size}.npz"
    if not os.path.exists(path):
        from waferscope.evaluate.detection import load_image_set
        from waferscope.models.detectors.common import image_canvas

        train, test = load_image_set()
        ctr, cte = image_canvas(train, size, "image"), image_canvas(test, size, "image")
        masks = np.zeros((len(test), size, size), np.uint8)
        for i, (t, left, nh, nw) in enumerate(cte.boxes):
            m = test.masks[i] if test.masks is not None else None
            if m is not None:
                mm = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(nh, nw), mode="area")[0, 0]
                masks[i, t : t + nh, left : left + nw] = mm.numpy() > 0.25
        np.savez_compressed(
            path,
            xtr=ctr.x,
            vtr=ctr.valid,
            btr=np.array(ctr.boxes),
            xte=cte.x,
            vte=cte.valid,
            bte=np.array(cte.boxes),
            masks=masks,
            normal=test.is_normal,
            labels=np.asarray(test.labels).astype(str),
        )
    return np.load(path)


def per_class_auroc(scores, normal, labels):
    """Image AUROC of each defect class against all normal tiles (both experiment scripts report it)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for c in sorted(set(labels[~normal])):
        y = np.r_[np.zeros(normal.sum()), np.ones((labels == c).sum())]
        out[c] = round(roc_auc_score(y, np.r_[scores[normal], scores[labels == c]]), 3)
    return out


def synth_val(x, boxes, valid, size=128):
    """One synthetic anomalous copy of each held-out normal canvas (seeded 29): half DRAEM Perlin-masked
    foreign texture, half CutPaste scar, inside the image box; the padding re-reflected from the new box.

    The validation anomalies of the texture_padim rounds (third round on; the scripts beside this file).
    """
    from waferscope.models.detectors.common import _reflect_pad
    from waferscope.models.detectors.texture_contrast.synthesis import draem_anomaly, scar_anomaly

    rng = np.random.default_rng(29)
    xs, ms = [], []
    for i in range(len(x)):
        img, (t, left, h, w) = x[i, 0], boxes[i]
        others = [x[j, 0] for j in rng.choice(len(x), 3, replace=False)]
        aug, m = (draem_anomaly(img, others, rng, valid[i]) if i % 2 == 0 else scar_anomaly(img, rng, valid[i]))
        box = torch.from_numpy(np.ascontiguousarray(aug[t:t + h, left:left + w]))[None, None]
        xs.append(_reflect_pad(box, t, size - h - t, left, size - w - left)[0].numpy())
        ms.append(m)
    return np.stack(xs).astype(np.float32), np.stack(ms)
