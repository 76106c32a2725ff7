"""Experiment (issue 31, fifth open-set screen): parts that look at what is *unlike* the known classes.

Not a command: a session script kept for the record (docs/search.md, "Fifth screen"). It replicates
``waferscope.evaluate.open_set.open_set_folds`` exactly for the default parts (same lot-grouped folds,
seed, 80/20 lot split of the archive's known wafers, stand-in ``HistGradientBoostingClassifier``,
``metric`` head, scorer; the script's default AUROC per fold is checked against the command's), and
from the same fitted models computes candidate parts for the calibration and query wafers. Raw part
values are kept per (fold, hidden class) task; rank-mean combinations are scored offline (each part
ranked against the task's calibration wafers, threshold at 5 % abstention of them, known-class
macro-F1 with an abstained known wafer counted as a miss, as the command does).

    OMP_NUM_THREADS=1 python scripts/experiments/open_set_screen5.py cache            # features, once
    OMP_NUM_THREADS=1 python scripts/experiments/open_set_screen5.py raw --folds 0    # ~20 s a task
    python scripts/experiments/open_set_screen5.py combos --folds 0                   # screen (slow: F1s)
    python scripts/experiments/open_set_screen5.py confirm --folds 1,2,3,4            # the candidates only

Candidate parts (k = 10; features standardised and clipped as the scorer's references; "chosen" = the
training wafers of the class the stand-in chose, "min" = of the nearest class; S14 = the 14 shape
descriptors of the largest fail cluster screened in the fourth screen, taken from the ``extended``
features; S6 = the default ``shape_knn``'s six):

  s14_min / s14_chosen / s14_rel    kNN in the 14 descriptors (nearest class / chosen / relative)
  s6_chosen / s6_rel                the same on the default's six
  maha_* / maha14_*                 Ledoit-Wolf Mahalanobis distance per class (120 / 14 features)
  white_any / _chosen / _rel        kNN in a PCA-whitened feature space (99 % of the variance)
  tail14_chosen                     the most extreme single descriptor against the chosen class:
                                    -log of its smallest two-sided empirical tail probability
  tail14_top3 / tail14_sum          the sum of the 3 largest / of all 14 -log tails
  tail6_chosen / tail29_chosen      the same on S6 / on S14 + 15 more shape columns
  tail14_min / tail_all_chosen      tail against the least-surprised class / on all 120 features
  if14_chosen                       an isolation forest per class on S14 (chosen class)
  disagree_feat                     share of the 10 nearest known wafers (any class) not of the chosen class
  grid_rel / grid6_min / grid14_chosen / grid_tail14   the fourth screen's ``grid`` parts (108 features)
  margin                            1 - (p1 - p2)

Screen on fold 0 (15:47-16:05 UTC 2026-12-06, load average 1.2-4): default 0.8822, 31 parts alone, 2,106 combinations (default
+ 1 or 2 new parts, one default part swapped for a new one, one dropped and two added), then ~20
around the best. Every top combination holds a ``tail`` part; the best, 0.898, need ``grid``; the
extended-only ones reach 0.895-0.897. Weights: on the candidate D1 the best of 200 random weight
vectors (0.25-3) is 0.8965 against 0.8951 equal, so a nested (leave-one-known-class-out) weight
learning cannot add more than ~0.001 here and was not run.

ADOPTION RULE (written 2026-12-06 16:06 UTC, before any fold 1-4 figure of this screen was computed;
folds 1-4 have already served two adoption decisions, the first and the fourth screens).
Candidates taken to folds 1-4 (two):

  D1  doubt, metric_knn, relative_knn, shape_knn, tail14_top3
      (the default with feature_knn swapped for the 3-descriptor tail; fold 0: 0.8951, F1 gap -0.014)
  E   D1 + s14_min (fold 0: 0.8962, F1 gap -0.017)

A candidate passes if on folds 1-4, run once: (a) its mean leave-one-class-out AUROC >= 0.889 (the
default's 0.879 + 0.010); (b) it is >= the default on at least 3 of the 4 folds; (c) its mean
known-class macro-F1 gap (open - closed, 5 % abstention) >= -0.020. If both pass, D1 is adopted
(fewer parts, one list of descriptors) unless E beats it by >= 0.005 mean AUROC. If neither passes,
nothing in the package changes. Whether the issue's 0.90 bar is met is reported either way; it is
not part of the rule.

RESULT (added after the run, 16:19 UTC; folds 1-4 run once): default 0.8798 / 0.8838 / 0.8698 / 0.8819
(mean 0.879, as the command); D1 0.8899 / 0.8956 / 0.8839 / 0.8933, mean 0.8907, F1 gap -0.013;
E 0.8902 / 0.8973 / 0.8860 / 0.8978, mean 0.8928, F1 gap -0.016. Both pass; E - D1 = 0.002 < 0.005:
D1 adopted (``shape_tail`` = tail14_top3). Below the issue's 0.90.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

WORK = Path("/tmp/os31")
K = 10
CLASSES = ["Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random", "Scratch"]
DEFAULT = ["doubt", "metric_knn", "feature_knn", "relative_knn", "shape_knn"]
CANDIDATES = {"D1": ["doubt", "metric_knn", "relative_knn", "shape_knn", "tail14_top3"],
              "E": ["doubt", "metric_knn", "relative_knn", "shape_knn", "tail14_top3", "s14_min"]}
S14 = ["stats_largest_size", "stats_largest_radius", "stats_largest_elongation", "stats_largest_length",
       "stats_largest_compactness", "largest_r_min", "largest_r_max", "largest_angle_concentration",
       "largest_box_fill", "longest_thinness", "outer_hot_run", "middle_hot_run", "stats_fail_rate",
       "fail_radius_spread"]
S6 = ["stats_largest_size", "stats_largest_radius", "stats_largest_elongation", "largest_angle_concentration",
      "outer_hot_run", "longest_thinness"]
MORE_SHAPE = ["outer_hot_share", "middle_hot_share", "inner_hot_run", "inner_hot_share", "largest_width",
              "largest_edge_share", "largest_angular_span", "longest_length", "long_clusters", "stats_second_size",
              "stats_clusters", "geom_eccentricity", "geom_solidity", "fail_centroid_offset", "fail_radius_excess"]
G6 = ["largest_size", "largest_radius", "largest_elongation", "largest_angle_concentration", "outer_hot_run",
      "longest_thinness"]
G14 = ["largest_size", "largest_radius", "largest_elongation", "largest_length", "largest_compactness",
       "largest_r_min", "largest_r_max", "largest_angle_concentration", "largest_box_fill", "longest_thinness",
       "outer_hot_run", "middle_hot_run", "fail_rate", "fail_radius_spread"]


def cache() -> None:
    """The labelled dev + dev2 maps' canonical ``extended`` and ``grid`` features, labels and lots."""
    from waferscope.cli.common import load_data
    from waferscope.cli.evaluate_retrieval import _shared_default_sets
    from waferscope.features.handcrafted import extract_features
    from waferscope.search.discover import open_set_features

    t = time.time()
    ds = load_data(_shared_default_sets()).labelled()
    ext = open_set_features(ds.maps, n_jobs=1)
    grid = extract_features(ds.maps, n_jobs=1, feature_set="grid")
    WORK.mkdir(exist_ok=True)
    np.savez(WORK / "cache.npz", ext=ext, grid=grid, labels=ds.labels.astype(str),
             lots=ds.meta["lot"].astype(str).to_numpy().astype(str))
    print(len(ds), ext.shape, grid.shape, f"{time.time() - t:.1f}s")


