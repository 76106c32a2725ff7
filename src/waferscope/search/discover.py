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
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from waferscope.errors import ConfigError, DataError
from waferscope.utils import atomic_path


OPEN_SET_JSON = "open_set.json"  # beside a classifier run's model.json: the abstention travels with the model
OPEN_SET_ARRAYS = "open_set.safetensors"
# 2 (2026-12-06): the scorer's features are computed on a named view of each map (``orient`` in the JSON;
# "canonical", the view the bundled gbm reads, for every scorer fitted since). Format 1 files were
# fitted on the maps as given and still load as such; a waferscope that knows only format 1 refuses a
# format 2 file rather than feed it the wrong view.
# 3 (2026-12-06, later): the default parts add shape_knn and relative_knn, whose references carry their class
# (scorer.feature_ref_labels) and local spread (scorer.feature_ref_spread); formats 1 and 2 still load (their
# parts need neither), a waferscope that knows only 1-2 refuses a format 3 file instead of failing on a part
# it does not know.
# 4 (2026-12-06, evening): the default parts swap feature_knn for shape_tail (fifth screen), which reads the
# same references and records its descriptors (scorer "tail_features", "tail_top"); formats 1-3 still load, a
# waferscope that knows only 1-3 refuses a format 4 file instead of failing on a part it does not know.
OPEN_SET_FORMAT = 4
READABLE_FORMATS = (1, 2, 3, 4)
# the view of each map the scorer's wafer features are computed on: the canonical rotation/flip, as
# the default classifier gbm computes them, so that the scorer reuses gbm's features instead of
# extracting them a second time (OpenSetModel.classify)
FEATURE_ORIENT = "canonical"
DISCOVERED_MAPS = "wafers.parquet"  # in a `discover` folder: the abstained wafers, row for row with wafers.csv


