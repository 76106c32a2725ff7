"""Experiment (issue 27): a decision rule for macro-F1 on top of the probabilities, nested on the lot folds.

The arg-max of (calibrated) probabilities maximises accuracy, not macro-F1. This screen learns
per-class additive offsets ``b`` on the log-probabilities (the same as multiplicative weights
``exp(b)`` on the probabilities) and predicts ``argmax(log p + b)``; the probabilities themselves are
not changed. NESTED: for each test fold the offsets are fitted on the other four folds' out-of-fold
predictions only and applied to the test fold; the pooled macro-F1 (every map tested once) and the
spread of the five fold macro-F1s are reported.

Fit: coordinate ascent on a grid (each class's offset in turn over ``-GRID..GRID`` in steps of
``STEP`` around its current value, a few passes) maximising
``macro-F1(argmax(log p + b)) - ridge * mean(b ** 2)``. The offsets are relative (one class fixed at
0: ``none``). ``ridge`` from a small set is either fixed, or chosen inside the four training folds
by leave-one-fold-out (the ``inner`` rows: fully nested).

For combinations of two or more members it also chooses member weights, nested the same way: the
point of a 0.1-step grid on the simplex with the best macro-F1 on the other four folds, for the
weighted mean of probabilities and for the weighted mean of log-probabilities (``--no-offsets``: only
these rows and the plain arg-max).

Members are fold caches of `waferscope evaluate classifiers` (``--work``; names as in
ensemble_members.py: the file-name prefix before ``_fold``); a ``+``-joined combo averages them.

    PYTHONPATH=src python scripts/experiments/decision_rule.py --work DIR \\
        --combo gbm_ --combo 'gbm_+cnn_fine:teacher' --combo 'gbmx+gbm_+cnn_fine:teacher'
"""

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np

from waferscope.data import load
from waferscope.data.paths import DEV2_MAPS, DEV_MAPS
from waferscope.evaluate.classification import N_FOLDS, lot_folds, pool_sets
from waferscope.evaluate.lot_analysis import per_class_f1

GRID, STEP, PASSES = 3.0, 0.05, 4
RIDGES = (0.0, 1e-3, 1e-2)


def member(work: Path, name: str, folds, classes) -> dict:
    """Fold → that member's cached test-fold probabilities."""
    out = {}
    for k in range(N_FOLDS):
        files = [str(work / f"{name}_fold{k}.json")]
        if not os.path.exists(files[0]):
            files = [f for f in glob.glob(str(work / "*.json"))
                     if os.path.basename(f).startswith(name) and f.endswith(f"_fold{k}.json")]
        if len(files) != 1:
            raise SystemExit(f"{name!r} matches {len(files)} caches of fold {k} in {work}")
        rec = json.loads(Path(files[0]).read_text())
        assert rec["test_index"] == folds[k][1].tolist() and list(rec["classes"]) == classes
        out[k] = np.asarray(rec["proba"], np.float64)
    return out


def macro_f1(codes: np.ndarray, logp: np.ndarray, b: np.ndarray) -> float:
    return float(per_class_f1(codes, (logp + b).argmax(1), logp.shape[1]).mean())


def fit_offsets(logp: np.ndarray, codes: np.ndarray, ridge: float, fixed: int) -> np.ndarray:
    """Per-class log offsets maximising macro-F1 - ridge * mean(b^2) by coordinate ascent on a grid."""
    n = logp.shape[1]
    b = np.zeros(n)
    steps = np.arange(-GRID, GRID + STEP / 2, STEP)
    best = macro_f1(codes, logp, b)
    for _ in range(PASSES):
        moved = False
        for c in range(n):
            if c == fixed:
                continue
            scores = []
            for v in steps:
                trial = b.copy()
                trial[c] = v
                scores.append(macro_f1(codes, logp, trial) - ridge * np.mean(trial ** 2))
            scores = np.asarray(scores)
            # ties (a flat stretch of the step function): the value nearest 0 of the best ones
            top = np.flatnonzero(scores >= scores.max() - 1e-12)
            v = steps[top[np.argmin(np.abs(steps[top]))]]
            if v != b[c]:
                moved = moved or abs(scores.max() - best) > 1e-12
                b[c] = v
                best = scores.max()
        if not moved:
            break
    return b


def nested(logps: dict, codes_of: dict, ridge, fixed: int):
    """Fold → offsets fitted on the other folds. ``ridge='inner'``: chosen by leave-one-fold-out inside them."""
    out, chosen = {}, {}
    for k in range(N_FOLDS):
        others = [j for j in range(N_FOLDS) if j != k]
        r = ridge
        if ridge == "inner":
            inner = {}
            for cand in RIDGES:
                preds = []
                for j in others:
                    rest = [i for i in others if i != j]
                    b = fit_offsets(np.vstack([logps[i] for i in rest]), np.concatenate([codes_of[i] for i in rest]),
                                    cand, fixed)
                    preds.append((codes_of[j], (logps[j] + b).argmax(1)))
                t = np.concatenate([p[0] for p in preds])
                q = np.concatenate([p[1] for p in preds])
                inner[cand] = per_class_f1(t, q, logps[k].shape[1]).mean()
            r = max(RIDGES, key=lambda c: (inner[c], c))  # ties: the stronger ridge
        chosen[k] = r
        out[k] = fit_offsets(np.vstack([logps[j] for j in others]), np.concatenate([codes_of[j] for j in others]),
                             r, fixed)
    return out, chosen


