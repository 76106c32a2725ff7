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
