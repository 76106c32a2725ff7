"""Candidate new patterns: the wafers an open-set model abstains on, clustered (issue #31).

:func:`fit_open_set` trains the pieces on labelled wafers' features (the labelled wafers split by lot
into a training part and a calibration part): the ``metric`` search head, a gradient-boosted
classifier (scikit-learn's ``HistGradientBoostingClassifier``) and the
:class:`~waferscope.search.open_set.OpenSetScorer` calibrated on the held-out lots.
:func:`discover` scores an archive with them and clusters its abstained wafers with HDBSCAN;
:func:`write_discovery` writes the CSVs, one montage PNG per cluster and an HTML page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from waferscope.errors import ConfigError, DataError
from waferscope.utils import atomic_path


@dataclass
class OpenSetModel:
    embedding: object  # a fitted MetricEmbedding
    classifier: object  # fitted sklearn classifier on the raw features
    scorer: object  # fitted OpenSetScorer

    def score(self, feat: np.ndarray):
        """(open-set scores, predictions with ``unknown``, embedding vectors) of raw features."""
        vectors = self.embedding.transform(None, raw=feat)
        proba = self.classifier.predict_proba(feat)
        return self.scorer.score(proba, vectors), self.scorer.predict(proba, vectors).astype(str), vectors


def fit_open_set(feat: np.ndarray, labels, lots, seed: int = 0, abstain_rate: float = 0.05) -> OpenSetModel:
    """Train the open-set model on labelled wafers' ``extended`` features (lot-grouped 80/20 split into
    training and calibration; without lot names each wafer is its own group)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from waferscope.data.preprocess import grouped_stratified_kfold
    from waferscope.search.embed import MetricEmbedding
    from waferscope.search.open_set import OpenSetScorer

    labels = np.asarray(labels).astype(str)
    lots = np.asarray(lots).astype(str)
    if len(np.unique(labels)) < 2:
        raise ConfigError("the open-set model learns the known classes from labelled wafers of at least two classes")
    groups = np.where(lots == "", np.char.add("wafer-", np.arange(len(lots)).astype(str)), lots)
    if len(np.unique(groups)) < 5:  # too few lots to hold a fifth of them out: wafers are the groups
        groups = np.arange(len(lots)).astype(str)
    tr, cal = next(iter(grouped_stratified_kfold(labels, groups, n_splits=5, seed=seed)))
    emb = MetricEmbedding(source="labels", seed=seed).fit(None, raw=feat[tr], labels=labels[tr])
    clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed).fit(feat[tr], labels[tr])
    scorer = OpenSetScorer(abstain_rate=abstain_rate).fit(
        emb.transform(None, raw=feat[tr]), labels[tr], clf.predict_proba(feat[cal]),
        emb.transform(None, raw=feat[cal]), clf.classes_.astype(str))
    return OpenSetModel(emb, clf, scorer)


