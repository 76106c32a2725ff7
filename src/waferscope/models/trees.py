"""Gradient-boosted trees as plain arrays: fitted by scikit-learn, stored in safetensors, walked with numpy.

scikit-learn's ``HistGradientBoostingClassifier`` keeps its trees in private predictor objects that
only pickle can save. :func:`flatten_trees` copies them into a few flat arrays (feature, threshold,
missing-value direction, children, leaf flag, leaf value; one entry per node of every tree), which
safetensors stores as they are, and :func:`tree_scores` walks them for a batch of rows. Used by the
``gbm`` classifier and the ``pattern_contrast`` detector.
"""

from __future__ import annotations

import numpy as np

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
    """The fitted trees of a scikit-learn ``HistGradientBoostingClassifier`` as flat arrays.

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
    """Raise ValueError unless the arrays form trees a walk can follow (a damaged or foreign run
    file would otherwise fail deep inside numpy indexing)."""
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


def load_trees(tensors, n_features: int, owner: str) -> dict[str, np.ndarray]:
    """The tree arrays of a saved run (``tensors`` as read from safetensors), checked by
    :func:`check_trees`; a RunDirError naming ``owner`` when they are missing or damaged."""
    from waferscope.errors import RunDirError

    trees = {k: tensors[k].numpy() for k in STATE_ARRAYS if k in tensors}
    try:
        check_trees(trees, n_features)
    except ValueError as exc:
        raise RunDirError(f"the saved {owner} state is damaged: {exc}") from None
    return trees


ROWS_PER_CHUNK = 512  # rows walked at once: temporaries are rows × trees, so memory stays ~100 MB


def tree_scores(trees: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Sum of the leaf values each class's trees give each row of ``x``, plus the baseline.

    All trees are walked together: ``node`` holds, per row and tree, the current node; each step
    moves every non-leaf one level down (``x <= threshold`` goes left, a missing value goes where
    training sent it), so the loop runs once per level of the deepest tree. Rows go in chunks so
    that memory does not grow with the number of maps.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) > ROWS_PER_CHUNK:
        return np.concatenate([tree_scores(trees, x[i:i + ROWS_PER_CHUNK])
                               for i in range(0, len(x), ROWS_PER_CHUNK)])
    node = np.broadcast_to(trees["roots"], (len(x), len(trees["roots"]))).copy()
    rows = np.arange(len(x))[:, None]
    while True:
        inner = ~trees["is_leaf"][node]
        if not inner.any():
            break
        value = x[rows, trees["feature"][node]]
        go_left = np.where(np.isnan(value), trees["missing_left"][node], value <= trees["threshold"][node])
        node = np.where(inner, np.where(go_left, trees["left"][node], trees["right"][node]), node)
    n_trees_per_iteration = len(trees["baseline"])
    leaf_values = trees["value"][node]
    scores = np.zeros((len(x), n_trees_per_iteration))
    for k in range(n_trees_per_iteration):
        scores[:, k] = leaf_values[:, trees["tree_class"] == k].sum(axis=1)
    scores += trees["baseline"]
    # Two classes: one tree per iteration scores the second class (binary log loss), i.e. the
    # softmax of (0, score).
    return np.c_[np.zeros(len(x)), scores] if n_trees_per_iteration == 1 else scores
