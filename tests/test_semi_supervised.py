"""Pseudo-labelling: the selection rule (confidence, consistency, per-class cap) and fit/save/load."""

import numpy as np

from waferscope.base import load_run
from waferscope.data.synthetic import generate
from waferscope.models.classifiers.semi_supervised import PseudoLabelCNNClassifier, select_pseudo_labels


def _views(per_view):
    return np.asarray(per_view, dtype=np.float64)


def test_selection_needs_confidence_and_consistency():
    confident = [[0.97, 0.03]] * 4
    wavering = [[0.99, 0.01]] * 3 + [[0.3, 0.7]]  # high mean, one view disagrees
    unsure = [[0.6, 0.4]] * 4
    other = [[0.02, 0.98]] * 4
    idx, cls = select_pseudo_labels(_views([confident, wavering, unsure, other]), 0.9, np.array([10, 10]), 1.0)
    assert idx.tolist() == [0, 3] and cls.tolist() == [0, 1]


def test_selection_caps_each_class_most_confident_first():
    maps = [[[p, 1 - p]] * 2 for p in (0.91, 0.99, 0.95, 0.97)]
    idx, cls = select_pseudo_labels(_views(maps), 0.9, np.array([1, 5]), 2.0)
    assert idx.tolist() == [1, 3] and cls.tolist() == [0, 0]
    idx, _ = select_pseudo_labels(_views(maps), 0.9, np.array([0, 5]), 2.0)
    assert len(idx) == 0


def test_fit_with_unlabelled_save_load(tmp_path):
    labelled = generate(27, seed=0, size=(20, 20))
    pool = generate(27, seed=1, size=(20, 20))
    pool.labels[:] = ""
    model = PseudoLabelCNNClassifier(input_size=16, epochs=1, batch_size=16, progress=False, val_fraction=0.0, width=4,
                                     threshold=0.0, max_ratio=1.0).fit(labelled, unlabelled=pool)
    (log,) = model.pseudo_rounds_
    assert log["pool"] == 27 and 0 < log["pseudo_labelled"] <= 27
    proba = model.predict_proba(labelled)
    model.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="classifier")
    assert np.allclose(again.predict_proba(labelled), proba, atol=1e-6)
    assert again.pseudo_rounds_ == model.pseudo_rounds_
