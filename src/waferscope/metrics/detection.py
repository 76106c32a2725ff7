"""Anomaly-detection metrics and thresholds.

Image level (scikit-learn): AUROC, AUPR (average precision; anomalous = positive class), and
precision/recall/F1 at a threshold — by default the one that maximises F1 on the data scored.

Pixel level, where ground-truth masks exist: pixel AUROC and AUPRO, the area under the
per-region-overlap curve up to a false-positive rate of 0.3, divided by 0.3 (Bergmann et al.,
"The MVTec Anomaly Detection Dataset", IJCV 2021). For a threshold t, PRO(t) is the mean over every
connected defect region (8-connectivity, ``skimage.measure.label``) of the fraction of that region's
pixels scoring ≥ t; FPR(t) is the fraction of defect-free pixels scoring ≥ t. For wafer maps only
pixels with a die count: off-wafer pixels are trivially normal and would inflate both metrics.
Samples whose mask is missing count as defect-free when they are labelled normal and are left out
of the pixel metrics otherwise.

Thresholds: :func:`threshold_best_f1` (needs labelled anomalies), :func:`threshold_quantile`
(normal scores only) and :func:`threshold_kfold_mean_of_max` (the mean over K folds of the maximum
score on held-out normals, each fold's detector fitted on the other normals).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from waferscope.errors import DataError

__all__ = ["image_metrics", "best_f1", "prf_at", "pixel_auroc", "aupro", "pixel_metrics", "binned_pixel_metrics",
           "threshold_best_f1", "threshold_quantile", "threshold_kfold_mean_of_max", "evaluate_detection",
           "detection_targets"]


def detection_targets(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(index of labelled samples, y) with y = 1 for anomalous (labelled, not none/good), 0 for normal."""
    labelled = np.flatnonzero(dataset.is_labelled)
    y = (~dataset.is_normal[labelled]).astype(np.int64)
    return labelled, y


def prf_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 when ``score >= threshold`` means anomalous."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    pred = (np.asarray(scores) >= threshold).astype(np.int64)
    return {"precision": float(precision_score(y, pred, zero_division=0)),
            "recall": float(recall_score(y, pred, zero_division=0)),
            "f1": float(f1_score(y, pred, zero_division=0))}


