"""Open-set benchmark: leave one class out on lot-grouped real folds (issue #31).

For every lot-grouped fold (queries: one fold's lots; archive: the others) and every defect class
``c`` in turn, ``c`` is *hidden*: its wafers are removed from the archive, and everything is trained
on what remains, so ``c`` is a pattern nobody has named yet. The archive's known wafers are split
again by lot into a training part (80 %) and a calibration part (20 %):

- classifier: gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``, 100 rounds)
  on the 120 ``extended`` wafer features (of each map's canonical view, as the bundled ``gbm`` and the
  scorer compute them) of the training part (a stand-in for the bundled ``gbm``,
  which cannot be retrained per fold here in reasonable time);
- embedding: the search ``metric`` head fitted on the training part's labels;
- :class:`~waferscope.search.open_set.OpenSetScorer` calibrated on the calibration part
  (threshold: ``abstain_rate`` of the calibration wafers abstained).

On the query fold it reports: AUROC of the open-set score for hidden-class vs known-class wafers (and
of each of its parts alone); the known-class macro-F1 of the closed-set prediction and of the
open-set one (an abstained known wafer counts as a miss); the abstention rate on known wafers and the
share of hidden-class wafers abstained. Discovery: the abstained query wafers are clustered with
HDBSCAN (on the ``features`` standardised with the known archive wafers' mean/std, or the ``metric`` vectors) and the cluster best matching
the hidden class gives purity and recall (:func:`~waferscope.search.open_set.best_cluster`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from waferscope.errors import DataError

NONE_CLASS = "none"


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [np.clip((x - mu) / sd, -8, 8) for x in (train, *others)]


def open_set_folds(dataset, n_splits: int = 5, seed: int = 0, abstain_rate: float = 0.05, max_folds: int | None = None,
                   hidden: tuple[str, ...] | None = None, min_cluster_size: int | None = None, n_jobs: int = -1,
                   progress: bool = False, features: np.ndarray | None = None, parts: tuple[str, ...] | None = None,
                   min_samples: int | None = None, selection: str | None = None) -> pd.DataFrame:
    """One row per (fold, hidden class); see the module docstring.

    ``features``: precomputed open-set features of ``dataset.labelled()``
    (:func:`~waferscope.search.discover.open_set_features`: ``extended``, canonical view; else computed here).
    ``parts``: the scorer's parts (default :data:`~waferscope.search.open_set.DEFAULT_PARTS`);
    HDBSCAN's ``min_cluster_size``, ``min_samples``, ``selection``: None takes
    :mod:`waferscope.search.open_set`'s measured defaults.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    from waferscope.data.preprocess import grouped_stratified_kfold
    from waferscope.search.discover import fit_open_set, open_set_features
    from waferscope.search.open_set import best_cluster, discover_clusters

    ds = dataset.labelled()
    if not len(ds):
        raise DataError("the open-set benchmark needs labelled wafers; this data set has none", dataset.name)
    lots = ds.meta["lot"].astype(str).to_numpy()
    if (lots == "").all():
        raise DataError("open-set folds are grouped by lot; this data set has no lot names", dataset.name)
    labels = ds.labels.astype(str)
    feat = open_set_features(ds.maps, n_jobs=n_jobs, progress=progress) if features is None else np.asarray(features)
    hidden = tuple(hidden) if hidden else tuple(c for c in np.unique(labels) if c != NONE_CLASS)
    tasks = []
    for fold, (arch, qry) in enumerate(grouped_stratified_kfold(labels, lots, n_splits=n_splits, seed=seed)):
        if max_folds is not None and fold >= max_folds:
            break
        tasks += [(fold, arch, qry, c) for c in hidden]
    if progress:
        from tqdm import tqdm

        tasks = tqdm(tasks, desc="open set (fold × hidden class)", unit="task")
    from waferscope.search import open_set as os_

    cluster_args = {"min_cluster_size": os_.MIN_CLUSTER_SIZE if min_cluster_size is None else min_cluster_size,
                    "min_samples": os_.MIN_SAMPLES if min_samples is None else min_samples,
                    "selection": selection or os_.CLUSTER_SELECTION}
    rows = []
    for fold, arch, qry, c in tasks:
        known = arch[labels[arch] != c]
        model = fit_open_set(feat[known], labels[known], lots[known], seed=seed, abstain_rate=abstain_rate,
                             parts=parts, maps=None if "detector" not in (parts or ()) else [ds.maps[i] for i in known])
        scorer = model.scorer
        score, opened, sig = model.score(feat[qry], maps=[ds.maps[i] for i in qry] if "detector" in scorer.parts else None)
        unknown = labels[qry] == c
        closed = scorer.classes_[sig["proba"].argmax(1)]
        k = ~unknown
        row = {"fold": fold, "hidden": c, "n_hidden": int(unknown.sum()), "n_known": int(k.sum()),
               "auroc": float(roc_auc_score(unknown, score))}
        ranks = scorer.ranks(sig)
        for j, part in enumerate(scorer.parts):  # each part alone (its calibration rank; same order as raw)
            row[f"auroc_{part}"] = float(roc_auc_score(unknown, ranks[:, j]))
        row.update({
            "f1_closed": float(f1_score(labels[qry][k], closed[k], labels=scorer.classes_, average="macro", zero_division=0)),
            "f1_open": float(f1_score(labels[qry][k], opened[k], labels=scorer.classes_, average="macro", zero_division=0)),
            "abstain_known": float((opened[k] == "unknown").mean()),
            "abstain_hidden": float((opened[unknown] == "unknown").mean()) if unknown.any() else float("nan")})
        out = opened == "unknown"
        spaces = {"features": sig["features"] if sig["features"] is not None else _standardise(feat[known], feat[qry])[1],
                  "metric": sig["metric"] if sig["metric"] is not None else model.embedding.transform(None, raw=feat[qry])}
        for space, vec in spaces.items():
            clusters = discover_clusters(vec[out], **cluster_args)
            best = best_cluster(clusters, unknown[out])
            # recall against every hidden-class wafer of the fold, not only the abstained ones
            hits = best["recall"] * unknown[out].sum()
            row.update({f"{space}_purity": best["purity"], f"{space}_recall": float(hits / max(unknown.sum(), 1)),
                        f"{space}_clusters": int(clusters.max() + 1) if len(clusters) else 0,
                        f"{space}_cluster_size": best["size"]})
        rows.append(row)
        if progress:  # each task takes a while: show its result as soon as it is known
            tasks.write(f"fold {fold} hidden {c}: AUROC {row['auroc']:.3f}, macro-F1 open {row['f1_open']:.3f} "
                        f"vs closed {row['f1_closed']:.3f}, cluster purity {row['features_purity']:.2f} "
                        f"recall {row['features_recall']:.2f}")
    return pd.DataFrame(rows)


def summarise_open_set(table: pd.DataFrame) -> pd.DataFrame:
    """Mean per hidden class over folds, and the mean over classes as a last row ``mean``."""
    per = table.drop(columns=["fold"]).groupby("hidden", sort=True).mean(numeric_only=True)
    per.loc["mean"] = per.mean(numeric_only=True)
    return per.round(4).reset_index()
