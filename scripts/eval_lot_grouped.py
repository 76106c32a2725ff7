"""Interim driver (until `waferscope evaluate classifiers` exists, issue 16.3): lot-grouped real-data protocol (dev + dev2 pooled, groups set:lot, 5 folds seed 0,
each fold trains on generate(1500, seed=1000+fold) + the fold's real training maps). gbm features are
cached once (real, unlabelled, per-fold synthetic) so variants refit trees only.

    python scripts/eval_lot_grouped.py 0,1,2,3,4 gbm            # the bundled gbm recipe, all 5 folds
    python scripts/eval_lot_grouped.py 0,1,2,3,4 gbm_pl0.9 et   # + pseudo-labels; extra-trees
    python scripts/eval_lot_grouped.py 0,1,2,3,4 ens gbm+et     # average of cached fold probabilities

Caches and results.jsonl go to $WAFERSCOPE_EVAL_DIR (default results/lot_grouped)."""
import json
import os
import sys
import time
import numpy as np
from pathlib import Path
from scipy.special import softmax
from sklearn.metrics import f1_score
from waferscope.data import load
from waferscope.data.paths import DEV_MAPS
from waferscope.data.synthetic import generate
from waferscope.data.preprocess import grouped_stratified_kfold
from waferscope.features.handcrafted import extract_features
from waferscope.models.trees import fit_trees, tree_scores

OUT = Path(os.environ.get("WAFERSCOPE_EVAL_DIR", "results/lot_grouped"))
C = OUT / "cache"
C.mkdir(parents=True, exist_ok=True)
dev, dev2 = load(DEV_MAPS), load(DEV_MAPS.with_name("wm811k_dev2.npz"))
unl = load(DEV_MAPS.with_name("wm811k_unlabelled.npz"))
labels = np.r_[dev.labels.astype(str), dev2.labels.astype(str)]
sets = np.r_[["dev"] * len(dev), ["dev2"] * len(dev2)]
lots = np.r_[np.asarray(dev.meta["lot"]).astype(str), np.asarray(dev2.meta["lot"]).astype(str)]
groups = np.array([f"{s}:{l}" for s, l in zip(sets, lots)])
CLASSES = sorted(set(labels)); idx = {c: i for i, c in enumerate(CLASSES)}
y = np.array([idx[c] for c in labels])

def feats(name, maps):
    f = C / f"{name}.npy"
    if not f.exists():
        np.save(f, extract_features(maps, n_jobs=-1, feature_set="extended"))
    return np.load(f)

X = feats("real", list(dev.maps) + list(dev2.maps))
XU = feats("unlabelled", list(unl.maps))
folds = list(grouped_stratified_kfold(labels, groups, 5, seed=0))
SYN = []
for k in range(5):
    s = generate(1500, seed=1000 + k)
    SYN.append((feats(f"syn{k}", list(s.maps)), np.array([idx[c] for c in s.labels.astype(str)])))

def fit(x, yy, **p):
    q = dict(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, seed=0); q.update(p)
    return fit_trees(x, yy, q["max_iter"], q["learning_rate"], q["max_leaf_nodes"], q["l2_regularization"], q["seed"])

def proba(t, x): return softmax(tree_scores(t, x), axis=1)

def other(method, xtr, ytr, xte, **p):
    if method == "et":
        from sklearn.ensemble import ExtraTreesClassifier
        m = ExtraTreesClassifier(n_estimators=int(p.get("n", 500)), class_weight="balanced", min_samples_leaf=1,
                                 max_features=p.get("mf", "sqrt"), n_jobs=1, random_state=0)
    else:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import QuantileTransformer
        m = make_pipeline(QuantileTransformer(output_distribution="normal", random_state=0),
                          MLPClassifier((256, 128), alpha=float(p.get("alpha", 1e-3)), max_iter=200, early_stopping=False, random_state=0))
    return m.fit(xtr, ytr).predict_proba(xte)

