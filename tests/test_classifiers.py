"""Classifiers: fit on tiny synthetic data, class order, save/load round trip, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.classes import CLASSES
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.errors import DataError, RunDirError
from waferscope.metrics.classification import classification_report_dict, save_confusion_matrix_png
from waferscope.models.classifiers.common import label_order
from waferscope.models.classifiers.torch_base import TorchClassifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth() -> WaferDataset:
    return generate(n=72, seed=3)


@pytest.mark.parametrize("name", ["cnn", "cnn_fine", "resnet18"])
def test_network_classifiers_fit_predict_and_round_trip(name, synth, tmp_path):
    params = {"epochs": 1, "input_size": 32, "progress": False, "batch_size": 32}
    if name == "resnet18":
        params["width"] = 0.25
    clf = registry.create(name, "classifier", **params).fit(synth)
    assert clf.classes_ == list(CLASSES)  # every WM-811K class was seen: CLASSES order
    proba = clf.predict_proba(synth)
    assert proba.shape == (len(synth), len(CLASSES))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    clf.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert doc["params"]["input_size"] == 32 and doc["params"]["encoding"] == "onehot3"
    again = load_run(tmp_path / "run", kind="classifier")
    np.testing.assert_array_equal(again.predict_proba(synth), proba)
    assert list(again.predict(synth)) == list(clf.predict(synth))


@pytest.mark.parametrize("relu_stride", [1, 2, 4])
def test_fine_head_keeps_full_resolution_and_folds_exactly(synth, relu_stride):
    """cnn_fine pools a map at the input size (48×48 at 48 px) while gradients are on (training,
    Grad-CAM); prediction skips that map and pools the linear levels from their means, and its
    BatchNorm-folded inference copy (nested Sequentials) returns the same logits."""
    clf = registry.create("cnn_fine", "classifier", epochs=1, input_size=48, progress=False,
                          relu_stride=relu_stride).fit(synth)
    net = clf.network_.eval()
    seen = []
    handle = net.fuse.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    x = clf.to_tensor(synth)
    with torch.enable_grad():
        reference = net(x).detach()
    with torch.no_grad():
        shortcut = net(x)
    handle.remove()
    assert seen == [(len(x), clf.head, 48, 48)] and net.explain_layer == "fuse"  # the shortcut never built it
    torch.testing.assert_close(shortcut, reference, atol=1e-5, rtol=1e-5)
    fast = clf.inference_network()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    torch.testing.assert_close(clf._logits(clf.resize(synth)), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size,kernel,relu_stride", [(47, 5, 2), (33, 1, 4), (45, 3, 4), (40, 3, 1)])
def test_fine_head_shortcut_is_exact_for_any_size_and_kernel(size, kernel, relu_stride):
    """Odd sizes make the bilinear upsamples' mean weights non-uniform, wide input kernels make the
    window sums cut several border rows: the no-gradient mean still equals the explicit map's."""
    from waferscope.models.classifiers.cnn import fine_head_wafer_cnn

    torch.manual_seed(0)
    net = fine_head_wafer_cnn(3, 9, input_kernel=kernel, relu_stride=relu_stride)
    for m in net.modules():  # non-trivial BatchNorm statistics, so the affine tail matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.nn.functional.one_hot(torch.randint(0, 3, (6, size, size)), 3).permute(0, 3, 1, 2).float()
    with torch.enable_grad():
        explicit = net(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(net(x), explicit, atol=1e-4, rtol=1e-4)


def test_fine_head_runs_saved_before_relu_stride_keep_their_maths(synth, tmp_path):
    """Runs saved before ``relu_stride`` existed had the ReLU at S×S and the same weight names: they
    load as ``relu_stride=1`` and predict exactly what they predicted, not silently something else."""
    clf = registry.create("cnn_fine", "classifier", epochs=1, input_size=32, progress=False, relu_stride=1).fit(synth)
    clf.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    del doc["params"]["relu_stride"], doc["extras"]["head_design"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    old = load_run(tmp_path / "run", kind="classifier")
    assert old.relu_stride == 1
    np.testing.assert_allclose(old.predict_proba(synth), clf.predict_proba(synth), atol=1e-6)


def test_class_evidence_map_is_grad_cam(synth):
    """The localisation loss trains the very map Grad-CAM shows: ReLU of the analytic class evidence,
    peak-normalised and upsampled, equals GradCAM at the declared layer."""
    from waferscope.explain.gradcam import GradCAM
    from waferscope.models.classifiers.cnn import class_evidence_map

    clf = registry.create("cnn_fine", "classifier", epochs=1, input_size=32, progress=False, dropout=0.0).fit(synth)
    net = clf.network_.eval()
    x = clf.to_tensor(synth)[:8]
    targets = torch.arange(8) % len(clf.classes_)
    cams, _ = GradCAM(net)(x, targets)
    net.train()  # the map is kept while training (dropout 0: the same forward pass otherwise)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        net(x)
        ev = torch.relu(class_evidence_map(net, targets))
    net.eval()
    ev = ev / ev.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    np.testing.assert_allclose(cams, ev.numpy(), atol=1e-4)


def test_localisation_loss_rewards_evidence_on_the_mask():
    from waferscope.models.classifiers.cnn import localisation_loss

    mask = torch.zeros(2, 8, 8)
    mask[:, 2:4, 2:4] = 1
    on = torch.ones(2, 8, 8)
    inside, outside = mask * 3.0 - 1.0, (1 - mask) * 3.0 - 1.0
    assert float(localisation_loss(inside, mask, on)) < 1e-6
    assert float(localisation_loss(outside, mask, on)) == pytest.approx(1.0)
    assert float(localisation_loss(outside, torch.zeros(2, 8, 8), on)) == 0.0  # no mask, no term
    # evidence off the wafer does not count: everywhere-positive evidence on a wafer that is only the mask
    assert float(localisation_loss(torch.ones(2, 8, 8), mask, mask)) < 1e-6
    assert float(localisation_loss(torch.ones(2, 8, 8), mask, on)) > 0.8


def test_training_masks_turn_with_their_maps(synth):
    """With ``localise``, each batch's masks (in ``_batch_masks``) are its maps' masks after the same
    random rotation/flip: here the mask is exactly the failing dies, so it must equal the fail channel."""
    clf = registry.create("cnn_fine", "classifier", epochs=1, input_size=32, progress=False, batch_size=16)
    fails = WaferDataset(maps=synth.maps, labels=synth.labels, meta=synth.meta,
                         masks=[m == 2 for m in synth.maps])
    clf._train_masks = clf._training_masks(fails)
    clf.classes_ = list(CLASSES)
    x = clf.resize(fails)
    batches = 0
    for xb, _ in clf._train_batches(x, np.zeros(len(x), np.int64), np.random.default_rng(0), "wafer"):
        np.testing.assert_array_equal(clf._batch_masks.numpy(), xb[:, 2].numpy())
        batches += 1
    assert batches == 5  # 72 maps in batches of 16: four full ones and one of 8
    plain = registry.create("cnn_fine", "classifier", localise=0.0)
    assert plain._training_masks(fails) is None  # localise=0 trains without masks


@pytest.mark.parametrize("bad", [{"input_kernel": 2}, {"input_kernel": 0}, {"localise": -1.0}, {"relu_stride": 3}])
def test_fine_head_rejects_bad_settings_before_training(bad, synth):
    from waferscope.errors import ConfigError

    with pytest.raises(ConfigError, match="input_kernel|localise|relu_stride"):
        registry.create("cnn_fine", "classifier", epochs=1, input_size=32, progress=False, **bad).fit(synth)


def test_localisation_term_changes_training(synth):
    runs = [registry.create("cnn_fine", "classifier", epochs=1, input_size=32, progress=False, localise=w).fit(synth)
            for w in (0.0, 1.0)]
    assert runs[0].history_[0]["train_loss"] != runs[1].history_[0]["train_loss"]


def test_training_is_deterministic(synth):
    a = registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False).fit(synth)
    b = registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False).fit(synth)
    np.testing.assert_array_equal(a.predict_proba(synth), b.predict_proba(synth))


