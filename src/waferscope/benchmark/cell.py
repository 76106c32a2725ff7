"""One benchmark cell: a method trained and measured on one data set with one seed.

The record it returns has three groups, kept apart so reruns compare cleanly:

- ``quality`` — deterministic figures rounded to 4 decimals (and ``params``; ``size_bytes`` is kept
  here too but reported with the measured columns: some models store their fit time in the run);
- ``timing`` — wall-clock and memory measurements, which vary from run to run;
- ``artefacts`` — confusion matrix, ROC/PR points and example maps for the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from waferscope import registry
from waferscope.base import DetectionResult
from waferscope.benchmark import measure, quality as Q
from waferscope.benchmark.config import BenchmarkConfig, MethodSpec
from waferscope.benchmark.protocol import LoadedDataset, folds, normal_folds
from waferscope.data.dataset import WaferDataset

SEED_PARAMS = ("seed", "random_state")


def make_estimator(method: MethodSpec, kind: str, seed: int):
    """Return the estimator of a benchmark method, seeded with the cell's seed unless the config pins one."""
    cls = registry.get(method.model, kind)
    params = dict(method.params)
    names = cls._param_names()
    for name in SEED_PARAMS:  # the cell's seed, unless the config pins one
        if name in names and name not in params:
            params[name] = seed
    return cls(**params)


def _concat_results(parts: list[DetectionResult]) -> DetectionResult:
    return DetectionResult(scores=np.concatenate([np.asarray(p.scores, dtype=np.float64) for p in parts]),
                           maps=[m for p in parts for m in p.maps])


def _fit(est, train: WaferDataset, task: str):
    # a detector's threshold is learned outside the timed fit (run_cell), so train_s stays the fit's
    return est.fit(train.normal(), calibrate=False) if task == "detection" else est.fit(train)


def run_cell(config: BenchmarkConfig, method: MethodSpec, loaded: LoadedDataset, seed: int, run_dir: Path,
             progress=None) -> dict:
    """Fit and measure one (method, data set, seed) cell; return its record (quality, speed, size, memory)."""
    task, kind = method.task, method.kind
    measure.reset_peak_rss()
    rss0 = measure.rss_mb()
    train_s = train_cpu_s = 0.0  # wall and process CPU time (CPU time is steadier on a shared machine)
    y_true, y_pred, results, tests = [], [], [], []
    est = None
    classes = None
    probas: list | None = []
    cell_folds = folds(loaded, seed)
    n_train = 0
    for k, (train, test) in enumerate(cell_folds):
        n_train = len(train.normal()) if task == "detection" else len(train)  # what the model learnt from
        if progress:
            progress(f"fold {k + 1}/{len(cell_folds)}: fit on {len(train)} maps" if len(cell_folds) > 1
                     else f"fit on {len(train.normal()) if task == 'detection' else len(train)} maps")
        measure.seed_everything(seed, config.threads)
        est = make_estimator(method, kind, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        _fit(est, train, task)
        train_s += time.perf_counter() - t0
        train_cpu_s += time.process_time() - c0
        if task == "classification":
            proba = np.asarray(est.predict_proba(test))
            if classes is not None and list(est.classes_) != classes:
                probas = None  # folds that learnt different classes: no pooled probabilities
            classes = list(est.classes_)
            y_pred.append(np.asarray(classes, dtype=object)[proba.argmax(1)])
            y_true.append(test.labels)
            if probas is not None:
                probas.append(proba)
        else:
            results.append(est.score(test))
        tests.append(test)
    test_all = tests[0] if len(tests) == 1 else WaferDataset.concat(tests, name=loaded.name)

    if task == "classification":
        yt, yp = np.concatenate(y_true).astype(str), np.concatenate(y_pred).astype(str)
        from waferscope.data.classes import CLASSES

        seen = {str(c) for c in classes} | set(yt.tolist())
        order = [c for c in CLASSES if c in seen] + sorted(seen - set(CLASSES))
        qual, art = Q.classification_quality(yt, yp, order)
        if probas:
            qual.update(Q.class_mix_quality(yt, np.vstack(probas), classes, est))
        art["examples"] = _classification_examples(config, est, tests[-1])
        qual.update(_gradcam_quality(config, est, tests[-1]))
    else:
        result = _concat_results(results)
        qual, art = Q.detection_quality(result, test_all)
        art["examples"] = Q.detection_examples(result, test_all, config.examples)
        if loaded.spec.threshold_folds:
            qual["image_f1_kfold_threshold"], art["threshold"], thr = _kfold_threshold_f1(
                config, method, cell_folds[-1][0], result, test_all, seed, loaded.spec.threshold_folds)
            # the saved run decides with the threshold the report measured
            est.set_threshold(thr, f"kfold_mean_of_max (k={loaded.spec.threshold_folds}, "
                              f"seed={seed}, benchmark protocol folds)", per_fold=art["threshold"]["fold_maxima"])
        else:
            est.calibrate(cell_folds[-1][0].normal())  # the default rule, on the last fold's training normals

    saved = est.save(run_dir, overwrite=True)  # a benchmark rerun replaces its own cells
    qual["params"] = measure.count_parameters(est)
    qual["size_bytes"] = measure.dir_bytes(saved)

    timing = {"train_s": round(train_s, 3), "train_cpu_s": round(train_cpu_s, 3)}
    if config.speed_enabled:
        if progress:
            progress(f"speed: latency at batch 1, throughput of {config.speed_n} wafers in batches of "
                     f"{config.batch_size}")
        timing.update(_speed(config, est, tests[-1], task))
    peak = measure.peak_rss_mb()
    timing["peak_rss_mb"] = None if peak is None else round(peak, 1)
    timing["peak_extra_mb"] = None if peak is None or rss0 is None else round(max(peak - rss0, 0.0), 1)
    return {"task": task, "method": method.name, "label": method.label, "model": method.model, "params": method.params,
            "dataset": loaded.name, "seed": seed, "n_test": len(test_all), "n_folds": len(cell_folds),
            "n_train": n_train,
            "quality": qual, "timing": timing, "artefacts": art, "run_dir": str(run_dir)}


def _kfold_threshold_f1(config, method, train, result, test, seed, n_folds) -> tuple[float, dict, float]:
    """Seed 004's rule: per fold of the normal training maps, fit on the rest and take the highest held-out score.

    The threshold is the mean over folds; F1 of the test maps at that threshold (and the
    report's record of it, and the threshold itself).
    """
    normal = train.normal()
    maxima = []
    for tr, va in normal_folds(normal, n_folds, seed):
        measure.seed_everything(seed, config.threads)
        est = make_estimator(method, method.kind, seed).fit(normal.subset(tr), calibrate=False)
        maxima.append(float(np.max(est.score(normal.subset(va)).scores)))
    thr = float(np.mean(maxima))
    y = ~test.is_normal
    return (Q.rnd(Q.f1_at(y, np.asarray(result.scores, dtype=np.float64), thr)),
            {"value": Q.rnd(thr), "fold_maxima": [Q.rnd(m) for m in maxima]}, thr)


def _speed(config: BenchmarkConfig, est, test: WaferDataset, task: str) -> dict:
    call = est.predict_proba if task == "classification" else est.score
    one = test.subset([0])
    lat = measure.latency_ms(call, one, config.repeats)
    n, bs = config.speed_n, config.batch_size
    idx = np.arange(n) % len(test)
    batches = [test.subset(idx[i:i + bs]) for i in range(0, n, bs)]
    return {"latency_ms": round(lat, 3), "throughput_wps": round(measure.throughput(call, batches, n), 1),
            "speed_batch_size": bs, "speed_n": n}


def _classification_examples(config: BenchmarkConfig, est, test: WaferDataset) -> list[dict]:
    """Return the first test map of each class with the prediction.

    Each with a Grad-CAM map when the model is a torch network and :mod:`waferscope.explain` is
    installed (else no overlay).
    """
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in sorted(set(test.labels.astype(str)))]
    picks = picks[: config.examples]
    if not picks:
        return []
    sub = test.subset(picks)
    proba = np.asarray(est.predict_proba(sub))
    cams = None
    if config.gradcam and est.get_tags().gradcam:
        try:
            from waferscope.explain.gradcam import GradCAM
        except ImportError:
            GradCAM = None
        if GradCAM is not None:
            cams, _ = GradCAM(est.network_)(est.to_tensor(sub), proba.argmax(1))
    out = []
    for j, i in enumerate(picks):
        out.append({"index": i, "label": str(test.labels[i]), "pred": str(est.classes_[int(proba[j].argmax())]),
                    "confidence": Q.rnd(proba[j].max()), "map": np.asarray(test.maps[i]).tolist(),
                    "gradcam": None if cams is None else np.round(cams[j], 3).tolist()})
    return out


