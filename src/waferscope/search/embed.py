"""Wafer embeddings for similarity search: a data set → (N, D) float32 vectors, whatever the grid size.

Three candidates, chosen between by precision@10 on lot-grouped real folds (docs/search.md):

- ``features``: the 120 ``extended`` wafer features of the bundled ``gbm``
  (:func:`waferscope.features.handcrafted.extract_features`), computed on each map's own die grid,
  standardised with the archive's mean/std (robust: a constant feature gets std 1). Unsupervised, so
  it never saw the evaluation labels.
- ``cnn``: the penultimate layer (the input of the final ``fc``) of the bundled default CNN, averaged
  over the 8 rotations/flips and L2-normalised. NB: the bundled CNN was trained on WM-811K dev+dev2,
  so its figures on those folds are optimistic (it saw the labels of the query lots).
- ``raw``: the map resized to 32×32, fail dies = 1 (the baseline of issue #31).
- ``lda``: the standardised features projected by linear discriminant analysis fitted on labelled
  wafers (supervised; n_classes - 1 dims).
- ``metric`` (the default): a small MLP head on the standardised features trained with a supervised
  contrastive loss (:mod:`waferscope.search.metric`), L2-normalised, 32 dims. It learns from the
  labelled wafers it is fitted on; an archive without enough labels gets the head bundled with
  waferscope (trained on the labelled WM-811K dev + dev2 sets).

Each embedding is an object with ``fit(dataset)`` (learns what the archive fixes, e.g. the
standardisation), ``transform(dataset)`` and a pickle-free ``state()``/``from_state`` pair of
(name → ndarray, json dict), so an index stores it beside the vectors.
"""

from __future__ import annotations

import numpy as np

from waferscope.errors import ConfigError, DataError


def _wafer_maps(dataset, what: str):
    if dataset.kind != "wafer":
        raise DataError(f"{what} needs wafer maps; this data set holds {dataset.kind}s", dataset.name)
    from waferscope.data.dataset import validate_wafer_maps

    validate_wafer_maps(dataset.maps, dataset.name)
    return dataset.maps


class FeatureEmbedding:
    """The extended handcrafted features, standardised on the archive."""

    name = "features"

    def __init__(self, n_jobs: int = -1, progress: bool = False):
        self.n_jobs = n_jobs
        self.progress = progress

    def _raw(self, dataset) -> np.ndarray:
        from waferscope.features.handcrafted import extract_features

        # building an index fits on and then transforms the same data set: the features (the costly
        # part, ~20 ms a wafer) are computed once; the memo holds only the last data set seen
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is dataset:
            return memo[1]
        maps = _wafer_maps(dataset, "the features embedding")
        raw = extract_features(maps, n_jobs=self.n_jobs, progress=self.progress, feature_set="extended")
        self._memo = (dataset, raw)
        return raw

    def forget(self) -> None:
        """Drop the memo (and so the reference to the last data set)."""
        self._memo = None

    def fit(self, dataset, raw: np.ndarray | None = None) -> "FeatureEmbedding":
        """Learn the features' mean and standard deviation; return ``self``."""
        x = self._raw(dataset) if raw is None else raw
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 1e-12, std, 1.0)  # a constant feature carries no distance
        return self

    def transform(self, dataset, raw: np.ndarray | None = None) -> np.ndarray:
        """Return the standardised features of every wafer."""
        x = self._raw(dataset) if raw is None else raw
        z = (x - self.mean_) / self.std_
        # a feature far outside the archive's range (a huge cluster count) must not swamp the rest
        return np.clip(z, -8.0, 8.0).astype(np.float32)

    def state(self):
        """Return the (arrays, extras) to save."""
        return {"mean": self.mean_, "std": self.std_}, {}

    def signature_extra(self) -> str:
        """Return what else defines the vectors: the feature names."""
        from waferscope.features.handcrafted import feature_names

        return ",".join(feature_names("extended"))  # a new feature set silently changes every vector

    @classmethod
    def from_state(cls, arrays, extras) -> "FeatureEmbedding":
        """Rebuild a fitted embedding from :meth:`state`."""
        self = cls()
        self.mean_, self.std_ = np.asarray(arrays["mean"], float), np.asarray(arrays["std"], float)
        return self


class RawEmbedding:
    """The fail-die map itself, nearest-resized to ``size``×``size``."""

    name = "raw"

    def __init__(self, size: int = 32):
        self.size = int(size)

    def fit(self, dataset) -> "RawEmbedding":
        """Learn nothing; return ``self``."""
        return self

    def transform(self, dataset) -> np.ndarray:
        """Return the resized fail-die maps, flattened."""
        from waferscope.data.preprocess import resize_maps

        maps = _wafer_maps(dataset, "the raw embedding")
        return (resize_maps(maps, self.size) == 2).reshape(len(maps), -1).astype(np.float32)

    def state(self):
        """Return the (arrays, extras) to save."""
        return {}, {"size": self.size}

    def signature_extra(self) -> str:
        """Return what else defines the vectors."""
        return "fail-die nearest resize"

    @classmethod
    def from_state(cls, arrays, extras) -> "RawEmbedding":
        """Rebuild the embedding from :meth:`state`."""
        return cls(size=int(extras.get("size", 32)))