def simplex(n: int, step: float = 0.1) -> list[tuple]:
    """Member weights on a grid of the simplex (each a multiple of ``step``, summing to 1)."""
    import itertools

    m = int(round(1 / step))
    return [tuple(c / m for c in combo) for combo in itertools.product(range(m + 1), repeat=n) if sum(combo) == m]


def weighted_members(ms: list, codes_of: dict, geometric: bool):
    """Fold → members' weighted mean (arithmetic, or of logs), weights chosen on the other four folds' macro-F1."""
    grid = simplex(len(ms))
    n = ms[0][0].shape[1]

    def combine(k, w):
        if geometric:
            return sum(wi * np.log(np.clip(m[k], 1e-12, 1)) for wi, m in zip(w, ms))
        return np.log(np.clip(sum(wi * m[k] for wi, m in zip(w, ms)), 1e-12, 1))

    out, chosen = {}, {}
    for k in range(N_FOLDS):
        others = [j for j in range(N_FOLDS) if j != k]
        truth = np.concatenate([codes_of[j] for j in others])

        def score(w):
            pred = np.concatenate([combine(j, w).argmax(1) for j in others])
            return per_class_f1(truth, pred, n).mean()
        scores = {w: score(w) for w in grid}
        equal = tuple(1 / len(ms) for _ in ms)
        # ties: the weights nearest the equal mean
        chosen[k] = max(grid, key=lambda w: (round(scores[w], 10), -sum(abs(a - b) for a, b in zip(w, equal))))
        out[k] = combine(k, chosen[k])
    return out, chosen


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--combo", action="append", default=[])
    p.add_argument("--out", type=Path, help="write the offsets and scores as JSON here")
    p.add_argument("--no-offsets", action="store_true", help="only the argmax and member-weight rows")
    args = p.parse_args()

    sets = {"dev": load(str(DEV_MAPS)), "dev2": load(str(DEV2_MAPS))}
    pooled, set_of, groups = pool_sets(sets)
    folds = lot_folds(pooled.labels, groups)
    y = pooled.labels.astype(str)
    classes = sorted(set(y))
    codes = np.array([classes.index(c) for c in y])
    codes_of = {k: codes[te] for k, (_, te) in enumerate(folds)}
    fixed = classes.index("none")
    results = {}
    for combo in args.combo:
        t0 = time.time()
        ms = [member(args.work, n, folds, classes) for n in combo.split("+")]
        # the members' mean probability, as `ensemble` computes it; its log is what the offsets shift
        logps = {k: np.log(np.clip(sum(m[k] for m in ms) / len(ms), 1e-12, 1)) for k in range(N_FOLDS)}
        rows = {}
        for ridge in ("none",) + (() if args.no_offsets else RIDGES + ("inner",)):
            if ridge == "none":
                offs, chosen = {k: np.zeros(len(classes)) for k in range(N_FOLDS)}, {}
            else:
                offs, chosen = nested(logps, codes_of, ridge, fixed)
            pred = np.empty(len(y), np.int64)
            for k, (_, te) in enumerate(folds):
                pred[te] = (logps[k] + offs[k]).argmax(1)
            f = per_class_f1(codes, pred, len(classes))
            per_fold = [per_class_f1(codes_of[k], pred[te], len(classes)).mean() for k, (_, te) in enumerate(folds)]
            rows[str(ridge)] = {"macro_f1": float(f.mean()), "fold_sd": float(np.std(per_fold)),
                                "folds": [float(v) for v in per_fold], "per_class": dict(zip(classes, f.round(4).tolist())),
                                "offsets": {k: offs[k].round(3).tolist() for k in offs},
                                "ridge_chosen": {k: v for k, v in chosen.items()}}
            label = "argmax" if ridge == "none" else f"offsets, ridge {ridge}"
            print(f"{combo:40s} {label:24s} {f.mean():.4f} ± {np.std(per_fold):.4f}  "
                  f"Loc {f[classes.index('Loc')]:.3f}  folds {' '.join(f'{v:.4f}' for v in per_fold)}", flush=True)
        if len(ms) > 1:
            for geometric in (False, True):
                logw, chosen = weighted_members(ms, codes_of, geometric)
                pred = np.empty(len(y), np.int64)
                for k, (_, te) in enumerate(folds):
                    pred[te] = logw[k].argmax(1)
                f = per_class_f1(codes, pred, len(classes))
                per_fold = [per_class_f1(codes_of[k], pred[te], len(classes)).mean() for k, (_, te) in enumerate(folds)]
                label = "weighted " + ("geometric" if geometric else "mean") + " (nested)"
                rows[label] = {"macro_f1": float(f.mean()), "fold_sd": float(np.std(per_fold)),
                               "folds": [float(v) for v in per_fold], "weights": {k: list(v) for k, v in chosen.items()}}
                print(f"{combo:40s} {label:24s} {f.mean():.4f} ± {np.std(per_fold):.4f}  "
                      f"Loc {f[classes.index('Loc')]:.3f}  folds {' '.join(f'{v:.4f}' for v in per_fold)}  "
                      f"weights {[tuple(round(x, 2) for x in chosen[k]) for k in range(N_FOLDS)]}", flush=True)
        results[combo] = rows
        print(f"  ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"classes": classes, "results": results}, indent=1))


if __name__ == "__main__":
    main()
