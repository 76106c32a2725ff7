"""Analyses of the cached held-out predictions of the lot-grouped protocol, no refitting.

They read :func:`waferscope.evaluate.classification.lot_kfold`'s per-(method, fold) caches:

- :func:`prior_shift` — the pooled predictions re-drawn in other class mixes (``dev``, ``wm811k``,
  ``defects``, ``half-none``), each draw scored three ways (:mod:`waferscope.models.classifiers.prior`):
  ``balanced`` (the probabilities as they are), ``given`` (moved to the mix's true proportions) and
  ``estimate`` (moved to the mix EM estimates from the draw's own probabilities, no labels).
  Resampling cannot add information the sets lack; it shows what the class mix does to each
  class's precision and how much of that the prior correction takes back.
- :func:`prior_shift_folds` — the same, but each lot fold's own held-out maps re-drawn separately
  (no map of a draw shares a lot with the model's training maps), optionally with the
  probabilities calibrated by a temperature fitted on the *other* folds: the fold-level check that
  ``--prior estimate`` never lowers macro-F1, and how far its EM mix is from the true one.
- :func:`plot_errors` — a gallery of the most frequent (label → prediction) confusions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from waferscope.evaluate.classification import N_FOLDS, average_records, fold_cache


def fold_records(method: str, work: str | Path) -> list[dict]:
    """Return the 5 cached lot-fold records of ``method`` (``a+b`` averages members).

    A DataError naming ``work`` when a fold was not run.
    """
    import json

    from waferscope.errors import DataError

    members = []
    for m in method.split("+"):
        paths = [fold_cache(Path(work), m, k) for k in range(N_FOLDS)]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise DataError(f"{m} has not been run on every fold (no {missing[0]}); run "
                            f"`waferscope evaluate classifiers {m} --work {work}` first", work)
        members.append([json.loads(p.read_text()) for p in paths])
    return members[0] if len(members) == 1 else average_records(members)


def pooled_predictions(method: str, work: str | Path, n_maps: int) -> tuple[list[str], np.ndarray]:
    """Return (classes, probabilities of every pooled map) from the 5 cached lot folds of ``method``.

    A ``method`` of ``a+b`` averages members; a DataError naming ``work`` when a fold was not run.
    """
    from waferscope.errors import DataError

    recs = fold_records(method, work)
    proba = np.full((n_maps, len(recs[0]["classes"])), np.nan)
    for r in recs:
        proba[np.asarray(r["test_index"])] = r["proba"]
    if np.isnan(proba[:, 0]).any():
        raise DataError(f"the cached folds of {method} do not cover the {n_maps} pooled maps; were they run on "
                        "other sets?", work)
    return list(recs[0]["classes"]), proba


def per_class_f1(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Return the F1 of each class 0..n-1 from integer labels.

    Scikit-learn's arithmetic, fast enough for thousands of scorings; 0 where a class has no
    support and no prediction.
    """
    cm = np.bincount(truth * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    return np.divide(2 * tp, denom, out=np.zeros(n), where=denom > 0)


def mixes(classes: list[str], y: np.ndarray) -> dict[str, np.ndarray]:
    """Return the class mixes of the analysis, as proportions over ``classes``."""
    from waferscope.models.classifiers.prior import WM811K_LABELLED_COUNTS

    own = np.array([np.mean(y == c) for c in classes])
    wm = np.array([WM811K_LABELLED_COUNTS[c] for c in classes], np.float64)
    defects = np.where(np.array(classes) == "none", 0.0, wm)
    half = np.where(np.array(classes) == "none", 0.5, 0.5 / (len(classes) - 1))
    return {"dev": own, "wm811k": wm / wm.sum(), "defects": defects / defects.sum(), "half-none": half}


def score_mix(classes, y, proba, mix, draws: int, size: int, seed: int) -> dict:
    """Score ``draws`` samples of ``size`` maps in the proportions ``mix``.

    Each class drawn with replacement from its own predictions, scored balanced / given /
    estimate.
    """
    from waferscope.models.classifiers.prior import adjust_to_prior, estimate_prior, estimated_target

    rng = np.random.default_rng(seed)
    names = np.asarray(classes)
    codes = np.array([classes.index(c) for c in y])
    base = np.full(len(classes), 1.0 / len(classes))
    # a class with no map here (a small fold) cannot be drawn: the mix of the others, renormalised
    mix = np.where([np.any(y == c) for c in classes], mix, 0.0)
    mix = mix / mix.sum()
    present = mix > 0
    results = {"balanced": [], "given": [], "estimate": []}
    per_class = {k: [] for k in results}
    estimates, em_mixes = [], []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=max(1, int(round(share * size))))
                              for c, share in zip(classes, mix) if share > 0])
        p, truth = proba[idx], codes[idx]
        estimated = estimated_target(p, base, classes.index("none") if "none" in classes else None)
        estimates.append(estimated)
        em_mixes.append(estimate_prior(p, base)[0])
        for name, target in (("balanced", base), ("given", mix), ("estimate", estimated)):
            f1 = per_class_f1(truth, adjust_to_prior(p, base, target).argmax(1), len(classes))[present]
            results[name].append(f1.mean())
            per_class[name].append(dict(zip(names[present], f1)))
    out = {name: {"macro_f1_mean": float(np.mean(v)), "macro_f1_sd": float(np.std(v)),
                  "per_class": {c: float(np.mean([d[c] for d in per_class[name]])) for c in per_class[name][0]}}
           for name, v in results.items()}
    out["estimated_mix"] = dict(zip(classes, np.mean(estimates, 0).round(4).tolist()))
    out["true_mix"] = dict(zip(classes, mix.round(4).tolist()))
    # how far the full EM mix is from the drawn one: half the L1 distance (total variation)
    out["em_mix_error"] = float(np.mean([0.5 * np.abs(m - mix).sum() for m in em_mixes]))
    return out