def test_classes_are_the_labels_seen_in_wm811k_order(synth):
    sub = synth.subset(np.isin(synth.labels, ["none", "Scratch", "Center"]))
    assert label_order(sub.labels) == ["Center", "Scratch", "none"]
    clf = registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False).fit(sub)
    assert clf.classes_ == ["Center", "Scratch", "none"]
    assert label_order(np.array(["b", "a", ""])) == ["a", "b"]


def test_unlabelled_maps_are_skipped_and_all_unlabelled_is_an_error(synth, capsys):
    labels = synth.labels.copy()
    labels[:5] = ""
    ds = WaferDataset(maps=synth.maps, labels=labels, meta=synth.meta)
    registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False).fit(ds)
    assert "skipping 5 unlabelled" in capsys.readouterr().err
    empty = WaferDataset(maps=synth.maps[:4], labels=np.array([""] * 4, dtype=object), meta=synth.meta.iloc[:4])
    with pytest.raises(DataError, match="no labelled maps"):
        registry.create("cnn", "classifier", epochs=1, progress=False).fit(empty)


@pytest.mark.parametrize("mode", ["loss", "sampler", "none"])
def test_imbalance_modes_train(mode, synth):
    clf = registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False, imbalance=mode, augment=False)
    assert clf.fit(synth).predict(synth).shape == (len(synth),)


