"""cnn_fine distilled from any classifier (e.g. gbm): soft targets, transfer maps, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.classes import CLASSES
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError, DataError
from waferscope.models.classifiers.teachers import fitted_teacher, teacher_log_proba

torch.set_num_threads(1)
FAST = {"epochs": 1, "input_size": 32, "progress": False, "batch_size": 32}


class RecordingTeacher:
    """A fitted 'classifier' that always answers the same probabilities and counts the maps it saw."""

    def __init__(self, classes, proba_row):
        self.classes_ = list(classes)
        self.row = np.asarray(proba_row, dtype=np.float64)
        self.seen = 0

    def predict_proba(self, dataset):
        self.seen += len(dataset)
        return np.tile(self.row, (len(dataset), 1))


@pytest.fixture(scope="module")
def synth():
    return generate(n=54, seed=3)


def test_teacher_columns_follow_the_students_class_order():
    teacher = RecordingTeacher(["b", "a", "extra"], [0.5, 0.3, 0.2])
    logp = teacher_log_proba(teacher, generate(n=3, seed=0), ["a", "b"])
    assert logp.dtype == np.float32 and logp.shape == (3, 2)
    # 'extra' is dropped and the rest renormalised: a = 0.3 / 0.8, b = 0.5 / 0.8
    np.testing.assert_allclose(np.exp(logp[0]), [0.375, 0.625], rtol=1e-6)
    with pytest.raises(DataError, match="does not know class"):
        teacher_log_proba(teacher, generate(n=3, seed=0), ["a", "c"])


def test_distillation_uses_the_teacher_and_adds_transfer_maps(synth, tmp_path):
    row = np.full(len(CLASSES), 1.0 / len(CLASSES))
    teacher = RecordingTeacher(CLASSES, row)
    plain = registry.create("cnn_fine", "classifier", **FAST).fit(synth)
    student = registry.create("cnn_fine", "classifier", distil_synthetic=18, **FAST).fit(synth, teacher=teacher)
    assert teacher.seen == len(synth) + 18  # every training map and every transfer map got soft targets
    assert student.history_[0]["train_loss"] != plain.history_[0]["train_loss"]
    assert student.distilled_from_ == "RecordingTeacher" and plain.distilled_from_ is None
    student.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="classifier")
    assert again.distilled_from_ == "RecordingTeacher"
    np.testing.assert_allclose(again.predict_proba(synth), student.predict_proba(synth), atol=1e-6)


def test_alpha_zero_is_the_plain_loss(synth):
    teacher = RecordingTeacher(CLASSES, np.eye(len(CLASSES))[0])
    plain = registry.create("cnn_fine", "classifier", **FAST).fit(synth)
    hard_only = registry.create("cnn_fine", "classifier", distil_alpha=0.0, **FAST).fit(synth, teacher=teacher)
    assert hard_only.history_[0]["train_loss"] == pytest.approx(plain.history_[0]["train_loss"], rel=1e-5)


def test_teacher_named_by_registry_or_bundled(synth):
    trained = fitted_teacher("svm-linear", synth)
    assert trained.classes_ and hasattr(trained, "predict_proba")
    bundled = fitted_teacher("bundled:gbm", synth)
    assert bundled.registry_name == "gbm"
    with pytest.raises(ConfigError, match="unknown bundled"):
        fitted_teacher("bundled:nope", synth)


@pytest.mark.parametrize("bad", [{"distil_alpha": 1.5}, {"distil_temperature": 0.0}])
def test_bad_distillation_settings_fail_before_training(bad, synth):
    teacher = RecordingTeacher(CLASSES, np.full(len(CLASSES), 1.0 / len(CLASSES)))
    with pytest.raises(ConfigError, match="distil"):
        registry.create("cnn_fine", "classifier", **FAST, **bad).fit(synth, teacher=teacher)
    assert teacher.seen == 0


def test_unlabelled_maps_are_real_transfer_maps_labelled_by_the_teacher(synth, capsys):
    """Unlabelled maps in the training set: the teacher's arg-max labels them (hard term), its
    probabilities are their soft targets; without a teacher they are skipped with a note."""
    from waferscope.data import WaferDataset

    unlabelled = generate(n=12, seed=9)
    unlabelled.labels[:] = ""
    mixed = WaferDataset.concat([synth, unlabelled])
    row = np.eye(len(CLASSES))[CLASSES.index("Scratch")] * 0.9 + 0.1 / len(CLASSES)
    teacher = RecordingTeacher(CLASSES, row)
    captured = {}
    cls = registry.get("cnn_fine", "classifier")
    original = cls._soft_targets

    def spy(self, dataset):  # the maps the network trains on (validation split left out)
        captured["labels"] = dataset.labels.astype(str)
        return original(self, dataset)

    cls._soft_targets = spy
    try:
        student = registry.create("cnn_fine", "classifier", val_fraction=0.0, **FAST).fit(mixed, teacher=teacher)
    finally:
        cls._soft_targets = original
    # 12 maps labelled once for their hard labels and once for soft targets with the rest
    assert teacher.seen == 12 + len(mixed)
    assert len(captured["labels"]) == len(mixed) and (captured["labels"] == "Scratch").sum() == \
        (synth.labels.astype(str) == "Scratch").sum() + 12
    assert "skipping" not in capsys.readouterr().err and student.distilled_from_ == "RecordingTeacher"
    registry.create("cnn_fine", "classifier", **FAST).fit(mixed)
    assert "skipping 12 unlabelled map(s)" in capsys.readouterr().err