@dataclass
class OpenSetModel:
    """The pieces that decide ``unknown``.

    The ``metric`` embedding (and its feature standardisation), the fitted
    :class:`~waferscope.search.open_set.OpenSetScorer`, the classifier whose probabilities it reads
    (a per-fold stand-in, or None when bound to a saved classifier run that supplies them), the
    bundled detector's name when the scorer uses the ``detector`` part, and the view of each map its
    ``extended`` wafer features are computed on (``orient``: ``"canonical"``, or ``"none"`` for
    scorers saved before 2026-12-06).
    """

    embedding: object  # a fitted MetricEmbedding
    scorer: object  # fitted OpenSetScorer
    classifier: object = None  # sklearn classifier on the raw features, or None (a run's classifier)
    detector: str | None = None
    orient: str = FEATURE_ORIENT

    def feature_view(self) -> tuple[str, str]:
        """Return (feature set, orientation) of the wafer features the scorer reads."""
        return "extended", self.orient

    def features(self, maps, n_jobs: int = -1, progress: bool = False) -> np.ndarray:
        """Return the wafer features the scorer reads, of ``maps`` (:meth:`feature_view`)."""
        return open_set_features(maps, n_jobs=n_jobs, progress=progress, orient=self.orient)

    def signals(self, feat: np.ndarray, proba: np.ndarray | None = None, maps=None) -> dict:
        """Return the scorer's inputs for wafers with raw wafer features ``feat`` (:meth:`features`).

        ``proba``: the classifier's probabilities; computed with :attr:`classifier` when not given.
        """
        if proba is None:
            proba = self.classifier.predict_proba(feat)
        need = self.scorer.needs()
        sig = {"proba": np.asarray(proba, dtype=np.float64),
               "metric": self.embedding.transform(None, raw=feat) if "metric" in need else None,
               # the embedding's own standardisation (fitted on the training part), clipped like it
               "features": _standardised(self.embedding, feat) if "features" in need else None,
               "detector": None}
        if "detector" in need:
            sig["detector"] = _detector_scores(self.detector, maps)
        return sig

    def score(self, feat: np.ndarray, proba: np.ndarray | None = None, maps=None):
        """(open-set scores, predictions with ``unknown``, signals) of wafers with raw features ``feat`` (:meth:`features`)."""
        sig = self.signals(feat, proba, maps)
        score = self.scorer.score(sig)
        return score, self.scorer.predict(sig, score).astype(str), sig

    def abstain(self, dataset, proba: np.ndarray, n_jobs: int = 1,
                features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (open-set scores, class names with ``unknown``) of a data set's wafers.

        Given the classifier's own probabilities ``proba`` (the ones the scorer was calibrated on).
        ``features``: the wafers' features in :meth:`feature_view` when already computed (else here).
        """
        if dataset.kind != "wafer":
            raise DataError(f"the open-set scorer reads wafer maps; this data set holds {dataset.kind}s", dataset.name)
        if features is None:
            features = self.features(dataset.maps, n_jobs=n_jobs)
        elif np.shape(features) != (len(dataset), len(self.embedding.mean_)):
            raise ConfigError(f"the open-set scorer reads {len(self.embedding.mean_)} features per wafer for "
                              f"{len(dataset)} wafers; was given an array of shape {np.shape(features)}")
        score, names, _ = self.score(features, proba, maps=dataset if "detector" in self.scorer.parts else None)
        return score, names

    def classify(self, classifier, dataset, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (the classifier's own probabilities, open-set scores, class names with ``unknown``).

        When the classifier reads the very wafer features the scorer reads (its tags offer
        ``wafer_features`` and its :meth:`feature_view` is this model's: the bundled ``gbm``), they
        are computed once and serve both; otherwise each computes what it needs.
        """
        if dataset.kind != "wafer":  # before the classifier's work
            raise DataError(f"the open-set scorer reads wafer maps; this data set holds {dataset.kind}s", dataset.name)
        from waferscope.base import Estimator

        feat = None
        # (an ONNX export on the Dask workers is no Estimator: it declares nothing)
        if (isinstance(classifier, Estimator) and classifier.get_tags().wafer_features
                and tuple(classifier.feature_view()) == self.feature_view()):
            feat = classifier.features(dataset)
            proba = classifier.proba_from_features(feat)
        else:
            proba = classifier.predict_proba(dataset)
        score, names = self.abstain(dataset, proba, n_jobs=n_jobs, features=feat)
        return proba, score, names


def _detector_scores(name: str | None, maps) -> np.ndarray:
    from waferscope.data import WaferDataset
    from waferscope.models.detectors import load_default

    if maps is None:
        raise ConfigError("the open-set scorer's detector part needs the wafer maps")
    ds = maps if isinstance(maps, WaferDataset) else WaferDataset.from_maps(list(maps))
    return np.asarray(load_default(name or "pattern_contrast").score(ds).scores, dtype=np.float64)


def open_set_features(maps, n_jobs: int = -1, progress: bool = False, orient: str = FEATURE_ORIENT) -> np.ndarray:
    """Return the ``extended`` wafer features an open-set model reads (on the ``orient`` view of each map)."""
    from waferscope.features.handcrafted import extract_features

    return extract_features(maps, n_jobs=n_jobs, progress=progress, feature_set="extended", orient=orient)


def open_set_split(labels, lots, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training, calibration) positions.

    A lot-grouped, class-stratified 80/20 split (without lot names, or with fewer than five
    lots, each wafer is its own group).
    """
    from waferscope.data.preprocess import grouped_stratified_kfold

    labels = np.asarray(labels).astype(str)
    lots = np.asarray(lots).astype(str)
    groups = np.where(lots == "", np.char.add("wafer-", np.arange(len(lots)).astype(str)), lots)
    if len(np.unique(groups)) < 5:  # too few lots to hold a fifth of them out: wafers are the groups
        groups = np.arange(len(lots)).astype(str)
    return next(iter(grouped_stratified_kfold(labels, groups, n_splits=5, seed=seed)))


def fit_scorer(feat_tr, labels_tr, feat_cal, proba_cal, classes, seed: int = 0, abstain_rate: float = 0.05,
               parts: tuple[str, ...] | None = None, maps_cal=None, detector: str | None = None) -> OpenSetModel:
    """Return the embedding and the calibrated scorer, with no classifier attached.

    The embedding is trained on the training part; the scorer is calibrated on the calibration
    part's classifier probabilities ``proba_cal`` (columns in ``classes`` order).
    """
    from waferscope.search.embed import MetricEmbedding
    from waferscope.search.open_set import DEFAULT_PARTS, OpenSetScorer

    emb = MetricEmbedding(source="labels", seed=seed).fit(None, raw=feat_tr, labels=labels_tr)
    scorer = OpenSetScorer(parts=parts or DEFAULT_PARTS, abstain_rate=abstain_rate, seed=seed)
    model = OpenSetModel(emb, scorer, None, detector)
    train = _reference_signals(emb, feat_tr)
    scorer.fit(train, labels_tr, model.signals(feat_cal, proba_cal, maps_cal), [str(c) for c in classes])
    return model


def _standardised(emb, feat):
    from waferscope.search.embed import FeatureEmbedding

    return FeatureEmbedding.transform(emb, None, raw=feat)


def _reference_signals(emb, feat) -> dict:
    """Return the signals the scorer's kNN parts measure distances to: metric vectors, standardised features."""
    return {"metric": emb.transform(None, raw=feat), "features": _standardised(emb, feat)}


def fit_open_set(feat: np.ndarray, labels, lots, seed: int = 0, abstain_rate: float = 0.05,
                 parts: tuple[str, ...] | None = None, maps=None) -> OpenSetModel:
    """Train the open-set model on labelled wafers' ``extended`` features.

    :func:`open_set_split` into training and calibration: the metric head and a gradient-boosted
    stand-in classifier on the training part, the scorer calibrated on the other. ``maps``: the
    wafers (for a ``detector`` part).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    labels = np.asarray(labels).astype(str)
    if len(np.unique(labels)) < 2:
        raise ConfigError("the open-set model learns the known classes from labelled wafers of at least two classes")
    tr, cal = open_set_split(labels, lots, seed)
    clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed).fit(feat[tr], labels[tr])
    model = fit_scorer(feat[tr], labels[tr], feat[cal], clf.predict_proba(feat[cal]), clf.classes_.astype(str),
                       seed=seed, abstain_rate=abstain_rate, parts=parts,
                       maps_cal=None if maps is None else [maps[i] for i in cal])
    model.classifier = clf
    return model


def train_with_open_set(classifier, dataset, seed: int = 0, abstain_rate: float = 0.05, n_jobs: int = -1,
                        progress: bool = False):
    """Fit ``classifier`` (an unfitted waferscope classifier) and an open-set model for it.

    The labelled wafers are split by lot (:func:`open_set_split`); the classifier and the metric
    head learn from the training lots (and any unlabelled wafers), the scorer is calibrated on
    the classifier's probabilities for the held-out lots. Returns (fitted classifier,
    OpenSetModel).
    """
    if dataset.kind != "wafer":  # the scorer reads wafer features; before any training
        raise DataError(f"an open-set scorer reads wafer maps; this data set holds {dataset.kind}s", dataset.name)
    lab = np.flatnonzero(dataset.is_labelled)
    labels = dataset.labels.astype(str)
    if len(np.unique(labels[lab])) < 2:
        raise ConfigError("an open-set scorer learns the known classes from labelled wafers of at least two classes")
    lots = dataset.meta["lot"].fillna("").astype(str).to_numpy() if "lot" in dataset.meta else np.full(len(dataset), "")
    tr_l, cal_l = open_set_split(labels[lab], lots[lab], seed)
    cal = lab[cal_l]
    fit_idx = np.setdiff1d(np.arange(len(dataset)), cal)
    classifier.fit(dataset.subset(fit_idx))
    feat = open_set_features(dataset.subset(lab).maps, n_jobs=n_jobs, progress=progress)
    proba_cal = classifier.predict_proba(dataset.subset(cal))
    model = fit_scorer(feat[tr_l], labels[lab][tr_l], feat[cal_l], proba_cal, classifier.classes_, seed=seed,
                       abstain_rate=abstain_rate)
    return classifier, model


def crossfit_open_set(fit_classifier, dataset, classes, extra=None, n_splits: int = 5, seed: int = 0,
                      abstain_rate: float = 0.05, n_jobs: int = -1, progress: bool = False) -> OpenSetModel:
    """Fit an open-set model for a classifier trained on all labelled wafers, by cross-fitting.

    The classifier was already trained on *all* of ``dataset``'s labelled wafers
    (plus ``extra``, e.g. synthetic maps with no lots), so that no held-out lot is left to calibrate
    on: the calibration is cross-fitted instead. The labelled wafers are split into ``n_splits``
    lot-grouped, class-stratified folds; for each fold ``fit_classifier(training data)`` (the same
    recipe on the other folds + ``extra``) and the metric head learn without it, and the scorer's raw
    parts of its wafers (its out-of-fold calibration values) are computed with those models. The
    saved model has the metric head trained on all the labelled wafers and, as references, a seeded
    class-stratified ``(n_splits - 1) / n_splits`` share of them: as many as each fold's models had, so
    the kNN distances at prediction time are on the scale they were calibrated on.
    ``classes``: the final classifier's classes (every fold's classifier must give the same).
    """
    from waferscope.data import WaferDataset
    from waferscope.data.preprocess import grouped_stratified_kfold
    from waferscope.search.embed import MetricEmbedding
    from waferscope.search.open_set import DEFAULT_PARTS, OpenSetScorer

    classes = [str(c) for c in classes]
    lab = np.flatnonzero(dataset.is_labelled)
    labels = dataset.labels[lab].astype(str)
    lots = (dataset.meta["lot"].fillna("").astype(str).to_numpy()[lab] if "lot" in dataset.meta
            else np.full(len(lab), ""))
    groups = np.where(lots == "", np.char.add("wafer-", np.arange(len(lab)).astype(str)), lots)
    feat = open_set_features(dataset.subset(lab).maps, n_jobs=n_jobs, progress=progress)
    cal_parts = np.full((len(lab), len(DEFAULT_PARTS)), np.nan)
    for f, (tr, te) in enumerate(grouped_stratified_kfold(labels, groups, n_splits=n_splits, seed=seed)):
        train = dataset.subset(lab[tr])
        clf = fit_classifier(train if extra is None else WaferDataset.concat([extra, train]))
        if [str(c) for c in clf.classes_] != classes:
            raise ConfigError(f"fold {f}: the classifier learnt classes {list(clf.classes_)}, not {classes}")
        fold = fit_scorer(feat[tr], labels[tr], feat[te], clf.predict_proba(dataset.subset(lab[te])), classes,
                          seed=seed, abstain_rate=abstain_rate)
        cal_parts[te] = fold.scorer.cal_parts_
        if progress:
            print(f"open-set cross-fit: fold {f + 1}/{n_splits} done ({len(te)} calibration wafers)", flush=True)
    # references: the share of the labelled wafers one fold's models had (stratified, seeded)
    refs = next(iter(grouped_stratified_kfold(labels, np.arange(len(lab)).astype(str), n_splits=n_splits,
                                              seed=seed)))[0]
    emb = MetricEmbedding(source="labels", seed=seed).fit(None, raw=feat, labels=labels)
    scorer = OpenSetScorer(parts=DEFAULT_PARTS, abstain_rate=abstain_rate, seed=seed)
    train = _reference_signals(emb, feat[refs])
    scorer.fit_references(train, labels[refs], classes)
    scorer.calibrate(cal_parts)
    return OpenSetModel(emb, scorer, None, None)


def save_open_set(model: OpenSetModel, run_dir: Path) -> None:
    """Write the scorer and its embedding beside a classifier run's model.json (plain arrays + JSON)."""
    from safetensors.numpy import save_file

    from waferscope import __version__
    from waferscope.features.handcrafted import feature_names

    run_dir = Path(run_dir)
    s_arrays, s_extras = model.scorer.state()
    e_arrays, e_extras = model.embedding.state()
    arrays = {**{f"scorer.{k}": np.ascontiguousarray(v) for k, v in s_arrays.items()},
              **{f"embedding.{k}": np.ascontiguousarray(v) for k, v in e_arrays.items()}}
    doc = {"waferscope_open_set_format": OPEN_SET_FORMAT, "waferscope_version": __version__,
           "scorer": s_extras, "embedding": {"name": model.embedding.name, **e_extras},
           "detector": model.detector, "feature_names": list(feature_names("extended")), "orient": model.orient}
    with atomic_path(run_dir / OPEN_SET_ARRAYS) as tmp:
        save_file(arrays, str(tmp))
    with atomic_path(run_dir / OPEN_SET_JSON) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def has_open_set(run_dir) -> bool:
    """Return whether a classifier run has an open-set model beside it."""
    return run_dir is not None and (Path(run_dir) / OPEN_SET_JSON).is_file()