# ---- candidate parts ---------------------------------------------------------------------------
def _knn(q, ref, k=K, **kw):
    from waferscope.search.open_set import _knn_mean

    return _knn_mean(q, ref, k, **kw)


def _std(tr, *others):
    mu, sd = tr.mean(0), tr.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [np.clip((x - mu) / sd, -8, 8).astype(np.float32) for x in (tr, *others)]


def knn_chosen(q, chosen, ref, rlab, rel=False):
    out = np.full(len(q), np.inf)
    for c in np.unique(chosen):
        sel, mine = chosen == c, np.flatnonzero(rlab == c)
        d, near = _knn(q[sel], ref[mine], with_index=True)
        if rel:
            spread = _knn(ref[mine], ref[mine], skip_self=True)
            d = d / np.maximum(spread[near].mean(1), 1e-6)
        out[sel] = d
    return out


def knn_min(q, ref, rlab, ncls):
    out = np.full(len(q), np.inf)
    for c in range(ncls):
        out = np.minimum(out, _knn(q, ref[rlab == c]))
    return out


def maha(q, ref, rlab, ncls):
    from sklearn.covariance import LedoitWolf

    out = np.zeros((len(q), ncls))
    for c in range(ncls):
        lw = LedoitWolf().fit(ref[rlab == c].astype(np.float64))
        d = q - lw.location_
        out[:, c] = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, lw.precision_, d), 0))
    return out