class CnnEmbedding:
    """The bundled CNN's penultimate layer.

    The input of its last ``nn.Linear`` (``fc``), caught by a forward pre-hook so the network
    code stays untouched.
    """

    name = "cnn"

    def __init__(self, bundled: str = "cnn_distilled", dihedral: bool = True, batch_size: int = 256):
        self.bundled = bundled
        self.dihedral = dihedral
        self.batch_size = batch_size

    def _model(self):
        model = getattr(self, "_clf", None)
        if model is None:
            from waferscope.models.classifiers import load_default

            model = self._clf = load_default(self.bundled)
        return model

    def fit(self, dataset) -> "CnnEmbedding":
        """Learn nothing (the network is bundled); return ``self``."""
        return self

    def transform(self, dataset) -> np.ndarray:
        """Return the network's unit-norm penultimate features of every wafer (averaged over the 8 views when ``dihedral``)."""
        import torch
        from torch import nn

        from waferscope.data.preprocess import dihedral

        _wafer_maps(dataset, "the cnn embedding")
        clf = self._model()
        net = clf.inference_network()
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"bundled model {self.bundled!r} has no final linear layer to embed with")
        caught: list = []
        hook = linears[-1].register_forward_pre_hook(lambda mod, args: caught.append(args[0].detach().clone()))
        try:
            x = clf.resize(dataset)
            views = range(8) if self.dihedral else range(1)
            total = None
            for k in views:
                view = np.ascontiguousarray(dihedral(x, k, axes=(1, 2)))
                caught.clear()
                clf._logits(view, "wafer", batch_size=self.batch_size)
                emb = torch.cat(caught).float().numpy() if caught else np.zeros((0, linears[-1].in_features))
                total = emb if total is None else total + emb
        finally:
            hook.remove()
        total = total / len(views)
        norm = np.linalg.norm(total, axis=1, keepdims=True)
        return (total / np.maximum(norm, 1e-12)).astype(np.float32)

    def state(self):
        """Return the (arrays, extras) to save."""
        return {}, {"bundled": self.bundled, "dihedral": bool(self.dihedral)}

    def signature_extra(self) -> str:
        """Return the bundled weights' hash: new weights shipped with a later waferscope mean new vectors."""
        import hashlib

        from waferscope.models.classifiers import BUNDLED, BUNDLED_ALIASES

        folder = BUNDLED.get(BUNDLED_ALIASES.get(self.bundled, self.bundled))
        if folder is None:
            raise ConfigError(f"unknown bundled classifier {self.bundled!r} for the cnn embedding")
        digest = hashlib.sha256()
        for f in sorted(folder.glob("*.safetensors")):
            digest.update(f.read_bytes())
        return digest.hexdigest()

    @classmethod
    def from_state(cls, arrays, extras) -> "CnnEmbedding":
        """Rebuild the embedding from :meth:`state`."""
        return cls(bundled=str(extras.get("bundled", "cnn_distilled")), dihedral=bool(extras.get("dihedral", True)))


def _labelled_features(emb, dataset, raw, labels, what: str):
    """(features of the labelled wafers, their labels) for a supervised embedding's fit."""
    if raw is None:
        keep = dataset.is_labelled
        raw = emb._raw(dataset)[keep] if keep.any() else np.zeros((0, 1))
        labels = dataset.labels[keep].astype(str)
    labels = np.asarray(labels).astype(str)
    if len(np.unique(labels)) < 2:
        raise ConfigError(f"the {what} embedding learns from class labels and needs labelled wafers of at least "
                          f"two classes; give it a labelled set or choose the unsupervised 'features' embedding")
    return raw, labels


