"""``extra_trees``: an extremely-randomised forest on the same 120 ``extended`` features as ``gbm``.

scikit-learn's ``ExtraTreesClassifier`` (500 fully grown trees, ``class_weight="balanced"``,
``max_features="sqrt"``) on :meth:`GradientBoostingClassifier.features`. Its errors differ from the
boosted trees', so the average of the two (``waferscope evaluate classifiers gbm+extra_trees``) beats
either on the lot-grouped real protocol (docs/classification_real.md).

Persistence without pickle, as ``gbm``: the fitted trees are flattened into node arrays (feature,
threshold, children, per-class leaf fractions) and walked with numpy; a test checks the walk
against scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

import numpy as np

from waferscope.base import Interval, Options
from waferscope.errors import RunDirError
from waferscope.features.handcrafted import feature_names
from waferscope.models.classifiers.common import label_order, labelled_for_training
from waferscope.models.classifiers.gbm import GradientBoostingClassifier
from waferscope.models.trees import check_node_indices
from waferscope.registry import register

FOREST_ARRAYS = ("feature", "threshold", "left", "right", "value", "roots")


def flatten_forest(forest) -> dict[str, np.ndarray]:
    """Return the trees of a fitted scikit-learn forest as flat arrays.

    Global node indices, ``left`` -1 at a leaf, ``value`` each node's class fractions.
    """
    parts = {k: [] for k in FOREST_ARRAYS[:-1]}
    roots, offset = [], 0
    for est in forest.estimators_:
        t = est.tree_
        leaf = t.children_left < 0
        roots.append(offset)
        parts["feature"].append(np.where(leaf, 0, t.feature).astype(np.int32))
        parts["threshold"].append(t.threshold.astype(np.float64))
        parts["left"].append(np.where(leaf, -1, t.children_left + offset).astype(np.int32))
        parts["right"].append(np.where(leaf, -1, t.children_right + offset).astype(np.int32))
        v = t.value[:, 0, :].astype(np.float64)
        parts["value"].append((v / v.sum(1, keepdims=True)).astype(np.float32))
        offset += t.node_count
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["roots"] = np.asarray(roots, dtype=np.int32)
    return out


def forest_proba(trees: dict[str, np.ndarray], x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Return the mean over trees of the leaf class fractions each row of ``x`` reaches.

    Scikit-learn's forest ``predict_proba``; rows are compared in float32, as scikit-learn does.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros((len(x), trees["value"].shape[1]))
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk]
        node = np.broadcast_to(trees["roots"], (len(xc), len(trees["roots"]))).copy()
        rows = np.arange(len(xc))[:, None]
        while True:
            inner = trees["left"][node] >= 0
            if not inner.any():
                break
            go_left = xc[rows, trees["feature"][node]] <= trees["threshold"][node]
            node = np.where(inner, np.where(go_left, trees["left"][node], trees["right"][node]), node)
        out[i:i + chunk] = trees["value"][node].mean(axis=1)
    return out


@register("extra_trees", kind="classifier")
class ExtraTreesClassifier(GradientBoostingClassifier):
    """Extremely-randomised trees on the extended wafer features (see the module docstring).

    Parameters
    ----------
    feature_set
    n_estimators
        Trees in the forest.
    max_features
        Features tried per split, as scikit-learn takes it (``"sqrt"``, ``"log2"``, a count or a share).
    seed
    n_jobs
    progress, orient

    Attributes
    ----------
    classes_
    trees_
        The forest's trees as flat arrays (each node's class fractions at the leaves).
    """

    # set_temperature is inherited from gbm, but the forest's averaged votes are not rescaled by it
    _tags = {"temperature": False}
    _parameter_constraints = {
        "n_estimators": [Interval(int, 1)],
        # as sklearn's ExtraTreesClassifier takes it
        "max_features": [Options("sqrt", "log2"), Interval(int, 1), Interval(float, 0, 1, closed="right"), None]}

    def __init__(self, feature_set: str = "extended", n_estimators: int = 500, max_features: str = "sqrt",
                 seed: int = 0, n_jobs: int = -1, progress: bool = True, orient: str = "canonical"):
        self.feature_set = feature_set
        self.orient = orient
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.seed = seed
        self.n_jobs = n_jobs
        self.progress = progress

    def fit(self, dataset, **kwargs) -> "ExtraTreesClassifier":
        """Fit the forest on the features of the labelled maps; return ``self``."""
        from sklearn.ensemble import ExtraTreesClassifier as SkExtraTrees

        dataset = labelled_for_training(dataset, type(self).__name__)
        classes = label_order(dataset.labels)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in dataset.labels.astype(str)], dtype=np.int64)
        forest = SkExtraTrees(n_estimators=self.n_estimators, class_weight="balanced", min_samples_leaf=1,
                              max_features=self.max_features, n_jobs=1, random_state=self.seed)
        forest.fit(self.features(dataset), y)
        if len(forest.classes_) != len(classes):  # cannot happen: y covers every class by construction
            raise ValueError("the forest saw fewer classes than the labels hold")
        self.trees_ = flatten_forest(forest)
        self.classes_ = list(classes)
        return self

    def predict_proba(self, dataset) -> np.ndarray:
        """Return the forest's class probabilities of every map."""
        self._check_fitted()
        if len(dataset) == 0:
            return np.zeros((0, len(self.classes_)))
        return self.proba_from_features(self.features(dataset))

    def proba_from_features(self, x: np.ndarray) -> np.ndarray:
        """Return the forest's class probabilities of feature rows ``x`` (from :meth:`features`)."""
        self._check_fitted()
        return forest_proba(self.trees_, x)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Class fractions of feature rows ``x`` (the forest has no other score)."""
        self._check_fitted()
        return forest_proba(self.trees_, x)

    def n_parameters(self) -> int:
        """Return the stored numbers: per node a feature, threshold and one fraction per class."""
        self._check_fitted()
        return int(len(self.trees_["feature"]) * (2 + len(self.classes_)))

    def _load_state(self, tensors, extras) -> None:
        n_features = len(feature_names(self.feature_set))
        if int(extras.get("n_features", -1)) != n_features:
            raise RunDirError(f"the saved trees use {extras.get('n_features')} features, but feature set "
                              f"{self.feature_set!r} has {n_features}")
        trees = {k: tensors[k].numpy() for k in FOREST_ARRAYS if k in tensors}
        n = len(trees.get("feature", ()))
        if len(trees) != len(FOREST_ARRAYS) or any(len(trees[k]) != n for k in ("threshold", "left", "right", "value")):
            raise RunDirError("the saved extra-trees state is damaged: missing or mismatched tree arrays")
        try:
            check_node_indices(trees, trees["left"] >= 0, n_features)
        except ValueError as exc:
            raise RunDirError(f"the saved extra-trees state is damaged: {exc}") from None
        self.trees_ = trees
        self.classes_ = list(extras["classes"])