def neg_log_tails(q, ref_c, cols):
    """(N, cols) -log two-sided empirical tail probability of each column among one class's references."""
    r = np.sort(ref_c[:, cols], axis=0)
    n = len(r)
    out = np.zeros((len(q), len(cols)))
    for j, col in enumerate(cols):
        lo = (np.searchsorted(r[:, j], q[:, col], side="right") + 1) / (n + 2)
        hi = (n - np.searchsorted(r[:, j], q[:, col], side="left") + 1) / (n + 2)
        out[:, j] = -np.log(np.minimum(1, 2 * np.minimum(lo, hi)))
    return out


def tail(q, chosen, ref, rlab, cols, top=1):
    out = np.zeros(len(q))
    for c in np.unique(chosen):
        sel = chosen == c
        out[sel] = np.sort(neg_log_tails(q[sel], ref[rlab == c], cols), 1)[:, -top:].sum(1)
    return out


def tail_min_class(q, ref, rlab, ncls, cols):
    return np.min([tail(q, np.full(len(q), c), ref, rlab, cols) for c in range(ncls)], axis=0)


def iforest(q, chosen, ref, rlab, cols):
    from sklearn.ensemble import IsolationForest

    out = np.zeros(len(q))
    for c in np.unique(chosen):
        sel = chosen == c
        f = IsolationForest(n_estimators=100, random_state=0).fit(ref[rlab == c][:, cols])
        out[sel] = -f.score_samples(q[sel][:, cols])
    return out


def candidate_parts(model, classes, ftr, ltr, fq, gtr, gq, proba) -> dict:
    """Candidate raw parts for wafers with raw ``extended`` features fq, ``grid`` gq, probabilities proba."""
    from waferscope.features.handcrafted import feature_names
    from waferscope.search.discover import _reference_signals

    en = {n: i for i, n in enumerate(feature_names("extended"))}
    gn = {n: i for i, n in enumerate(feature_names("grid"))}
    s14, s6 = [en[n] for n in S14], [en[n] for n in S6]
    s29 = s14 + [en[n] for n in MORE_SHAPE]
    g6, g14 = [gn[n] for n in G6], [gn[n] for n in G14]
    ref = _reference_signals(model.embedding, ftr)["features"]  # what the scorer's references are
    z = _reference_signals(model.embedding, fq)["features"]
    rlab = np.asarray([classes.index(c) for c in ltr])
    chosen, nc = proba.argmax(1), len(classes)
    gr, gz = _std(gtr, gq)
    mu = ref.mean(0)
    _, s, vt = np.linalg.svd(ref - mu, full_matrices=False)
    keep = int(np.searchsorted(np.cumsum(s ** 2) / (s ** 2).sum(), 0.99)) + 1
    w = vt[:keep].T / (s[:keep] / np.sqrt(len(ref)))
    wr, wz = ((ref - mu) @ w).astype(np.float32), ((z - mu) @ w).astype(np.float32)
    p = {"s14_min": knn_min(z[:, s14], ref[:, s14], rlab, nc),
         "s14_chosen": knn_chosen(z[:, s14], chosen, ref[:, s14], rlab),
         "s14_rel": knn_chosen(z[:, s14], chosen, ref[:, s14], rlab, rel=True),
         "s6_chosen": knn_chosen(z[:, s6], chosen, ref[:, s6], rlab),
         "s6_rel": knn_chosen(z[:, s6], chosen, ref[:, s6], rlab, rel=True)}
    m = maha(z, ref, rlab, nc)
    p["maha_chosen"], p["maha_min"] = m[np.arange(len(z)), chosen], m.min(1)
    m = maha(z[:, s14], ref[:, s14], rlab, nc)
    p["maha14_chosen"], p["maha14_min"] = m[np.arange(len(z)), chosen], m.min(1)
    p["white_any"] = _knn(wz, wr)
    p["white_chosen"] = knn_chosen(wz, chosen, wr, rlab)
    p["white_rel"] = knn_chosen(wz, chosen, wr, rlab, rel=True)
    p["tail14_chosen"] = tail(z, chosen, ref, rlab, s14)
    p["tail_all_chosen"] = tail(z, chosen, ref, rlab, list(range(ref.shape[1])))
    p["grid_rel"] = knn_chosen(gz, chosen, gr, rlab, rel=True)
    p["grid6_min"] = knn_min(gz[:, g6], gr[:, g6], rlab, nc)
    p["grid14_chosen"] = knn_chosen(gz[:, g14], chosen, gr[:, g14], rlab)
    p["tail14_top3"] = tail(z, chosen, ref, rlab, s14, top=3)
    p["tail14_sum"] = tail(z, chosen, ref, rlab, s14, top=len(s14))
    p["tail6_chosen"] = tail(z, chosen, ref, rlab, s6)
    p["tail14_min"] = tail_min_class(z, ref, rlab, nc, s14)
    p["tail29_chosen"] = tail(z, chosen, ref, rlab, s29)
    p["grid_tail14"] = tail(gz, chosen, gr, rlab, g14)
    p["if14_chosen"] = iforest(z, chosen, ref, rlab, s14)
    _, near = _knn(z, ref, with_index=True)
    p["disagree_feat"] = 1 - (rlab[near] == chosen[:, None]).mean(1)
    top2 = np.sort(proba, 1)[:, -2:]
    p["margin"] = 1 - (top2[:, 1] - top2[:, 0])
    return p


