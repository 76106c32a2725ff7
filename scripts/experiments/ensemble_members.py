"""Experiment (issue 27): can another member or another way of combining lift the best model past 0.93?

On the lot-grouped folds of `waferscope evaluate classifiers` (dev + dev2, 5 folds, 1,500 synthetic maps
per fold), from the fold caches that command writes (``--work``), plus fits of its own:

  members    mean of members' cached probabilities, raw and each member temperature-scaled on the
             other four folds (nested), and a logistic-regression stack on the members' log
             probabilities (nested, three strengths);
  gbmx       scikit-learn's HistGradientBoosting with the default gbm's settings (15 leaves, 300
             rounds at 0.05, L2 1, balanced classes) on the 120 canonical-view ``extended`` features
             plus the 108 ``grid`` features, written as fold caches named ``gbmx`` (read them as a member);
  pseudo     the same model, refitted with the unlabelled real maps it labels with probability
             >= --threshold (maps from the test fold's lots left out), cached as ``gbmx_pseudo``.

Every ``--combo`` is a ``+``-joined list of cache names (the file-name prefix before ``_fold``).

Run from the repository root (after `waferscope evaluate classifiers gbm 'cnn_fine:...' --work DIR`)::

    PYTHONPATH=src python scripts/experiments/ensemble_members.py --work DIR --fit gbmx --fit pseudo \\
        --combo gbm_ --combo gbmx --combo 'gbm_+cnn_fine:teacher' --combo 'gbmx+gbm_+cnn_fine:teacher'
"""

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from waferscope.data import load
from waferscope.data.paths import DEV2_MAPS, DEV_MAPS
from waferscope.data.preprocess import canonical_map
from waferscope.evaluate.classification import N_FOLDS, fold_train_test, lot_folds, pool_sets
from waferscope.features.grid import grid_features
from waferscope.features.handcrafted import extract_features

p = argparse.ArgumentParser()
p.add_argument("--work", type=Path, required=True, help="fold caches of `evaluate classifiers` (read and written)")
p.add_argument("--fit", action="append", default=[], choices=["gbmx", "pseudo"])
p.add_argument("--combo", action="append", default=[])
p.add_argument("--threshold", type=float, default=0.9)
p.add_argument("--synthetic", type=int, default=1500)
args = p.parse_args()

sets = {"dev": load(str(DEV_MAPS)), "dev2": load(str(DEV2_MAPS))}
pooled, set_of, groups = pool_sets(sets)
folds = lot_folds(pooled.labels, groups)
y = pooled.labels.astype(str)
CLASSES = sorted(set(y))


def features(maps) -> np.ndarray:
    """The 120 canonical-view extended features (what the default gbm sees) and the 108 grid ones."""
    ext = extract_features([canonical_map(m) for m in maps], n_jobs=1, progress=False, feature_set="extended")
    return np.hstack([ext, grid_features(list(maps))])


def gbm_like() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0,
                                          class_weight="balanced", early_stopping=False, random_state=0)


def save(name: str, k: int, model, proba: np.ndarray) -> float:
    rec = {"method": name, "fold": k, "classes": list(model.classes_), "proba": proba.tolist(),
           "test_index": folds[k][1].tolist()}
    (args.work / f"{name}_fold{k}.json").write_text(json.dumps(rec))
    return f1_score(y[folds[k][1]], model.classes_[proba.argmax(1)], average="macro")