def load_open_set(run_dir: Path, classes=None) -> OpenSetModel:
    """Return the open-set model saved with a classifier run (:func:`save_open_set`).

    One clear error when the run has none, is damaged, or was fitted for other classes or
    another feature set.
    """
    from safetensors.numpy import load_file

    from waferscope.features.handcrafted import feature_names
    from waferscope.search.embed import MetricEmbedding
    from waferscope.search.open_set import OpenSetScorer

    run_dir = Path(run_dir)
    path = run_dir / OPEN_SET_JSON
    if not path.is_file():
        raise ConfigError(f"the classifier at {run_dir} has no open-set scorer, so it cannot abstain: train a run "
                          "with `waferscope classify train --open-set` (which calibrates one on held-out lots)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        arrays = load_file(str(run_dir / OPEN_SET_ARRAYS))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the open-set scorer: {exc}", path) from None
    if not isinstance(doc, dict) or doc.get("waferscope_open_set_format") not in READABLE_FORMATS:
        raise DataError(f"not an open-set scorer of format {' or '.join(map(str, READABLE_FORMATS))}; retrain the run "
                        "with --open-set", path)
    # format 1 scorers were fitted on the maps as given
    orient = doc.get("orient", "none") if doc["waferscope_open_set_format"] >= 2 else "none"
    from waferscope.data.preprocess import ORIENT

    if orient not in ORIENT:
        raise DataError(f"damaged open-set scorer: orient {orient!r} is none of {', '.join(ORIENT)}", path)
    if doc.get("feature_names") != list(feature_names("extended")):
        raise ConfigError(f"{path}: the open-set scorer was fitted on another feature set than this waferscope "
                          "computes; retrain the run with --open-set")
    pick = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
    scorer = OpenSetScorer.from_state(pick("scorer."), doc.get("scorer") or {}, path)
    try:
        emb = MetricEmbedding.from_state(pick("embedding."), doc.get("embedding") or {})
    except KeyError as exc:
        raise DataError(f"damaged open-set embedding: lacks {exc.args[0]}", path) from None
    if classes is not None and list(scorer.classes_) != [str(c) for c in classes]:
        raise ConfigError(f"{path}: the open-set scorer knows classes {list(scorer.classes_)}, the classifier "
                          f"{[str(c) for c in classes]}; retrain the run with --open-set")
    return OpenSetModel(emb, scorer, None, doc.get("detector"), orient)


