"""Detection metrics: image AUROC/AUPR/F1, pixel AUROC, AUPRO, thresholds, evaluate_detection."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from waferscope.base import DetectionResult
from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError
from waferscope.metrics.detection import (aupro, best_f1, evaluate_detection, image_metrics, prf_at,
                                          threshold_kfold_mean_of_max, threshold_quantile)


def brute_force_aupro(maps, masks, max_fpr=0.3):
    """Threshold-by-threshold reference: PRO and FPR at every distinct score, then the same integral."""
    all_scores = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    regions = [(i, label(k, connectivity=2) == r) for i, k in enumerate(masks)
               for r in range(1, label(k, connectivity=2).max() + 1)]
    normal = np.concatenate([~k.ravel() for k in masks])
    flat = np.concatenate([m.ravel() for m in maps])
    fprs, pros = [0.0], [0.0]
    for t in all_scores:
        fprs.append(float((flat[normal] >= t).mean()))
        pros.append(float(np.mean([(maps[i][reg] >= t).mean() for i, reg in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    grid_pro = np.interp(max_fpr, fprs, pros)
    keep = fprs <= max_fpr
    return float(np.trapezoid(np.r_[pros[keep], grid_pro], np.r_[fprs[keep], max_fpr]) / max_fpr)


def test_image_metrics_perfect_and_inverted():
    y = np.array([0, 0, 0, 1, 1])
    m = image_metrics(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert m["image_auroc"] == 1.0 and m["image_aupr"] == 1.0 and m["f1"] == 1.0
    assert 0.3 < m["threshold"] <= 0.8
    assert image_metrics(y, -np.array([0.1, 0.2, 0.3, 0.8, 0.9]))["image_auroc"] == 0.0


def test_best_f1_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.5 * y
    best = best_f1(y, s)
    exhaustive = max(prf_at(y, s, t)["f1"] for t in np.unique(s))
    assert best["f1"] == pytest.approx(exhaustive)
    assert prf_at(y, s, best["threshold"])["f1"] == pytest.approx(best["f1"])


def test_image_metrics_need_both_classes():
    with pytest.raises(DataError, match="both normal and anomalous"):
        image_metrics(np.zeros(4), np.arange(4.0))


def test_aupro_perfect_random_and_brute_force():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(4):
        k = np.zeros((20, 20), bool)
        r, c = rng.integers(0, 15, 2)
        k[r:r + 4, c:c + rng.integers(2, 6)] = True
        masks.append(k)
    masks.append(np.zeros((20, 20), bool))
    assert aupro([k.astype(float) for k in masks], masks) == pytest.approx(1.0)
    noisy = [rng.random(k.shape) + 0.6 * k for k in masks]
    assert aupro(noisy, masks) == pytest.approx(brute_force_aupro(noisy, masks), abs=1e-9)
    big = [np.zeros((200, 200), bool)]
    big[0][50:120, 30:90] = True
    rand = [rng.random((200, 200))]
    assert aupro(rand, big) == pytest.approx(0.15, abs=0.02)  # PRO ≈ FPR → ∫₀^0.3 x dx / 0.3


def test_aupro_with_ties_matches_brute_force():
    rng = np.random.default_rng(1)
    masks = [rng.random((12, 12)) > 0.8 for _ in range(3)]
    maps = [np.round(rng.random((12, 12)) * 4) / 4 + 0.25 * k for k in masks]
    assert aupro(maps, masks) == pytest.approx(brute_force_aupro(maps, masks), abs=1e-9)


def test_threshold_quantile():
    assert threshold_quantile(np.arange(101.0), 0.9) == pytest.approx(90.0)
    with pytest.raises(DataError):
        threshold_quantile(np.array([]))


class _MeanDetector:
    """Score = distance of a sample's fail rate from the training mean."""

    def fit(self, ds):
        self.mean_ = ds.fail_rates().mean()
        return self

    def score(self, ds):
        return DetectionResult(scores=np.abs(ds.fail_rates() - self.mean_), maps=[])