def fit_members() -> None:
    unl = load(str(Path(DEV_MAPS).with_name("wm811k_unlabelled.npz"))) if "pseudo" in args.fit else None
    x_unl = features(unl.maps) if unl is not None else None
    lots = np.asarray(pooled.meta.lot).astype(str)
    for k in range(N_FOLDS):
        t = time.time()
        train, test = fold_train_test(pooled, folds, k, args.synthetic)
        xtr, xte, ytr = features(train.maps), features(test.maps), train.labels.astype(str)
        model = gbm_like().fit(xtr, ytr)
        if "gbmx" in args.fit:
            print(f"gbmx fold {k}: {save('gbmx', k, model, model.predict_proba(xte)):.4f} ({time.time() - t:.0f} s)")
        if x_unl is not None:
            keep = ~np.isin(np.asarray(unl.meta.lot).astype(str), lots[folds[k][1]])
            pu = model.predict_proba(x_unl[keep])
            sure = pu.max(1) >= args.threshold
            again = gbm_like().fit(np.vstack([xtr, x_unl[keep][sure]]),
                                   np.concatenate([ytr, model.classes_[pu.argmax(1)][sure]]))
            named, count = np.unique(model.classes_[pu.argmax(1)][sure], return_counts=True)
            print(f"gbmx_pseudo fold {k}: {save('gbmx_pseudo', k, again, again.predict_proba(xte)):.4f}; "
                  f"{sure.sum()} of {keep.sum()} unlabelled maps taken: {dict(zip(named.tolist(), count.tolist()))}")


def member(name: str) -> dict:
    out = {}
    for k in range(N_FOLDS):
        files = [str(args.work / f"{name}_fold{k}.json")]  # the name in full, or a prefix of one cache's name
        if not os.path.exists(files[0]):
            files = [f for f in glob.glob(str(args.work / "*.json"))
                     if os.path.basename(f).startswith(name) and f.endswith(f"_fold{k}.json")]
        if len(files) != 1:
            raise SystemExit(f"{name!r} matches {len(files)} caches of fold {k} in {args.work}")
        rec = json.loads(Path(files[0]).read_text())
        assert rec["test_index"] == folds[k][1].tolist() and list(rec["classes"]) == CLASSES
        out[k] = np.asarray(rec["proba"])
    return out


def tempered(p: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(p, 1e-12, 1)) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def temperature(p: np.ndarray, labels: np.ndarray) -> float:
    idx = np.searchsorted(CLASSES, labels)
    return minimize_scalar(lambda t: -np.log(np.clip(tempered(p, t)[np.arange(len(idx)), idx], 1e-12, 1)).mean(),
                           bounds=(0.2, 10), method="bounded").x


def report(label: str, pred: np.ndarray) -> None:
    f = f1_score(y, pred, average=None, labels=CLASSES)
    per_fold = [f1_score(y[te], pred[te], average="macro") for _, te in folds]
    print(f"{label:70s} {f.mean():.4f} ± {np.std(per_fold):.4f}  Loc {f[CLASSES.index('Loc')]:.3f}")


def combos() -> None:
    for combo in args.combo:
        ms = [member(n) for n in combo.split("+")]
        raw, cal = np.empty(len(y), object), np.empty(len(y), object)
        for k, (_, te) in enumerate(folds):
            others = [j for j in range(N_FOLDS) if j != k]
            y_others = np.concatenate([y[folds[j][1]] for j in others])
            raw[te] = np.array(CLASSES)[sum(m[k] for m in ms).argmax(1)]
            cal[te] = np.array(CLASSES)[sum(tempered(m[k], temperature(np.vstack([m[j] for j in others]), y_others))
                                            for m in ms).argmax(1)]
        report(f"{combo}: mean", raw.astype(str))
        if len(ms) > 1:
            report(f"{combo}: mean of tempered members", cal.astype(str))
            logs = {k: np.hstack([np.log(np.clip(m[k], 1e-6, 1)) for m in ms]) for k in range(N_FOLDS)}
            for c in (0.01, 0.1, 1.0):
                stack = np.empty(len(y), object)
                for k, (_, te) in enumerate(folds):
                    others = [j for j in range(N_FOLDS) if j != k]
                    lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
                    lr.fit(np.vstack([logs[j] for j in others]), np.concatenate([y[folds[j][1]] for j in others]))
                    stack[te] = lr.predict(logs[k])
                report(f"{combo}: logistic stack C={c}", stack.astype(str))


if args.fit:
    fit_members()
combos()