def raw(folds) -> None:
    """Fit the task's models as the command does; keep the default's and the candidates' raw parts."""
    from sklearn.metrics import roc_auc_score

    from waferscope.data.preprocess import grouped_stratified_kfold
    from waferscope.search.discover import fit_open_set, open_set_split

    c = np.load(WORK / "cache.npz")
    ext, grid, labels, lots = c["ext"], c["grid"], c["labels"], c["lots"]
    (WORK / "raw").mkdir(parents=True, exist_ok=True)
    for fold, (arch, qry) in enumerate(grouped_stratified_kfold(labels, lots, n_splits=5, seed=0)):
        if fold not in folds:
            continue
        for hidden in CLASSES:
            t = time.time()
            known = arch[labels[arch] != hidden]
            model = fit_open_set(ext[known], labels[known], lots[known], seed=0)
            scorer, classes = model.scorer, list(model.scorer.classes_)
            tr, cal = open_set_split(labels[known], lots[known], 0)
            score, _, sig = model.score(ext[qry])
            out = {"cal_default": scorer.cal_parts_, "q_default": scorer.raw_parts(sig), "q_label": labels[qry],
                   "q_closed": np.asarray(classes)[sig["proba"].argmax(1)], "classes": np.asarray(classes),
                   "q_score": score}
            args = (model, classes, ext[known][tr], labels[known][tr])
            pc = candidate_parts(*args, ext[known][cal], grid[known][tr], grid[known][cal],
                                 model.classifier.predict_proba(ext[known][cal]))
            pq = candidate_parts(*args, ext[qry], grid[known][tr], grid[qry], sig["proba"])
            for k in pc:
                out[f"cal_{k}"], out[f"q_{k}"] = pc[k], pq[k]
            np.savez(WORK / "raw" / f"f{fold}_{hidden}.npz", **out)
            print(f"fold {fold} hidden {hidden}: default AUROC {roc_auc_score(labels[qry] == hidden, score):.4f} "
                  f"({time.time() - t:.1f} s)", flush=True)