def discover(archive, fit_on=None, seed: int = 0, abstain_rate: float = 0.05, min_cluster_size: int | None = None,
             n_jobs: int = -1, progress: bool = False, min_samples: int | None = None,
             selection: str | None = None) -> pd.DataFrame:
    """Per archive wafer: id, lot, label, predicted class (``unknown`` when abstained).

    Open-set score and cluster (-1: not abstained or in no cluster). The known classes are learnt
    from ``fit_on`` (default: the archive's own labelled wafers). HDBSCAN settings: ``None`` takes
    the measured defaults of :mod:`waferscope.search.open_set`.
    """
    from waferscope.search import open_set as os_

    if archive.kind != "wafer":
        raise DataError(f"discover needs wafer maps; this data set holds {archive.kind}s", archive.name)
    feat = open_set_features(archive.maps, n_jobs=n_jobs, progress=progress)
    if fit_on is None:
        keep = archive.is_labelled
        fit_feat, fit_labels = feat[keep], archive.labels[keep]
        fit_lots = archive.meta["lot"].fillna("").astype(str).to_numpy()[keep]
    else:
        fit_on = fit_on.labelled()
        fit_feat = open_set_features(fit_on.maps, n_jobs=n_jobs, progress=progress)
        fit_labels, fit_lots = fit_on.labels, fit_on.meta["lot"].fillna("").astype(str).to_numpy()
    model = fit_open_set(fit_feat, fit_labels, fit_lots, seed=seed, abstain_rate=abstain_rate)
    score, pred, _ = model.score(feat, maps=archive if "detector" in model.scorer.parts else None)
    out = pred == os_.UNKNOWN
    # clustered on the standardised features, not the metric head's vectors: the head was trained to
    # collapse the known classes and measured worse at keeping an unseen one together (docs/search.md)
    z = _standardised(model.embedding, feat[out])
    cluster = np.full(len(archive), -1)
    cluster[out] = os_.discover_clusters(
        z, min_cluster_size=os_.MIN_CLUSTER_SIZE if min_cluster_size is None else min_cluster_size,
        min_samples=os_.MIN_SAMPLES if min_samples is None else min_samples,
        selection=selection or os_.CLUSTER_SELECTION)
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
    """``out``/wafers.csv (the abstained wafers), wafers.parquet (their maps), clusters.csv.

    cluster_K.png and index.html.
    """
    def write_text_atomic(path: Path, text: str) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    abstained = table[table["predicted"] == "unknown"]
    write_text_atomic(out / "wafers.csv", abstained.to_csv(index=False))
    # the abstained wafers themselves, row for row with wafers.csv: a named cluster can be trained on
    # as a new class straight from this folder (cluster_as_class)
    from waferscope.data.io_parquet import write_parquet

    write_parquet(archive.subset(abstained.index.to_numpy()), out / DISCOVERED_MAPS)
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