def discover(archive, fit_on=None, seed: int = 0, abstain_rate: float = 0.05, min_cluster_size: int = 10,
             n_jobs: int = -1, progress: bool = False) -> pd.DataFrame:
    """Per archive wafer: id, lot, label, predicted class (``unknown`` when abstained), open-set score
    and cluster (-1: not abstained or in no cluster). The known classes are learnt from ``fit_on``
    (default: the archive's own labelled wafers)."""
    from waferscope.features.handcrafted import extract_features
    from waferscope.search.open_set import UNKNOWN, discover_clusters

    if archive.kind != "wafer":
        raise DataError(f"discover needs wafer maps; this data set holds {archive.kind}s", archive.name)
    feat = extract_features(archive.maps, n_jobs=n_jobs, progress=progress, feature_set="extended")
    if fit_on is None:
        keep = archive.is_labelled
        fit_feat, fit_labels = feat[keep], archive.labels[keep]
        fit_lots = archive.meta["lot"].fillna("").astype(str).to_numpy()[keep]
    else:
        fit_on = fit_on.labelled()
        fit_feat = extract_features(fit_on.maps, n_jobs=n_jobs, progress=progress, feature_set="extended")
        fit_labels, fit_lots = fit_on.labels, fit_on.meta["lot"].fillna("").astype(str).to_numpy()
    model = fit_open_set(fit_feat, fit_labels, fit_lots, seed=seed, abstain_rate=abstain_rate)
    score, pred, _ = model.score(feat)
    out = pred == UNKNOWN
    mu, sd = fit_feat.mean(0), fit_feat.std(0)
    # clustered on the standardised features, not the metric head's vectors: the head was trained to
    # collapse the known classes and measured worse at keeping an unseen one together (docs/search.md)
    z = np.clip((feat[out] - mu) / np.where(sd > 1e-12, sd, 1.0), -8, 8)
    cluster = np.full(len(archive), -1)
    cluster[out] = discover_clusters(z, min_cluster_size=min_cluster_size)
    return pd.DataFrame({"id": archive.ids.astype(str), "lot": archive.meta["lot"].fillna("").astype(str).to_numpy(),
                         "label": archive.labels.astype(str), "predicted": pred, "open_set_score": score.round(4),
                         "cluster": cluster})


def _montage(maps, titles, path: Path, cols: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from waferscope.data.render import render_map

    rows = max(1, -(-len(maps) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(maps):
            ax.imshow(render_map(maps[i]), interpolation="nearest")
            ax.set_title(titles[i], fontsize=6)
        else:
            ax.axis("off")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)


def write_discovery(archive, table: pd.DataFrame, out: Path, per_cluster: int = 24) -> Path:
    """``out``/wafers.csv (the abstained wafers), clusters.csv, cluster_K.png and index.html."""
    def write_text_atomic(path: Path, text: str) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    abstained = table[table["predicted"] == "unknown"]
    write_text_atomic(out / "wafers.csv", abstained.to_csv(index=False))
    rows, sections = [], []
    for c in sorted(set(abstained["cluster"]) - {-1}):
        members = abstained[abstained["cluster"] == c].sort_values("open_set_score", ascending=False)
        lots = members["lot"].replace("", "(no lot)").value_counts()
        known = members["label"][members["label"] != ""].value_counts()
        rows.append({"cluster": int(c), "wafers": len(members), "lots": len(lots),
                     "top_lots": "; ".join(f"{k} ({v})" for k, v in lots.head(5).items()),
                     "labels_in_archive": "; ".join(f"{k} ({v})" for k, v in known.head(3).items())})
        show = members.head(per_cluster)
        pos = show.index.to_numpy()
        _montage([archive.maps[i] for i in pos], [f"{r.lot or '?'}\n{str(r.id)[:18]}" for r in show.itertuples()],
                 out / f"cluster_{c}.png")
        sections.append(f"<h2>Cluster {c}: {len(members)} wafers from {len(lots)} lots</h2>"
                        f"<p>Lots: {html.escape(rows[-1]['top_lots'])}"
                        + (f"<br>Labels already in the archive: {html.escape(rows[-1]['labels_in_archive'])}"
                           if rows[-1]["labels_in_archive"] else "")
                        + f"</p><img src='cluster_{c}.png' alt='cluster {c}'>")
    clusters = pd.DataFrame(rows, columns=["cluster", "wafers", "lots", "top_lots", "labels_in_archive"])
    write_text_atomic(out / "clusters.csv", clusters.to_csv(index=False))
    noise = int((abstained["cluster"] == -1).sum())
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>waferscope discover</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}</style></head><body>"
            f"<h1>Candidate new patterns</h1><p>{len(table)} wafers scored; {len(abstained)} fit none of the known "
            f"classes (abstained); {len(clusters)} clusters of them, {noise} in no cluster. Name a cluster and "
            "label its wafers to train on it as a class.</p>" + "".join(sections) + "</body></html>\n")
    write_text_atomic(out / "index.html", page)
    return out