def prior_shift(method: str, labels, work: str | Path, draws: int = 20, size: int = 20_000,
                seed: int = 0) -> dict[str, dict]:
    """Return mix name → :func:`score_mix` report for ``method``'s cached lot-fold predictions.

    Of the pooled maps whose labels are ``labels`` (the ``dev`` mix is the pooled sets' own).
    """
    y = np.asarray(labels).astype(str)
    classes, proba = pooled_predictions(method, work, len(y))
    return {name: score_mix(classes, y, proba, mix, draws, size, seed) for name, mix in mixes(classes, y).items()}


def out_of_fold_temperature(method: str, labels, work: str | Path) -> float:
    """Return the temperature of ``method``'s pooled out-of-fold predictions.

    The temperature is :func:`~waferscope.models.classifiers.prior.fit_temperature`'s: the
    calibration to store with a model trained on all the maps.
    """
    from waferscope.models.classifiers.prior import fit_temperature

    y = np.asarray(labels).astype(str)
    classes, proba = pooled_predictions(method, work, len(y))
    return fit_temperature(proba, np.array([classes.index(c) for c in y]))


def prior_shift_folds(method: str, labels, work: str | Path, draws: int = 10, size: int = 2_000, seed: int = 0,
                      calibrate: bool = False) -> dict[str, dict]:
    """Mix name → per-fold :func:`score_mix` reports.

    Each fold's own held-out maps drawn in the mix (``dev``: the pooled sets' own mix), plus
    ``min_gain`` (the smallest estimate − balanced macro-F1 over the folds), ``mix_error`` (the
    folds' mean total-variation distance of the full EM mix from the drawn one) and, with
    ``calibrate``, each fold's temperature (fitted on the other folds).
    """
    from waferscope.models.classifiers.prior import apply_temperature, fit_temperature

    y = np.asarray(labels).astype(str)
    recs = fold_records(method, work)
    classes = list(recs[0]["classes"])
    codes = np.array([classes.index(c) for c in y])
    parts = [(np.asarray(r["test_index"]), np.asarray(r["proba"], np.float64)) for r in recs]
    temperatures = []
    if calibrate:
        raw = list(parts)
        for k, (index, proba) in enumerate(raw):
            other = [j for j in range(len(raw)) if j != k]
            t = fit_temperature(np.concatenate([raw[j][1] for j in other]),
                                np.concatenate([codes[raw[j][0]] for j in other]))
            parts[k] = (index, apply_temperature(proba, t))
            temperatures.append(t)
    out = {}
    for name, mix in mixes(classes, y).items():
        folds, errors = [], []
        for k, (index, proba) in enumerate(parts):
            report = score_mix(classes, y[index], proba, mix, draws, size, seed + k)
            folds.append(report)
            errors.append(report["em_mix_error"])
        out[name] = {"folds": folds, "min_gain": min(f["estimate"]["macro_f1_mean"] - f["balanced"]["macro_f1_mean"]
                                                     for f in folds),
                     "mix_error": float(np.mean(errors))}
    if calibrate:
        out["temperatures"] = temperatures
    return out


def confusions(method: str, pooled, work: str | Path) -> tuple[np.ndarray, Counter]:
    """(pooled predictions, Counter of (label, prediction) errors) of ``method``'s cached lot folds."""
    classes, proba = pooled_predictions(method, work, len(pooled))
    pred = np.asarray(classes)[proba.argmax(1)]
    truth = pooled.labels.astype(str)
    return pred, Counter((t, p) for t, p in zip(truth, pred) if t != p)


def plot_errors(method: str, pooled, work: str | Path, out: str | Path, pairs: int = 6,
                per_pair: int = 8) -> list[tuple[tuple[str, str], int]]:
    """Draw the first ``per_pair`` maps of each of the ``pairs`` most frequent confusions to the PNG ``out``.

    Maps in pooled order, the PNG written atomically; returns [((label, prediction), count)]. A
    DataError when there is no error to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waferscope.data.render import render_map
    from waferscope.errors import DataError
    from waferscope.utils import atomic_path

    pred, counts = confusions(method, pooled, work)
    top = counts.most_common(pairs)
    if not top:
        raise DataError(f"{method} made no errors, so there is nothing to draw", work)
    truth = pooled.labels.astype(str)
    fig, axes = plt.subplots(len(top), per_pair, figsize=(1.6 * per_pair, 1.8 * len(top)), squeeze=False)
    for row, ((label, predicted), count) in enumerate(top):
        index = np.flatnonzero((truth == label) & (pred == predicted))
        for col in range(per_pair):
            axes[row, col].axis("off")
            if col < len(index):
                axes[row, col].imshow(render_map(pooled.maps[index[col]]), interpolation="nearest")
        axes[row, 0].set_title(f"label {label} → predicted {predicted} ({count} maps)", fontsize=9, loc="left")
    fig.suptitle(f"{method} errors on the pooled real maps (lot-grouped 5-fold): the {len(top)} most frequent "
                 f"confusions, first {per_pair} maps each\n(grey = pass, orange = fail)", fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return top