def cluster_as_class(folder: Path, cluster: int, name: str):
    """Return the wafers of discovered cluster ``cluster`` in a :func:`write_discovery` folder.

    Labelled ``name`` (a new class to train on). One clear error for a missing folder or
    cluster.
    """
    from waferscope.data import load

    folder = Path(folder)
    if not name.strip() or name.strip() != name or name in ("unknown", ""):
        raise ConfigError(f"a new class needs a name (not blank, 'unknown' or padded with spaces), got {name!r}")
    csv_path, maps_path = folder / "wafers.csv", folder / DISCOVERED_MAPS
    if not csv_path.is_file() or not maps_path.is_file():
        raise DataError("not a `waferscope discover` output folder (it needs wafers.csv and "
                        f"{DISCOVERED_MAPS}; folders from before {DISCOVERED_MAPS} existed: rerun discover)", folder)
    try:
        table = pd.read_csv(csv_path, dtype={"id": str, "lot": str}, keep_default_na=False)
        clusters = table["cluster"].astype(int).to_numpy()
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise DataError(f"unreadable wafers.csv: {exc}", csv_path) from None
    maps = load(str(maps_path))
    if len(maps) != len(table) or list(maps.ids.astype(str)) != table["id"].astype(str).tolist():
        raise DataError(f"wafers.csv and {DISCOVERED_MAPS} do not list the same wafers (edited by hand?); "
                        "rerun discover", folder)
    pick = np.flatnonzero(clusters == int(cluster))
    if not len(pick):
        have = sorted(set(clusters.tolist()) - {-1})
        raise DataError(f"no cluster {cluster} here; the clusters are {have if have else 'none'}", csv_path)
    chosen = maps.subset(pick)
    # the cluster is one new class: no per-pattern multi-labels carried over from whatever it was
    return replace(chosen, labels=np.array([name] * len(chosen), dtype=object), multilabels=None)
