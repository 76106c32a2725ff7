"""Gradient-boosted trees as plain arrays: fitted by scikit-learn, stored in safetensors, walked with numpy.

scikit-learn's ``HistGradientBoostingClassifier`` keeps its trees in private predictor objects that
only pickle can save. :func:`flatten_trees` copies them into a few flat arrays (feature, threshold,
missing-value direction, children, leaf flag, leaf value; one entry per node of every tree), which
safetensors stores as they are, and :func:`tree_scores` walks them for a batch of rows. Used by the
``gbm`` classifier and the ``pattern_contrast`` detector.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TREE_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")
STATE_ARRAYS = (*TREE_ARRAYS, "roots", "tree_class", "baseline")


def fit_trees(x: np.ndarray, y: np.ndarray, max_iter: int, learning_rate: float, max_leaf_nodes: int,
              l2_regularization: float, seed: int, progress: bool = False) -> dict[str, np.ndarray]:
    """Fit scikit-learn's ``HistGradientBoostingClassifier`` and return its trees as arrays.

    Balanced class weights (both users face imbalance: rare defect classes, or few normals against
    many simulated defects) and no early stopping, so the result does not depend on a random
    validation split.

    ``progress``: a bar over the boosting iterations (a fit takes from seconds to minutes). The model
    is then grown in steps with ``warm_start``, which adds the same trees as one call (no early
    stopping, no subsampling below 200,000 rows; a test compares the two).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
        l2_regularization=l2_regularization, class_weight="balanced", early_stopping=False, random_state=seed)
    if not progress:
        return flatten_trees(model.fit(x, y))
    import sys

    from tqdm.auto import tqdm

    step = max(1, max_iter // 30)
    with tqdm(total=max_iter, desc="boosting", unit="iter", file=sys.stderr, leave=False) as bar:
        for done in range(step, max_iter + step, step):
            done = min(done, max_iter)
            model.set_params(max_iter=done, warm_start=True)
            model.fit(x, y)
            bar.update(done - bar.n)
    return flatten_trees(model)


def flatten_trees(model) -> dict[str, np.ndarray]:
    """Return the fitted trees of a scikit-learn ``HistGradientBoostingClassifier`` as flat arrays.

    Nodes of all trees are concatenated; ``left``/``right`` are global node indices, ``roots`` the
    first node of each tree and ``tree_class`` the class whose score the tree adds to. Categorical
    splits are not used by this model (all features are numeric).
    """
    parts = {k: [] for k in TREE_ARRAYS}
    roots, tree_class, offset = [], [], 0
    for trees in model._predictors:  # one list per boosting iteration: a tree per class
        for k, tree in enumerate(trees):
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            roots.append(offset)
            tree_class.append(k)
            # int32 indices halve the stored size (a model has well under 2**31 nodes)
            parts["feature"].append(nodes["feature_idx"].astype(np.int32))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(np.bool_))
            parts["left"].append(nodes["left"].astype(np.int32) + np.int32(offset))
            parts["right"].append(nodes["right"].astype(np.int32) + np.int32(offset))
            parts["is_leaf"].append(nodes["is_leaf"].astype(np.bool_))
            parts["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["roots"] = np.asarray(roots, dtype=np.int32)
    out["tree_class"] = np.asarray(tree_class, dtype=np.int32)
    out["baseline"] = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    return out


def check_trees(trees: dict[str, np.ndarray], n_features: int) -> None:
    """Raise ValueError unless the arrays form trees a walk can follow.

    A damaged or foreign run file would otherwise fail deep inside numpy indexing.
    """
    missing = [k for k in STATE_ARRAYS if k not in trees]
    if missing:
        raise ValueError(f"missing tree arrays: {', '.join(missing)}")
    n_nodes = len(trees["feature"])
    if any(len(trees[k]) != n_nodes for k in TREE_ARRAYS):
        raise ValueError("tree arrays of different lengths")
    check_node_indices(trees, ~trees["is_leaf"].astype(bool), n_features)


def check_node_indices(trees: dict[str, np.ndarray], inner: np.ndarray, n_features: int) -> None:
    """ValueError unless the children and features of the ``inner`` nodes, and the roots, are in range."""
    n_nodes = len(trees["feature"])
    for name, bound in (("left", n_nodes), ("right", n_nodes), ("feature", n_features)):
        index = trees[name][inner]
        if index.size and (index.min() < 0 or index.max() >= bound):
            raise ValueError(f"tree {name} index out of range")
    if trees["roots"].size == 0 or trees["roots"].min() < 0 or trees["roots"].max() >= n_nodes:
        raise ValueError("tree roots out of range")
    # scikit-learn numbers a node's children after the node; requiring it means a walk always ends
    # (a damaged file with a child pointing back would loop forever)
    position = np.flatnonzero(inner)
    if np.any(trees["left"][inner] <= position) or np.any(trees["right"][inner] <= position):
        raise ValueError("tree child index not after its parent")


def load_trees(tensors, n_features: int, owner: str) -> dict[str, np.ndarray]:
    """Return the tree arrays of a saved run (``tensors`` as read from safetensors), checked by :func:`check_trees`.

    A RunDirError naming ``owner`` when they are missing or damaged.
    """
    from waferscope.errors import RunDirError

    trees = {k: tensors[k].numpy() for k in STATE_ARRAYS if k in tensors}
    try:
        check_trees(trees, n_features)
    except ValueError as exc:
        raise RunDirError(f"the saved {owner} state is damaged: {exc}") from None
    return trees


@njit(cache=True, nogil=True)
def _walk(x, feature, threshold, missing_left, left, right, is_leaf, value, roots, tree_class,
          n_classes):  # pragma: no cover - compiled
    scores = np.zeros((x.shape[0], n_classes))
    # tree by tree, all rows through one tree before the next: its few dozen nodes stay in cache
    for t in range(roots.shape[0]):
        for i in range(x.shape[0]):
            node = roots[t]
            while not is_leaf[node]:
                v = x[i, feature[node]]
                if np.isnan(v):
                    node = left[node] if missing_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            scores[i, tree_class[t]] += value[node]
    return scores


PARALLEL_ROWS = 32  # below this many rows per thread, one thread walks them all (a row: ~0.1 ms)


def tree_scores(trees: dict[str, np.ndarray], x: np.ndarray, n_jobs: int = 1) -> np.ndarray:
    """Sum of the leaf values each class's trees give each row of ``x``, plus the baseline.

    A compiled walk (numba): each row goes down every tree from its root (``x <= threshold`` goes
    left, a missing value goes where training sent it) and adds the leaf's value to the tree's
    class. About 30 times faster than walking all trees at once with numpy (the way before
    2026-12-06, ~1 ms per row for the bundled ``gbm``'s 2,700 trees); the scores differ from it only
    in the order the leaf values are summed (~1e-15).

    ``n_jobs`` (joblib's convention, -1 = every core): large batches are split into row blocks walked
    in threads (the walk releases the GIL); each row is summed in the same order either way, so the
    scores are the same bit for bit.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n_classes = len(trees["baseline"])
    args = (trees["feature"], trees["threshold"], trees["missing_left"], trees["left"], trees["right"],
            trees["is_leaf"], trees["value"], trees["roots"], trees["tree_class"], n_classes)
    from waferscope.utils import n_workers, shared_pool

    workers = min(n_workers(n_jobs), len(x) // PARALLEL_ROWS)
    if workers > 1:

        blocks = np.array_split(np.arange(len(x)), workers)
        scores = np.concatenate(list(shared_pool(n_jobs).map(lambda b: _walk(x[b[0]:b[-1] + 1], *args), blocks)))
    else:
        scores = _walk(x, *args)
    scores += trees["baseline"]
    # Two classes: one tree per iteration scores the second class (binary log loss), i.e. the
    # softmax of (0, score).
    return np.c_[np.zeros(len(x)), scores] if n_classes == 1 else scores
