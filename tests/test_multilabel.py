"""Mixed-type maps: sigmoid heads over BASE_PATTERNS, metrics, fit/save/load."""

import numpy as np
import pytest

from waferscope.base import load_run
from waferscope.data.classes import BASE_PATTERNS
from waferscope.data.synthetic import generate
from waferscope.errors import DataError
from waferscope.models.classifiers.multilabel import MultiLabelCNNClassifier, multilabel_names, multilabel_report

SMALL = dict(input_size=16, epochs=1, batch_size=16, progress=False, width=4)


def test_report_on_known_predictions():
    y = np.array([[1, 0, 0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0, 0, 0], [0] * 8], dtype=bool)
    p = y.copy()
    p[0, 6] = False  # one missed Scratch
    rep = multilabel_report(y, p)
    assert rep["exact_match"] == pytest.approx(2 / 3)
    assert rep["per_pattern"]["Center"]["f1"] == 1.0
    assert rep["per_pattern"]["Scratch"]["f1"] == 0.0 and rep["per_pattern"]["Scratch"]["support"] == 1
    assert rep["macro_f1"] == pytest.approx(2 / 3)  # over the 3 patterns present: Center, Edge-Loc, Scratch
    assert rep["hamming_loss"] == pytest.approx(1 / 24)


def test_names_follow_the_generator():
    y = np.zeros((2, 8), dtype=bool)
    y[0, [0, 2, 6]] = True
    assert list(multilabel_names(y)) == ["Center+Edge-Loc+Scratch", "none"]
    mixed = generate(40, seed=0, mixed=True, size=(20, 20))
    assert list(multilabel_names(mixed.multilabels)) == list(mixed.labels)


def test_fit_predict_save_load(tmp_path):
    mixed = generate(60, seed=0, mixed=True, size=(20, 20))
    model = MultiLabelCNNClassifier(**SMALL).fit(mixed)
    assert model.classes_ == list(BASE_PATTERNS)
    ml = model.predict_multilabel(mixed)
    assert ml.shape == (60, 8) and ml.dtype == bool
    proba = model.predict_proba(mixed)
    assert proba.shape == (60, 8) and (proba >= 0).all() and (proba <= 1).all()
    assert len(model.predict(mixed)) == 60
    model.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="classifier")
    assert isinstance(again, MultiLabelCNNClassifier)
    assert np.array_equal(again.predict_multilabel(mixed), ml)


def test_needs_multilabels():
    data = generate(18, seed=0, size=(20, 20))
    data.multilabels = None
    with pytest.raises(DataError, match="multi-labels"):
        MultiLabelCNNClassifier(**SMALL).fit(data)