def test_loss_hook_is_used(synth):
    calls = []

    class Counting(TorchClassifier):
        def build_network(self, in_chans, n_classes):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * 16 * 16, n_classes))

        def _loss(self, logits, targets, batch_x):
            calls.append(batch_x.shape)
            return super()._loss(logits, targets, batch_x)

    Counting(input_size=16, epochs=1, progress=False, batch_size=16).fit(synth)
    assert calls and calls[0][1:] == (3, 16, 16)


def test_svm_classifiers_round_trip_without_refit(synth, tmp_path):
    for name in ("svm-linear", "svm-rbf"):
        clf = registry.create(name, "classifier", progress=False, n_jobs=1).fit(synth)
        proba = clf.predict_proba(synth)
        assert proba.shape == (len(synth), 9)
        clf.save(tmp_path / name)
        again = load_run(tmp_path / name, kind="classifier")
        assert not hasattr(again, "history_")
        np.testing.assert_array_equal(again.predict_proba(synth), proba)
        assert (again.predict(synth) == synth.labels).mean() > 0.5  # it learnt something


def test_load_refuses_a_detector_run_and_mismatched_weights(synth, tmp_path):
    clf = registry.create("cnn", "classifier", epochs=1, input_size=32, progress=False).fit(synth)
    clf.save(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    doc["kind"] = "detector"
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="not a classifier"):
        load_run(tmp_path / "run", kind="classifier")
    doc["kind"] = "classifier"
    doc["params"]["width"] = 8  # weights saved at the default width (24)
    (tmp_path / "run" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="do not fit"):
        load_run(tmp_path / "run", kind="classifier")


def test_report_dict_and_confusion_png(tmp_path):
    y_true = ["Center", "Center", "Loc", "none", "none", "none"]
    y_pred = ["Center", "Loc", "Loc", "none", "none", "Center"]
    rep = classification_report_dict(y_true, y_pred, ["Center", "Donut", "Loc", "none"])
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class"]["Loc"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    # Donut has no test maps: it is listed but does not drag the macro average down.
    assert rep["per_class"]["Donut"]["support"] == 0
    f1s = [rep["per_class"][c]["f1"] for c in ("Center", "Loc", "none")]
    assert rep["macro_f1"] == pytest.approx(np.mean(f1s))
    assert rep["confusion_matrix"][0] == [1, 0, 1, 0]
    png = save_confusion_matrix_png(rep["confusion_matrix"], rep["classes"], tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temp file left behind


@pytest.mark.parametrize("name", ["gbm", "svm-rbf"])
def test_feature_classifiers_refuse_a_bad_die_state_naming_the_data_set(name, synth):
    # A data set built directly (not through from_maps) is not validated: the model checks the die
    # states once, in the feature extraction, and the error names the data set and the map.
    clf = registry.create(name, "classifier", progress=False).fit(synth)
    bad = [m.copy() for m in synth.maps[:3]]
    bad[1][bad[1] == 1] = 3
    ds = WaferDataset(maps=bad, labels=synth.labels[:3], meta=synth.meta.iloc[:3], name="lot7.csv")
    with pytest.raises(DataError, match="die values must be") as err:
        clf.predict(ds)
    assert "lot7.csv" in str(err.value) and "1" in str(err.value)