# ---- offline scoring -----------------------------------------------------------------------------
def load_task(fold, hidden) -> dict:
    from waferscope.search.open_set import _ecdf

    z = np.load(WORK / "raw" / f"f{fold}_{hidden}.npz")
    cal = {p: z["cal_default"][:, i] for i, p in enumerate(DEFAULT)}
    q = {p: z["q_default"][:, i] for i, p in enumerate(DEFAULT)}
    for k in z.files:
        if k.startswith("cal_") and k != "cal_default":
            cal[k[4:]], q[k[4:]] = z[k], z["q_" + k[4:]]
    big = np.finfo(np.float64).max
    fin = lambda x: np.where(np.isfinite(x), x, big)  # noqa: E731 - as the scorer's ranks
    return {"R": {p: _ecdf(fin(cal[p]), fin(q[p])) for p in q}, "RC": {p: _ecdf(fin(cal[p]), fin(cal[p])) for p in q},
            "y": z["q_label"] == hidden, "label": z["q_label"], "closed": z["q_closed"], "classes": list(z["classes"])}


def evaluate(tasks, combo, rate=0.05):
    """(mean AUROC, mean macro-F1 gap, per-task AUROCs) of the rank mean of ``combo``."""
    from sklearn.metrics import f1_score, roc_auc_score

    au, gap = [], []
    for t in tasks:
        s = np.mean([t["R"][p] for p in combo], axis=0)
        thr = np.quantile(np.mean([t["RC"][p] for p in combo], axis=0), 1 - rate)
        au.append(roc_auc_score(t["y"], s))
        k = ~t["y"]
        opened = np.where(s > thr, "unknown", t["closed"]).astype(object)
        f1 = [f1_score(t["label"][k], pred[k], labels=t["classes"], average="macro", zero_division=0)
              for pred in (t["closed"], opened)]
        gap.append(f1[1] - f1[0])
    return float(np.mean(au)), float(np.mean(gap)), au


def combos(folds) -> None:
    tasks = [load_task(f, c) for f in folds for c in CLASSES]
    new = [p for p in tasks[0]["R"] if p not in DEFAULT]
    print("alone (mean, then per hidden class):")
    for p in DEFAULT + new:
        a, _, per = evaluate(tasks, [p])
        print(f"  {p:16s} {a:.4f}  " + " ".join(f"{x:.2f}" for x in np.reshape(per, (len(folds), 8)).mean(0)))
    cands = [DEFAULT + [n] for n in new] + [DEFAULT + list(ab) for ab in itertools.combinations(new, 2)]
    cands += [[p for p in DEFAULT if p != d] + [n] for d in DEFAULT for n in new]
    cands += [[p for p in DEFAULT if p != d] + list(ab) for d in DEFAULT for ab in itertools.combinations(new, 2)]
    res = sorted(((*evaluate(tasks, c), c) for c in [DEFAULT] + cands), key=lambda r: -r[0])
    print(f"{len(res)} combinations; top 60 (* : macro-F1 gap >= -0.020)")
    for a, g, per, c in res[:60]:
        print(f"  {a:.4f} {g:+.4f}{'*' if g >= -0.020 else ' '} +{[p for p in c if p not in DEFAULT]} "
              f"-{[p for p in DEFAULT if p not in c]}  " + " ".join(f"{x:.2f}" for x in np.reshape(per, (len(folds), 8)).mean(0)))


def confirm(folds) -> None:
    """The default and the candidates: per fold, mean, per hidden class, F1 gap."""
    tasks = [load_task(f, c) for f in folds for c in CLASSES]
    for name, combo in {"default": DEFAULT, **CANDIDATES}.items():
        a, g, per = evaluate(tasks, combo)
        per = np.reshape(per, (len(folds), 8))
        print(f"{name:8s} mean {a:.4f}  F1 gap {g:+.4f}  per fold " + " / ".join(f"{x:.4f}" for x in per.mean(1))
              + "  per class " + " / ".join(f"{c} {x:.3f}" for c, x in zip(CLASSES, per.mean(0))), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["cache", "raw", "combos", "confirm"])
    ap.add_argument("--folds", default="0")
    a = ap.parse_args()
    fs = [int(f) for f in a.folds.split(",")]
    {"cache": lambda: cache(), "raw": lambda: raw(fs), "combos": lambda: combos(fs), "confirm": lambda: confirm(fs)}[a.step]()
