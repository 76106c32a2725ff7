"""Knowledge distillation: the loss's defining properties, the student's size, fit/save/load."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from waferscope.base import load_run
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError
from waferscope.models.classifiers.cnn import CompactCNNClassifier, compact_wafer_cnn
from waferscope.models.classifiers.distill import (DistilledStudentClassifier, compact_student, count_parameters,
                                                   teacher_shaped_student)
from waferscope.models.classifiers.losses import IGNORE, kd_loss

SMALL = dict(input_size=16, epochs=1, batch_size=16, progress=False, val_fraction=0.0)


def _logits(seed, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3


def test_alpha_zero_is_cross_entropy():
    s, t = _logits(0), _logits(1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(kd_loss(s, t, y, alpha=0.0, temperature=4.0), F.cross_entropy(s, y))


def test_soft_term_is_t_squared_times_kl():
    s, t = _logits(2).double(), _logits(3).double()
    y = torch.zeros(6, dtype=torch.long)
    for T in (1.0, 4.0, 8.0):
        pt = np.exp(t.numpy() / T) / np.exp(t.numpy() / T).sum(1, keepdims=True)
        ps = np.exp(s.numpy() / T) / np.exp(s.numpy() / T).sum(1, keepdims=True)
        kl = float((pt * (np.log(pt) - np.log(ps))).sum(1).mean())
        assert float(kd_loss(s, t, y, alpha=1.0, temperature=T)) == pytest.approx(T * T * kl, rel=1e-9)
    # identical logits: nothing to learn from the teacher
    assert float(kd_loss(s, s, y, alpha=1.0, temperature=4.0)) == pytest.approx(0.0, abs=1e-12)


def test_mixture_and_unlabelled_targets():
    s, t = _logits(4), _logits(5)
    y = torch.tensor([0, IGNORE, 2, IGNORE, 1, 3])
    lab = y != IGNORE
    expected = 0.7 * 16 * F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean",
                                   log_target=True) + 0.3 * F.cross_entropy(s[lab], y[lab])
    assert torch.allclose(kd_loss(s, t, y, alpha=0.7, temperature=4.0), expected)
    # a batch of transfer maps only still back-propagates (through the soft term)
    s.requires_grad_(True)
    kd_loss(s, t, torch.full((6,), IGNORE), alpha=0.5, temperature=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("width", [3, 5, 7])
def test_student_widths_stay_under_a_tenth_of_the_teacher(width):
    teacher = count_parameters(compact_wafer_cnn(3, 9))
    assert count_parameters(compact_student(3, 9, width)) <= 0.1 * teacher
    assert count_parameters(teacher_shaped_student(3, 9, width)) <= 0.1 * teacher


def test_default_student_is_under_a_tenth_of_the_default_teacher():
    student = DistilledStudentClassifier()
    teacher = CompactCNNClassifier(**(student.teacher_params or {}))
    n_student = count_parameters(student.build_network(3, 9))
    assert n_student <= 0.1 * count_parameters(teacher.build_network(3, 9))
    assert n_student > 0.05 * count_parameters(teacher.build_network(3, 9))  # not needlessly small either


def test_no_die_padding_is_the_state_outside_the_wafer():
    from waferscope.data.preprocess import encode
    from waferscope.models.classifiers.distill import NoDiePad

    x = torch.from_numpy(encode(np.full((1, 4, 4), 2, dtype=np.uint8), "onehot3"))
    padded = NoDiePad(1)(x)
    assert padded.shape == (1, 3, 6, 6)
    assert torch.equal(padded[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # no die
    assert torch.equal(padded[0, :, 1:-1, 1:-1], x[0])


def test_fit_save_load_round_trip(tmp_path):
    data = generate(36, seed=0, size=(20, 20))
    transfer = generate(18, seed=1, size=(20, 20))
    transfer.labels[:] = ""
    teacher = CompactCNNClassifier(**SMALL).fit(data)
    student = DistilledStudentClassifier(**SMALL, width=4, distil_alpha=0.9, distil_temperature=4.0).fit(
        data, teacher=teacher, transfer=transfer)
    assert student.transfer_size_ == 18
    assert student.history_[0]["train_loss"] > 0
    assert student.parameter_ratio <= 0.1
    proba = student.predict_proba(data)
    assert proba.shape == (36, 9) and np.allclose(proba.sum(1), 1, atol=1e-5)
    student.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind="classifier")
    assert isinstance(again, DistilledStudentClassifier)
    assert np.allclose(again.predict_proba(data), proba, atol=1e-6)
    assert again.teacher_parameters_ == student.teacher_parameters_


def test_teacher_trained_on_the_fly_and_from_a_run(tmp_path):
    data = generate(27, seed=2, size=(20, 20))
    student = DistilledStudentClassifier(**SMALL, width=4, teacher_params={"epochs": 1, "batch_size": 16,
                                                                            "val_fraction": 0.0}).fit(data)
    assert student.teacher_parameters_ > 10 * student.n_parameters()
    CompactCNNClassifier(**SMALL).fit(data).save(tmp_path / "teacher")
    from_run = DistilledStudentClassifier(**SMALL, width=4, teacher=str(tmp_path / "teacher")).fit(data)
    assert from_run.is_fitted


def test_teacher_with_another_input_size_is_refused():
    data = generate(18, seed=3, size=(20, 20))
    teacher = CompactCNNClassifier(**{**SMALL, "input_size": 24}).fit(data)
    with pytest.raises(ConfigError, match="student"):
        DistilledStudentClassifier(**SMALL).fit(data, teacher=teacher)


@pytest.mark.parametrize("arch", ["cnn", "patchify"])
def test_fast_inference_path_matches_the_network(arch):
    from waferscope.data.preprocess import encode

    torch.manual_seed(0)
    model = DistilledStudentClassifier(width=5, arch=arch)
    model.classes_, model.in_chans_ = list(range(9)), 3
    model.network_ = model.build_network(3, 9)
    for layer in model.network_:  # non-trivial BatchNorm statistics, so the folding is really tested
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-1, 1)
    model.network_.eval()
    x = np.random.default_rng(0).integers(0, 3, (20, 48, 48)).astype(np.uint8)
    with torch.no_grad():
        ref = model.network_(torch.from_numpy(encode(x, "onehot3")))
    assert model.encode_fast(x).shape == (20, 1, 48, 48)  # die states, not one-hot
    assert torch.allclose(model._logits(x), ref, atol=1e-4)


def test_transfer_maps_are_distilled_without_their_labels():
    data = generate(27, seed=4, size=(20, 20))
    transfer = generate(40, seed=5, size=(20, 20))
    teacher = CompactCNNClassifier(**SMALL).fit(data)
    student = DistilledStudentClassifier(**SMALL, width=3, transfer_ratio=None)
    seen = {}
    original = student._teacher_views

    def spy(x_u8):
        seen["n"] = len(x_u8)
        return original(x_u8)

    student._teacher_views = spy
    student.fit(data, teacher=teacher, transfer=transfer)
    assert student.transfer_size_ == 40
    assert seen["n"] == 27 + 40  # the teacher labels every training and transfer map
    capped = DistilledStudentClassifier(**SMALL, width=3, transfer_ratio=1.0).fit(
        data, teacher=teacher, transfer=transfer)
    assert capped.transfer_size_ == 27


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="arch"):
        DistilledStudentClassifier(arch="mlp").build_network(3, 9)


def test_a_run_saved_with_a_removed_option_loads_when_it_was_off(tmp_path):
    import json

    from waferscope.base import load_run
    from waferscope.errors import RunDirError

    data = generate(18, seed=4, size=(20, 20))
    teacher = CompactCNNClassifier(**SMALL).fit(data)
    student = DistilledStudentClassifier(**SMALL, width=3).fit(data, teacher=teacher)
    student.save(tmp_path / "run")
    doc_path = tmp_path / "run" / "model.json"
    doc = json.loads(doc_path.read_text())
    doc["params"].update(transfer_synthetic=0, noisy_copies=0, init_from_teacher=False)
    doc_path.write_text(json.dumps(doc))
    assert np.allclose(load_run(tmp_path / "run").predict_proba(data), student.predict_proba(data))
    doc["params"]["noisy_copies"] = 2
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="noisy_copies"):
        load_run(tmp_path / "run")