class LdaEmbedding(FeatureEmbedding):
    """The standardised features projected by linear discriminant analysis (sklearn's, fitted on the labelled wafers).

    The projection is kept as plain arrays (``xbar``, ``scalings``), no pickle.
    """

    name = "lda"

    def __init__(self, n_jobs: int = -1, progress: bool = False, seed: int = 0):
        super().__init__(n_jobs=n_jobs, progress=progress)
        self.seed = seed  # LDA draws nothing; taken so that every supervised embedding is built alike

    def fit(self, dataset, raw: np.ndarray | None = None, labels=None) -> "LdaEmbedding":
        """Fit the standardisation and the discriminant projection on the labelled wafers; return ``self``."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        raw, labels = _labelled_features(self, dataset, raw, labels, "lda")
        super().fit(None, raw=raw)
        lda = LinearDiscriminantAnalysis().fit(super().transform(None, raw=raw), labels)
        n = lda._max_components
        self.xbar_, self.scalings_ = lda.xbar_.astype(np.float64), lda.scalings_[:, :n].astype(np.float64)
        return self

    def transform(self, dataset, raw: np.ndarray | None = None) -> np.ndarray:
        """Return the projected features of every wafer."""
        z = super().transform(dataset, raw=raw).astype(np.float64)
        return ((z - self.xbar_) @ self.scalings_).astype(np.float32)

    def state(self):
        """Return the (arrays, extras) to save."""
        return {"mean": self.mean_, "std": self.std_, "xbar": self.xbar_, "scalings": self.scalings_}, {}

    @classmethod
    def from_state(cls, arrays, extras) -> "LdaEmbedding":
        """Rebuild a fitted embedding from :meth:`state`."""
        self = super().from_state(arrays, extras)
        self.xbar_, self.scalings_ = np.asarray(arrays["xbar"], float), np.asarray(arrays["scalings"], float)
        return self


class MetricEmbedding(FeatureEmbedding):
    """The standardised features through a learnt metric head (:class:`waferscope.search.metric.MetricHead`).

    ``source``: ``"labels"`` trains the head on the labelled wafers given to :meth:`fit`;
    ``"bundled"`` takes the head shipped with waferscope; ``"auto"`` (default) trains when the fit
    set has at least ``min_per_class`` labelled wafers in each of two or more classes, else bundled.
    """

    name = "metric"

    def __init__(self, n_jobs: int = -1, progress: bool = False, source: str = "auto", min_per_class: int = 20,
                 seed: int = 0, epochs: int = 100):
        super().__init__(n_jobs=n_jobs, progress=progress)
        if source not in ("auto", "labels", "bundled"):
            raise ConfigError(f"metric embedding source must be auto, labels or bundled, got {source!r}")
        self.source = source
        self.min_per_class = min_per_class
        self.seed = seed
        self.epochs = epochs

    def fit(self, dataset, raw: np.ndarray | None = None, labels=None) -> "MetricEmbedding":
        """Fit the standardisation and the metric head (or take the bundled head); return ``self``."""
        from waferscope.search.metric import MetricHead, load_bundled_head

        use_labels = self.source == "labels"
        if self.source == "auto":
            lab = dataset.labels[dataset.is_labelled].astype(str) if raw is None else np.asarray(labels).astype(str)
            _, counts = np.unique(lab, return_counts=True)
            use_labels = int((counts >= self.min_per_class).sum()) >= 2
        if use_labels:
            raw, labels = _labelled_features(self, dataset, raw, labels, "metric")
            super().fit(None, raw=raw)
            self.head_ = MetricHead(seed=self.seed, epochs=self.epochs, progress=self.progress).fit(super().transform(None, raw=raw), labels)
            self.fitted_on_ = f"{len(labels)} labelled wafers"
        else:
            head, mean, std = load_bundled_head()
            self.head_, self.mean_, self.std_ = head, mean, std
            self.fitted_on_ = "bundled head (WM-811K dev + dev2)"
        return self

    def transform(self, dataset, raw: np.ndarray | None = None) -> np.ndarray:
        """Return the metric head's vectors of every wafer."""
        return self.head_.transform(super().transform(dataset, raw=raw))

    def state(self):
        """Return the (arrays, extras) to save."""
        return {"mean": self.mean_, "std": self.std_, **self.head_.arrays()}, {"fitted_on": self.fitted_on_}

    @classmethod
    def from_state(cls, arrays, extras) -> "MetricEmbedding":
        """Rebuild a fitted embedding from :meth:`state`."""
        from waferscope.search.metric import MetricHead

        self = super().from_state(arrays, extras)
        self.head_ = MetricHead.from_arrays(arrays)
        self.fitted_on_ = str(extras.get("fitted_on", ""))
        return self


# The embeddings by name (what an index records); no if-chains on names elsewhere.
EMBEDDINGS = {c.name: c for c in (MetricEmbedding, LdaEmbedding, FeatureEmbedding, CnnEmbedding, RawEmbedding)}
# Chosen by measurement on lot-grouped real folds with every learnt part fitted on the archive folds
# only (docs/search.md): precision@10 of defect queries 0.90 (mAP 0.90) for ``metric`` against 0.85
# (0.75) for ``lda``, 0.79 (0.45) for the unsupervised ``features``; the bundled ``cnn`` (0.89) saw the
# query lots' labels in training, so its figure is not an honest one.
DEFAULT_EMBEDDING = "metric"


def make_embedding(name: str, **params):
    """Return a new embedding ``name`` built with ``params``; a ConfigError listing the names when unknown."""
    try:
        return EMBEDDINGS[name](**params)
    except KeyError:
        raise ConfigError(f"unknown embedding {name!r}; choose one of {sorted(EMBEDDINGS)}") from None