def test_threshold_kfold_mean_of_max():
    rng = np.random.default_rng(0)
    maps = [(rng.random((10, 10)) < p).astype(np.uint8) + 1 for p in rng.uniform(0, 0.2, 20)]
    ds = WaferDataset.from_maps(maps, ["none"] * 20)
    out = threshold_kfold_mean_of_max(_MeanDetector, ds, n_splits=4, seed=0)
    assert len(out["per_fold"]) == 4
    assert out["threshold"] == pytest.approx(np.mean(out["per_fold"]))
    assert out == threshold_kfold_mean_of_max(_MeanDetector, ds, n_splits=4, seed=0)
    with pytest.raises(DataError):
        threshold_kfold_mean_of_max(_MeanDetector, ds.subset([0, 1]), n_splits=4)


def test_evaluate_detection_with_masks_counts_only_wafer_pixels():
    base = np.ones((16, 16), np.uint8)
    base[:2] = 0  # two rows without dies
    maps, masks, labels = [], [], []
    for i in range(6):
        m = base.copy()
        k = np.zeros((16, 16), bool)
        if i >= 3:
            m[6:9, 6:9] = 2
            k[6:9, 6:9] = True
        maps.append(m)
        masks.append(k if i >= 3 else None)
        labels.append("Loc" if i >= 3 else "none")
    ds = WaferDataset.from_maps(maps, labels, masks=masks)
    amaps = [(m == 2).astype(np.float32) for m in maps]
    for a in amaps:
        a[:2] = 5.0  # a hot no-die area must not count
    res = DetectionResult(scores=np.array([0, 0, 0, 1, 1, 1.0]), maps=amaps)
    out = evaluate_detection(res, ds)
    for key in ("image_auroc", "image_aupr", "f1", "precision", "recall", "threshold", "pixel_auroc", "aupro"):
        assert key in out
    assert out["image_auroc"] == 1.0 and out["pixel_auroc"] == 1.0 and out["aupro"] == pytest.approx(1.0)
    no_masks = WaferDataset.from_maps(maps, labels)
    assert "pixel_auroc" not in evaluate_detection(res, no_masks)
    bad = DetectionResult(scores=res.scores, maps=[a[:8] for a in amaps])
    with pytest.raises(DataError, match="differ in size"):
        evaluate_detection(bad, ds)


# ---- binned (bounded-memory) pixel metrics -------------------------------------------------------
def _blob_data(seed=0, n=6, size=40, quantise=None):
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n):
        k = np.zeros((size, size + 3 * i), bool)  # every map its own shape
        if i % 3:
            y, x = rng.integers(2, size - 12, 2)
            k[y:y + rng.integers(3, 10), x:x + rng.integers(3, 10)] = True
        a = rng.normal(size=k.shape) + 1.5 * k
        if quantise:
            a = np.round(a * quantise) / quantise  # many ties
        maps.append(a.astype(np.float32))
        masks.append(k)
    return maps, masks


@pytest.mark.parametrize("quantise", [None, 4])
def test_binned_pixel_metrics_match_exact(quantise):
    from sklearn.metrics import roc_auc_score

    from waferscope.metrics.detection import binned_pixel_metrics

    maps, masks = _blob_data(quantise=quantise)
    got = binned_pixel_metrics(lambda: ((a, k, None) for a, k in zip(maps, masks)), n_bins=4096)
    truth = np.concatenate([k.ravel() for k in masks])
    scores = np.concatenate([a.ravel() for a in maps])
    # few distinct values → (nearly) every value its own bin; else within a bin's width
    tol = 1e-5 if quantise else 2e-3
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=tol)
    assert got["aupro"] == pytest.approx(aupro(maps, masks), abs=max(tol, 5e-3))


def test_pixel_metrics_binned_and_exact_paths_agree():
    from waferscope.metrics.detection import pixel_metrics

    maps, masks = _blob_data(seed=3, n=9)
    labels = ["good" if not k.any() else "crack" for k in masks]
    ds = WaferDataset.from_maps([np.zeros(k.shape, np.uint8) for k in masks], labels,
                                masks=[k if k.any() else None for k in masks], kind="image", name="t")
    exact = pixel_metrics(maps, ds, exact=True)
    binned = pixel_metrics(maps, ds, exact=False)
    assert binned["pixel_auroc"] == pytest.approx(exact["pixel_auroc"], abs=2e-3)
    assert binned["aupro"] == pytest.approx(exact["aupro"], abs=5e-3)