GRADCAM_MAX_MAPS = 300


def _gradcam_quality(config: BenchmarkConfig, est, test: WaferDataset) -> dict:
    """Seed 002's figures where the test maps have ground-truth pattern masks (synthetic maps).

    Grad-CAM energy inside the mask, pointing-game hit rate, and the die-level F1 of Grad-CAM
    denoising (fails kept where the heat is relevant) against the mask, with the median filter's
    F1 as the baseline. Over up to GRADCAM_MAX_MAPS defect maps, in order.
    """
    if not (config.gradcam and est.get_tags().gradcam) or test.masks is None:
        return {}
    try:
        from waferscope.explain.denoise import denoise_gradcam, denoise_median, die_scores
        from waferscope.explain.gradcam import GradCAM, to_die_grid
        from waferscope.explain.localization import energy_in_mask, pointing_hit
    except ImportError:
        return {}
    idx = [i for i in range(len(test)) if test.masks[i] is not None and test.masks[i].any() and not test.is_normal[i]]
    idx = idx[:GRADCAM_MAX_MAPS]
    if not idx:
        return {}
    sub = test.subset(idx)
    cam_fn = GradCAM(est.network_)
    energy, hits, f1_cam, f1_median = [], [], [], []
    for start in range(0, len(sub), 64):
        part = sub.subset(np.arange(start, min(start + 64, len(sub))))
        cams, _ = cam_fn(est.to_tensor(part))
        for cam, wafer, mask in zip(cams, part.maps, part.masks):
            heat = to_die_grid(cam, wafer.shape)
            on = wafer > 0
            energy.append(energy_in_mask(heat, mask, on))
            hits.append(pointing_hit(heat, mask, on))
            f1_cam.append(die_scores(denoise_gradcam(wafer, heat), mask)["f1"])
            f1_median.append(die_scores(denoise_median(wafer), mask)["f1"])
    return {"gradcam_energy": Q.rnd(np.mean(energy)), "gradcam_pointing": Q.rnd(np.mean(hits)),
            "denoise_gradcam_f1": Q.rnd(np.mean(f1_cam)), "denoise_median_f1": Q.rnd(np.mean(f1_median))}