def best_f1(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Return the threshold maximising F1 (``score >= threshold`` → anomalous) and its precision/recall/F1."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    i = int(np.argmax(f1))
    return {"threshold": float(thresholds[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "f1": float(f1[i])}


def image_metrics(y: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Return image AUROC and AUPR (and precision, recall and F1 at ``threshold`` when given)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise DataError("image metrics need both normal and anomalous labelled samples "
                        f"(found only {'anomalous' if y.size and y[0] else 'normal'} ones)")
    out = {"image_auroc": float(roc_auc_score(y, scores)), "image_aupr": float(average_precision_score(y, scores))}
    if threshold is None:
        out.update(best_f1(y, scores))
    else:
        out.update(prf_at(y, scores, threshold), threshold=float(threshold))
    return out


def pixel_auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Return the pixel-level AUROC of flattened scores against the ground truth."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth.astype(np.int64), scores))


def aupro(maps: list[np.ndarray], masks: list[np.ndarray], valid: list[np.ndarray] | None = None,
          max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``max_fpr`` (see the module docstring).

    Computed exactly from one sort of all pixel scores: walking thresholds from high to low, each
    defect-free pixel adds 1/N_normal to the FPR and each pixel of region r adds 1/(|r|·R) to the PRO.
    """
    from skimage.measure import label

    scores, region_ids, pixel_region_size = [], [], []
    n_regions = 0
    for i, (amap, mask) in enumerate(zip(maps, masks)):
        keep = np.ones(mask.shape, bool) if valid is None else valid[i]
        lab = label(mask.astype(bool), connectivity=2)[keep]  # regions counted over valid pixels only
        sizes = np.bincount(lab, minlength=int(lab.max(initial=0)) + 1)
        present = np.flatnonzero(sizes[1:]) + 1
        remap = np.zeros(len(sizes), np.int64)  # global region id per local label; 0 = defect-free
        remap[present] = np.arange(len(present)) + n_regions + 1
        n_regions += len(present)
        region_ids.append(remap[lab])
        pixel_region_size.append(sizes[lab])
        scores.append(amap[keep].astype(np.float64))
    if n_regions == 0:
        raise DataError("AUPRO needs at least one defect region in the masks")
    s = np.concatenate(scores)
    rid = np.concatenate(region_ids)
    size_of_pixel = np.concatenate(pixel_region_size).astype(np.float64)
    normal = rid == 0
    n_normal = int(normal.sum())
    if n_normal == 0:
        raise DataError("AUPRO needs defect-free pixels")
    d_fpr = np.where(normal, 1.0 / n_normal, 0.0)
    d_pro = np.where(normal, 0.0, 1.0 / (np.maximum(size_of_pixel, 1) * n_regions))
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    fpr = np.cumsum(d_fpr[order])
    pro = np.cumsum(d_pro[order])
    # One point per distinct threshold: the last pixel of each run of equal scores.
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    cut = np.searchsorted(fpr, max_fpr, side="right")
    f, p = fpr[:cut], pro[:cut]
    if cut < len(fpr):  # interpolate the PRO value at exactly max_fpr
        f0, f1, p0, p1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        p_end = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0) if f1 > f0 else p1
        f, p = np.r_[f, max_fpr], np.r_[p, p_end]
    return float(np.trapezoid(p, f) / max_fpr)


# Above this many scored pixels pixel_metrics switches from the exact computation (one float64 sort
# of every pixel: ~40 bytes a pixel, 5.7 GB and minutes for a few hundred 300-px images) to the
# binned one (memory: the bins plus one map at a time).
EXACT_PIXEL_LIMIT = 4_000_000
PIXEL_BINS = 16384


def _pixel_items(maps, dataset):
    """(map, mask, valid) per sample usable for pixel metrics, lazily (one map at a time)."""
    normal = dataset.is_normal
    for i, mask in enumerate(dataset.masks):
        if mask is None:
            if not normal[i]:
                continue
            mask = np.zeros(dataset.maps[i].shape[:2], bool)
        if maps[i].shape != mask.shape:
            raise DataError(f"sample {i}: anomaly map {maps[i].shape} and mask {mask.shape} differ in size")
        valid = dataset.maps[i] != 0 if dataset.kind == "wafer" else None
        yield maps[i], mask, valid


def _bin_edges(items, n_bins: int, sample_per_map: int = 4096) -> np.ndarray:
    """Bin edges at quantiles of a deterministic subsample of the valid pixels of every map.

    So each bin holds about the same share of pixels (linear bins would put most normal pixels
    in a few bins when the scores have a long tail).
    """
    sample = []
    for amap, _, valid in items:
        v = np.asarray(amap if valid is None else amap[valid]).ravel()
        if v.size == 0:
            continue
        step = max(1, v.size // sample_per_map)
        sample.append(np.array(v[::step], dtype=np.float64))  # a copy: a view would keep every map alive
        sample.append(np.array([v.min(), v.max()], dtype=np.float64))
    s = np.concatenate(sample)
    edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    return edges


def binned_pixel_metrics(items_fn, n_bins: int = PIXEL_BINS, max_fpr: float = 0.3) -> dict[str, float]:
    """Pixel AUROC and AUPRO in bounded memory, from per-bin counts instead of one sort of every pixel.

    ``items_fn()`` returns a fresh iterable of ``(map, mask, valid-or-None)`` (it is walked twice:
    once for the bin edges, once to count). Bins are quantile bins of a subsample of the scores, so
    every bin holds ~1/n_bins of the pixels; pixels in one bin count as tied, as sklearn counts equal
    scores (AUROC: half credit; the PRO/FPR curve: a straight segment). With 16,384 bins both
    figures are within ~1e-4 of the exact ones on real maps (tests/test_detection_metrics.py).
    Memory: four float64 histograms and one map's temporaries; the AUPRO weights each defect pixel by
    1/(|region|·R), so the PRO curve needs one weighted histogram, not one per region.
    """
    from skimage.measure import label

    edges = _bin_edges(items_fn(), n_bins)
    nb = len(edges) + 1
    neg = np.zeros(nb)            # defect-free pixels per bin
    pos = np.zeros(nb)            # defect pixels per bin
    pro_w = np.zeros(nb)          # Σ 1/|region| of defect pixels per bin (÷ R at the end)
    n_regions = 0
    for amap, mask, valid in items_fn():
        keep = valid
        a = np.asarray(amap)
        # compare in the map's own float type (no float64 copy of every pixel); edges rounded to it
        b = np.searchsorted(edges.astype(a.dtype) if a.dtype.kind == "f" else edges, a[keep] if valid is not None
                            else a.ravel(), side="right")
        m = mask[keep] if valid is not None else mask.ravel()
        neg += np.bincount(b[~m], minlength=nb)
        if m.any():
            pos += np.bincount(b[m], minlength=nb)
            lab = label(mask.astype(bool), connectivity=2)
            lab = lab[keep] if valid is not None else lab.ravel()
            sizes = np.bincount(lab)
            present = np.flatnonzero(sizes[1:]) + 1
            n_regions += len(present)
            w = np.zeros(len(sizes))
            w[present] = 1.0 / sizes[present]
            pro_w += np.bincount(b[m], weights=w[lab[m]], minlength=nb)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_regions == 0 or n_pos == 0:
        raise DataError("pixel metrics need at least one defect region in the masks")
    if n_neg == 0:
        raise DataError("pixel metrics need defect-free pixels")
    # AUROC = P(score_pos > score_neg) + ½ P(tie): per bin, the negatives in lower bins plus half of its own.
    neg_below = np.cumsum(neg) - neg
    auroc = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
    # PRO/FPR at each bin's lower edge, walking thresholds from high to low.
    fpr = np.r_[0.0, np.cumsum(neg[::-1]) / n_neg]
    pro = np.r_[0.0, np.cumsum(pro_w[::-1]) / n_regions]
    return {"pixel_auroc": auroc, "aupro": _area_to(fpr, pro, max_fpr)}


def _area_to(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """∫₀^max_fpr PRO dFPR / max_fpr for a curve given by increasing FPR points (linear between)."""
    cut = np.searchsorted(fpr, max_fpr, side="right")
    f, p = fpr[:cut], pro[:cut]
    if cut < len(fpr):
        f0, f1, p0, p1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        p_end = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0) if f1 > f0 else p1
        f, p = np.r_[f, max_fpr], np.r_[p, p_end]
    return float(np.trapezoid(p, f) / max_fpr)


def pixel_metrics(maps: list[np.ndarray], dataset, exact: bool | None = None) -> dict[str, float] | None:
    """pixel_auroc and aupro over the samples with usable masks, or None when there are none.

    ``exact`` None: exact (one sort of every pixel) up to :data:`EXACT_PIXEL_LIMIT` scored pixels,
    :func:`binned_pixel_metrics` above (bounded memory); True/False forces one or the other.
    """
    if dataset.masks is None:
        return None
    n_pix, any_defect, any_clean = 0, False, False
    for _, mask, valid in _pixel_items(maps, dataset):
        m = mask if valid is None else mask[valid]
        n_pix += m.size
        any_defect |= bool(m.any())
        any_clean |= bool((~m).any())
    if not any_defect or not any_clean:
        return None
    if exact is None:
        exact = n_pix <= EXACT_PIXEL_LIMIT
    if not exact:
        return binned_pixel_metrics(lambda: _pixel_items(maps, dataset))
    use_maps, use_masks, use_valid = [], [], []
    for amap, mask, valid in _pixel_items(maps, dataset):
        use_maps.append(amap)
        use_masks.append(mask)
        use_valid.append(np.ones(mask.shape, bool) if valid is None else valid)
    truth = np.concatenate([m[v] for m, v in zip(use_masks, use_valid)])
    scores = np.concatenate([a[v] for a, v in zip(use_maps, use_valid)])
    return {"pixel_auroc": pixel_auroc(scores, truth), "aupro": aupro(use_maps, use_masks, use_valid)}


# ---- thresholds ---------------------------------------------------------------------------------
def threshold_best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    """Return the threshold that maximises F1 on labels ``y``."""
    return best_f1(y, scores)["threshold"]


def threshold_quantile(normal_scores: np.ndarray, q: float = 0.99) -> float:
    """Return the q-quantile of scores of normal samples (expected false-positive rate ≈ 1 - q)."""
    if len(normal_scores) == 0:
        raise DataError("a quantile threshold needs scores of normal samples")
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), q))


def threshold_kfold_mean_of_max(make_detector: Callable[[], object], normals, n_splits: int = 5,
                                seed: int = 0) -> dict:
    """K-fold mean-of-max threshold.

    Per fold fit a fresh detector on the other normals, take the maximum score on the
    held-out normals; the threshold is the mean over folds.
    """
    from sklearn.model_selection import KFold

    from waferscope.base import Detector

    if len(normals) < n_splits:
        raise DataError(f"{n_splits}-fold thresholds need at least {n_splits} normal samples, got {len(normals)}")
    per_fold = []
    for train_idx, held_idx in KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.arange(len(normals))):
        det = make_detector()
        # a fold model's own threshold is never used: skip learning it
        det = det.fit(normals.subset(train_idx), **({"calibrate": False} if isinstance(det, Detector) else {}))
        per_fold.append(float(np.max(det.score(normals.subset(held_idx)).scores)))
    return {"threshold": float(np.mean(per_fold)), "per_fold": per_fold}


# ---- everything at once -------------------------------------------------------------------------
def evaluate_detection(result, dataset, threshold: float | None = None) -> dict:
    """Image metrics over the labelled samples (+ pixel metrics where masks exist).

    With ``threshold`` None the F1/precision/recall are reported at the best-F1 threshold of this
    data (an optimistic figure, labelled as such by ``threshold_source``); pass a threshold chosen on
    other data for an honest operating point.
    """
    scores = np.asarray(result.scores, dtype=np.float64)
    if len(scores) != len(dataset):
        raise DataError(f"{len(scores)} scores for {len(dataset)} samples")
    idx, y = detection_targets(dataset)
    out = image_metrics(y, scores[idx], threshold)
    out["threshold_source"] = "best_f1_on_this_data" if threshold is None else "given"
    out["n_normal"] = int((y == 0).sum())
    out["n_anomalous"] = int((y == 1).sum())
    px = pixel_metrics(result.maps, dataset)
    if px is not None:
        out.update(px)
    return out