def ens(names, fold_ids, weights=None):
    Ps = [run(n, fold_ids, **pp) for n, pp in names]
    w = weights or [1] * len(Ps)
    P = sum(wi * Pi for wi, Pi in zip(w, Ps)) / sum(w)
    m = ~np.isnan(P[:, 0]); pred = P[m].argmax(1); d2 = m & (sets == "dev2")
    per_fold = [f1_score(y[te], P[te].argmax(1), average="macro") for k, (tr, te) in enumerate(folds) if k in fold_ids]
    out = dict(method="avg(" + "+".join(n for n, _ in names) + ")", weights=w, folds=list(fold_ids),
               pooled=f1_score(y[m], pred, average="macro"), fold_sd=float(np.std(per_fold)), per_fold=per_fold,
               dev2=f1_score(y[d2], P[d2].argmax(1), average="macro"),
               per_class=dict(zip(CLASSES, f1_score(y[m], pred, average=None, labels=range(9)).round(3).tolist())))
    print(json.dumps(out)); sys.stdout.flush()
    with open(OUT / "results.jsonl", "a") as fh: fh.write(json.dumps(out) + "\n")

def run(method, fold_ids, **p):
    """method: 'gbm' or 'gbm_pl<thr>' (pseudo-label the unlabelled maps with the fold's gbm, confident > thr)."""
    P = np.full((len(y), len(CLASSES)), np.nan)
    secs = []
    for k in fold_ids:
        f = C / f"P_{method}_{json.dumps(p, sort_keys=True)}_f{k}.npy"
        tr, te = folds[k]
        if not f.exists():
            t0 = time.time()
            xs, ys = SYN[k]
            xtr, ytr = np.r_[xs, X[tr]], np.r_[ys, y[tr]]
            if method in ("et", "mlp"):
                np.save(f, other(method, xtr, ytr, X[te], **p)); secs.append(time.time() - t0); P[te] = np.load(f); continue
            t = fit(xtr, ytr, **p)
            if method.startswith("gbm_pl"):
                thr = float(method[6:])
                pu = proba(t, XU); keep = pu.max(1) > thr
                print(f"fold {k}: {keep.sum()} pseudo-labels > {thr}", np.bincount(pu[keep].argmax(1), minlength=9))
                t = fit(np.r_[xtr, XU[keep]], np.r_[ytr, pu[keep].argmax(1)], **p)
            np.save(f, proba(t, X[te])); secs.append(time.time() - t0)
        P[te] = np.load(f)
    m = ~np.isnan(P[:, 0]); pred = P[m].argmax(1)
    per_fold = [f1_score(y[te], P[te].argmax(1), average="macro") for k, (tr, te) in enumerate(folds) if k in fold_ids]
    d2 = m & (sets == "dev2")
    out = dict(method=method, params=p, folds=list(fold_ids), pooled=f1_score(y[m], pred, average="macro"),
               fold_sd=float(np.std(per_fold)), per_fold=per_fold,
               dev2=f1_score(y[d2], P[d2].argmax(1), average="macro"),
               per_class=dict(zip(CLASSES, f1_score(y[m], pred, average=None, labels=range(9)).round(3).tolist())),
               train_s=secs)
    print(json.dumps(out)); sys.stdout.flush()
    with open(OUT / "results.jsonl", "a") as fh: fh.write(json.dumps(out) + "\n")
    return P

if __name__ == "__main__":
    ids = [int(a) for a in sys.argv[1].split(",")]
    if sys.argv[2] == "ens":
        ens([(n, {}) for n in sys.argv[3].split("+")], ids); raise SystemExit
    for spec in sys.argv[2:]:
        name, *kv = spec.split(":")
        p = {a.split("=")[0]: float(a.split("=")[1]) if "." in a.split("=")[1] else int(a.split("=")[1]) for a in kv}
        run(name, ids, **p)
