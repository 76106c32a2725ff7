"""Conformance: every registered classifier and detector honours the estimator contract (base.py).

After scikit-learn's ``parametrize_with_checks``: the checks are parametrised over
``registry.available("classifier")`` and ``registry.available("detector")``, so a newly registered
model is checked without touching this file, except for one line in :data:`TINY`: its tiny
configuration (a few constructor params that make it fit in a second or two). A registered model
with no entry there fails ``test_has_tiny_params``, and every other check of it fails too; nothing
is skipped silently.

Checks, per model (one fitted model per name, shared across checks by a module-scoped cache):

- ``fit`` returns ``self``; it adds only learned attributes ending in ``_``; ``get_params`` round-trips
  through the constructor; ``clone`` gives an unfitted twin with equal params;
- classifiers: ``predict_proba`` is (N, n_classes) in [0, 1] with rows summing to 1 (multi-label
  models: per-pattern probabilities, no sum), ``predict`` names classes from ``classes_``;
  detectors: N finite scores and one anomaly map per sample at that sample's own H×W;
- ``save`` → ``load_run`` gives the same outputs (to 1e-6);
- two fits with the same seed give identical outputs;
- bad input (an empty data set, a die value 7, images to a wafer-only model) is refused with a
  :class:`~waferscope.errors.WaferscopeError`, never an IndexError/ValueError from deep inside;
- parameters: every constructor parameter has a constraint (base.py), defaults and the tiny
  configuration pass it, and a refused value (an arbitrary object; one just outside each declared
  range or choice) is a ConfigError naming the model, the parameter and what is allowed, from
  ``set_params`` and from ``fit``;
- declared capabilities (base.Tags) hold: a model that takes images fits and predicts on images
  (one that does not refuses them); Grad-CAM works where declared and is a ConfigError elsewhere; a
  model that needs labels refuses unlabelled maps; a temperature is stored and changes the outputs;
  ONNX (below) exports with parity where declared;
- ONNX export: where supported, the exported graph reproduces the model within export.py's own
  tolerance; where not, ``export_onnx`` raises a clear ExportError.
- docstrings: the class's own docstring has numpy ``Parameters`` and ``Attributes`` sections naming
  every constructor parameter (and no other) and every learned attribute the tiny fit sets.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from waferscope import registry
from waferscope.base import _jsonable, load_run
from waferscope.data.dataset import WaferDataset
from waferscope.data.synthetic import generate
from waferscope.errors import WaferscopeError

# ---- the one place a model's tiny configuration lives --------------------------------------------
# name -> constructor params that make the model fit in about a second on tiny data. What a model
# accepts and offers is declared on its class (base.Tags, ``get_tags()``) and checked below.
_NET = dict(epochs=1, input_size=16, batch_size=16, progress=False)
_AE = dict(val_fraction=0.0, ae_epochs=1, latent_dim=8, ae_width=4)
_BANK = dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25, "small_input": True},
             input_size=16, embedding_dim=16, coreset_ratio=0.5, predict_batch_size=16, progress=False)
TINY: dict[str, dict] = {
    # classifiers
    "ae_latent": dict(_NET, **_AE, hidden=8),
    "cnn": dict(_NET, width=4),
    "cnn_fine": dict(_NET, width=4, head=4),
    "cnn_residual": dict(_NET, **_AE, width=4),
    "ensemble": dict(members=["gbm:max_iter=3,max_leaf_nodes=4,n_jobs=1", "extra_trees:n_estimators=5,n_jobs=1"],
                     progress=False),
    "extra_trees": dict(n_estimators=5, n_jobs=1, progress=False),
    "gbm": dict(max_iter=3, max_leaf_nodes=4, n_jobs=1, progress=False),
    "kd_student": dict(_NET, width=4, head=8, teacher_params={"epochs": 1, "width": 4}),
    "multilabel_cnn": dict(_NET, width=4),
    "pseudo_label_cnn": dict(_NET, width=4, rounds=1),
    "resnet18": dict(_NET, width=0.25),
    "svm-linear": dict(n_jobs=1, progress=False),
    "svm-rbf": dict(n_jobs=1, progress=False),
    # detectors
    "autoencoder": dict(input_size=16, base_channels=4, latent_dim=4, epochs=1, batch_size=8, predict_batch_size=64,
                        progress=False),
    "efficientad": dict(pretrained=None, input_size=16, epochs=1, batch_size=8, predict_batch_size=64, progress=False),
    "patchcore": dict(_BANK),
    "pattern_contrast": dict(n_synthetic=18, max_iter=3, max_leaf_nodes=4, n_jobs=1, progress=False),
    "pattern_stats": dict(progress=False),
    "reconpatch": dict(_BANK, representation_dim=16, projection_dim=8, epochs=1, steps_per_epoch=2,
                       contrastive_batch_size=32),
    "reverse_distillation": dict(pretrained=None, input_size=32, epochs=1, batch_size=8, predict_batch_size=64, n_blocks=1,
                                 progress=False),
    "reverse_distillation_convnext": dict(pretrained=None, input_size=32, epochs=1, batch_size=8, predict_batch_size=64,
                                          n_blocks=1, progress=False),
    "stfpm": dict(pretrained=None, input_size=16, epochs=1, batch_size=8, predict_batch_size=64, progress=False),
    "texture_contrast": dict(input_size=24, sigmas=(1.0, 2.0), stride=2, memory_size=200, max_iter=3,
                             max_leaf_nodes=4, progress=False),
    "texture_padim": dict(input_size=24, sigmas=(1.0, 2.0), stride=2, grid=4, progress=False),
    "texture_knn": dict(input_size=24, sigmas=(1.0, 2.0), stride=2, memory_size=200, progress=False),
}

# The package's own models: other test modules register throw-away models (bench-test-*, export-test-*)
# when pytest imports them, and those are not part of what waferscope ships.
MODELS = [(name, kind) for kind in ("classifier", "detector") for name in registry.available(kind)
          if registry.get(name, kind).__module__.startswith("waferscope.")]
IDS = [name for name, _ in MODELS]

# Known failures still to fix, as (check, model) → reason; strict, so a fix that lands makes them fail
# until the entry is removed. Only for failures in code this branch may not touch yet (none now).
XFAIL: dict[tuple[str, str], str] = {}


def models(check: str, where=lambda name: True) -> list:
    """MODELS as pytest params for ``check``, with XFAIL entries marked xfail(strict=True)."""
    out = []
    for name, kind in MODELS:
        if not where(name):
            continue
        reason = XFAIL.get((check, name))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, kind, id=name, marks=marks))
    return out


def tiny_params(name: str) -> dict:
    """The constructor params of ``name``'s tiny configuration; a model without one is a failure."""
    if name not in TINY:
        pytest.fail(f"registered model {name!r} has no tiny configuration: add an entry to TINY in "
                    "tests/test_conformance.py (docs/contributing.md, 'Adding a model')")
    return {k: v for k, v in TINY[name].items() if not k.startswith("_")}


def tag(name: str, key: str):
    """The model's declared capability ``key`` (base.Tags)."""
    kind = dict(MODELS)[name]
    tags = registry.get(name, kind).get_tags()
    if key == "wafer_only":
        return "image" not in tags.input_kinds
    return getattr(tags, key)


# ---- tiny data -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    train = generate(27, seed=0, size=(24, 24))  # 3 maps of each of the 9 classes, with multi-labels
    normals = generate(12, seed=1, size=(24, 24), classes=["none"])
    test = generate(9, seed=2)  # the product catalogue's grids: every map has its own H×W
    return {"classifier": train, "detector": normals, "test": test}


def _empty(ds: WaferDataset) -> WaferDataset:
    return ds.subset(np.arange(0))


def _with_die_seven(ds: WaferDataset) -> WaferDataset:
    """A copy of ``ds`` whose first map has a die of value 7 (built without from_maps' validation,
    as a caller constructing WaferDataset directly can)."""
    maps = [m.copy() for m in ds.maps]
    on = np.argwhere(maps[0] == 1)
    maps[0][tuple(on[len(on) // 2])] = 7
    return WaferDataset(maps=maps, labels=ds.labels.copy(), meta=ds.meta.copy(), multilabels=ds.multilabels,
                        masks=ds.masks, kind=ds.kind, name="die-seven")


def _as_images(ds: WaferDataset) -> WaferDataset:
    """The same samples as RGB images (the MVTec-AD kind), with "good" for normal maps."""
    palette = np.array([[0, 0, 0], [40, 200, 40], [220, 30, 30]], dtype=np.uint8)
    labels = ["good" if lab == "none" else lab for lab in ds.labels]
    return WaferDataset.from_maps([palette[m] for m in ds.maps], labels, multilabels=ds.multilabels, kind="image",
                                  name="images")


def _outputs(est, ds) -> list[np.ndarray]:
    if est.registry_kind == "classifier":
        return [np.asarray(est.predict_proba(ds))]
    res = est.score(ds)
    return [np.asarray(res.scores)] + [np.asarray(m) for m in res.maps]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray], atol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


# ---- one fitted model per name, shared by the checks ---------------------------------------------
_CACHE: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def fitted(data):
    """fitted(name, kind) → (unfitted twin, fitted estimator, value fit returned, attributes fit added)."""

    def get(name: str, kind: str):
        if name not in _CACHE:
            params = tiny_params(name)
            est = registry.create(name, kind, **params)
            before = set(vars(est))
            out = est.fit(data[kind])
            _CACHE[name] = (registry.create(name, kind, **params), est, out, set(vars(est)) - before)
        return _CACHE[name]

    yield get
    _CACHE.clear()


# ---- checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_has_tiny_params(name, kind):
    params = tiny_params(name)
    unknown = set(params) - set(registry.get(name, kind)._param_names())
    assert not unknown, f"TINY[{name!r}] names parameters the constructor does not take: {sorted(unknown)}"


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_params_and_clone(name, kind):
    params = tiny_params(name)
    est = registry.create(name, kind, **params)
    assert not est.is_fitted
    got = est.get_params()
    assert set(got) == set(type(est)._param_names())
    assert all(got[k] is params[k] or got[k] == params[k] for k in params), "params not stored unchanged"
    rebuilt = type(est)(**got)
    assert _jsonable(rebuilt.get_params()) == _jsonable(got)
    twin = est.clone()
    assert type(twin) is type(est) and twin is not est
    assert _jsonable(twin.get_params()) == _jsonable(got)


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_fit_returns_self_and_learned_state_ends_in_underscore(name, kind, fitted):
    unfitted, est, out, added = fitted(name, kind)
    assert out is est, "fit() must return self"
    assert est.is_fitted
    public = sorted(a for a in added if not a.startswith("_"))
    assert public, "fit() learned no attribute ending in '_'"
    bad = [a for a in public if not a.endswith("_")]
    assert not bad, f"fit() set public attributes not ending in '_': {bad}"
    assert _jsonable(est.get_params()) == _jsonable(unfitted.get_params()), "fit() changed the params"
    twin = est.clone()
    assert not twin.is_fitted, "clone() of a fitted model must be unfitted"
    assert _jsonable(twin.get_params()) == _jsonable(est.get_params())


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_outputs(name, kind, fitted, data):
    _, est, _, _ = fitted(name, kind)
    test = data["test"]
    n = len(test)
    if kind == "classifier":
        proba = np.asarray(est.predict_proba(test))
        assert proba.shape == (n, len(est.classes_))
        assert np.all(np.isfinite(proba)) and proba.min() >= 0 and proba.max() <= 1 + 1e-6
        if not tag(name, "multilabel"):
            np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
            pred = np.asarray(est.predict(test))
            assert pred.shape == (n,)
            assert set(pred.tolist()) <= set(est.classes_)
        else:
            assert len(est.predict(test)) == n
    else:
        res = est.score(test)
        scores = np.asarray(res.scores)
        assert scores.shape == (n,) and np.all(np.isfinite(scores))
        assert len(res.maps) == n
        for amap, wafer in zip(res.maps, test.maps):
            assert amap.shape == wafer.shape[:2]
            assert np.all(np.isfinite(amap))


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_save_load_round_trip(name, kind, fitted, data, tmp_path):
    _, est, _, _ = fitted(name, kind)
    est.save(tmp_path / "run")
    again = load_run(tmp_path / "run", kind=kind)
    assert type(again) is type(est)
    assert _jsonable(again.get_params()) == _jsonable(est.get_params())
    if kind == "classifier":
        assert list(again.classes_) == list(est.classes_)
    _assert_same(_outputs(again, data["test"]), _outputs(est, data["test"]))


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_run_saved_under_old_parameter_names_loads_the_same(name, kind, fitted, data, tmp_path):
    """A run saved before the one parameter vocabulary (issue 30) has the old names and no
    ``params_vocabulary``: it loads, without a warning, to today's parameters and the same outputs."""
    _, est, _, _ = fitted(name, kind)
    est.save(tmp_path / "run")
    path = tmp_path / "run" / "model.json"
    doc = json.loads(path.read_text())
    back = {new: old for old, new in type(est).param_renames().items()}  # today's name → the old one
    doc["params"] = {back.get(k, k): v for k, v in doc["params"].items()}
    del doc["params_vocabulary"]
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # nothing a user of an old run can act on
        again = load_run(tmp_path / "run", kind=kind)
    assert _jsonable(again.get_params()) == _jsonable(est.get_params())
    _assert_same(_outputs(again, data["test"]), _outputs(est, data["test"]))


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_parameters_use_the_one_vocabulary(name, kind):
    """A concept several models share has one name (waferscope.vocabulary; docs/contributing.md);
    an old name the model still accepts is translated, with a FutureWarning."""
    from waferscope.vocabulary import RETIRED, RETIRED_IN_DISTILLATION

    cls = registry.get(name, kind)
    params = set(cls._param_names())
    retired = {**RETIRED, **(RETIRED_IN_DISTILLATION if "teacher" in params else {})}
    used = {old: new for old, new in retired.items() if old in params}
    assert not used, f"{name} takes retired parameter names (old → vocabulary name): {used}"
    assert "batch_size" not in params or "epochs" in params, \
        f"{name}: batch_size is the training batch of a model that trains in steps; a scoring batch is predict_batch_size"
    assert "teacher" not in params or kind == "classifier", \
        f"{name}: teacher is a classifier to distil from; name a network to distil from `backbone`"
    defaults = cls().get_params()
    for old, new in cls.param_renames().items():
        if old in params:  # a name whose meaning changed: tests/test_vocabulary.py checks it
            continue
        with pytest.warns(FutureWarning, match=f"{old} is now called {new}"):
            assert cls(**{old: defaults[new]}).get_params() == defaults
        with pytest.warns(FutureWarning, match=f"{old} is now called {new}"):
            assert cls().set_params(**{old: defaults[new]}).get_params() == defaults


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_same_seed_same_outputs(name, kind, fitted, data):
    _, est, _, _ = fitted(name, kind)
    refit = est.clone().fit(data[kind])
    _assert_same(_outputs(refit, data["test"]), _outputs(est, data["test"]), atol=0)


def _refused(call, what: str) -> WaferscopeError:
    try:
        call()
    except WaferscopeError as exc:
        assert str(exc).strip(), f"{what}: the error has no message"
        return exc
    except Exception as exc:  # an error from deep inside numpy/torch/sklearn is a failure
        pytest.fail(f"{what}: raised {type(exc).__name__} ({exc}) instead of a WaferscopeError")
    pytest.fail(f"{what}: accepted without an error")


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_refuses_an_empty_training_set(name, kind, data):
    est = registry.create(name, kind, **tiny_params(name))
    _refused(lambda: est.fit(_empty(data[kind])), "fit on an empty data set")


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_empty_input_gives_empty_output(name, kind, fitted, data):
    _, est, _, _ = fitted(name, kind)
    empty = _empty(data["test"])
    try:
        out = _outputs(est, empty)
    except WaferscopeError:
        return  # refusing clearly is fine too
    if kind == "classifier":
        assert out[0].shape == (0, len(est.classes_))
    else:
        assert out[0].shape == (0,) and len(out) == 1


@pytest.mark.parametrize("name,kind", models("die_seven"))
def test_refuses_a_die_value_of_seven(name, kind, fitted, data):
    _, est, _, _ = fitted(name, kind)
    bad = _with_die_seven(data["test"])
    exc = _refused(lambda: _outputs(est, bad), "predict on a map with die value 7")
    assert "7" in str(exc), f"the message should name the bad value: {exc}"
    twin = registry.create(name, kind, **tiny_params(name))
    train = _with_die_seven(data[kind])
    _refused(lambda: twin.fit(train), "fit on a map with die value 7")


@pytest.mark.parametrize("name,kind", models("images", lambda name: tag(name, "wafer_only")))
def test_wafer_only_model_refuses_images(name, kind, fitted, data):
    _, est, _, _ = fitted(name, kind)
    images = _as_images(data[kind])
    _refused(lambda: registry.create(name, kind, **tiny_params(name)).fit(images), "fit on images")
    _refused(lambda: _outputs(est, _as_images(data["test"])), "predict on images")


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_onnx_export_parity_or_clear_refusal(name, kind, fitted, data, tmp_path):
    from waferscope.export import ExportError, OnnxModel, export_onnx

    _, est, _, _ = fitted(name, kind)
    path = tmp_path / "model.onnx"
    if not tag(name, "onnx"):
        with pytest.raises(ExportError, match=name):
            export_onnx(est, path)
        assert not path.exists()
        return
    tolerance = 1e-4  # export_onnx's own default parity tolerance
    model = OnnxModel(export_onnx(est, path, tolerance=tolerance))
    test = data["test"]
    if kind == "classifier":
        np.testing.assert_allclose(model.predict_proba(test), est.predict_proba(test), atol=tolerance, rtol=0)
    else:
        want, got = est.score(test), model.score(test)
        np.testing.assert_allclose(got.scores, want.scores, atol=tolerance, rtol=tolerance)
        for a, b in zip(got.maps, want.maps):
            np.testing.assert_allclose(a, b, atol=tolerance, rtol=tolerance)


# ---- parameters: declared, validated at set_params and at fit ------------------------------------
class _NotAParameter:
    """A value no parameter of any model allows."""

    def __repr__(self) -> str:
        return "<not a parameter>"


def _bad_values(constraints: list) -> list:
    """Values the constraints refuse: an arbitrary object, and per alternative one just outside it."""
    from waferscope.base import Interval, Options, _allowed

    out: list = [_NotAParameter()]
    for c in constraints:
        if isinstance(c, Interval):
            step = 1 if c.kind is int else 0.5
            if c.low is not None:
                out.append(c.low - step if c.closed in ("both", "left") else c.low)
            if c.high is not None:
                out.append(c.high + step if c.closed in ("both", "right") else c.high)
            if c.multiple_of:
                out.append((c.low or 0) + c.multiple_of + 1)
            out.append(True)  # a bool is not a number here
        elif isinstance(c, Options):
            out.append("not-an-option")
    return [v for v in out if not _allowed(v, constraints)]


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_every_parameter_is_declared_and_defaults_are_allowed(name, kind):
    cls = registry.get(name, kind)
    undeclared = [p for p, c in cls.parameter_constraints().items() if c is None]
    assert not undeclared, f"{name}: no constraint for {undeclared} (annotate the type or declare _parameter_constraints)"
    cls().validate_params()
    cls(**tiny_params(name)).validate_params()


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_bad_parameters_are_a_config_error_naming_them(name, kind, data):
    from waferscope.base import _describe
    from waferscope.errors import ConfigError

    cls = registry.get(name, kind)
    with pytest.raises(ConfigError, match="no_such_parameter"):
        cls(**tiny_params(name)).set_params(no_such_parameter=1)
    for param, constraints in cls.parameter_constraints().items():
        bad_values = _bad_values(constraints)
        assert bad_values, f"{name}.{param}: no value is refused"
        for bad in bad_values:
            est = cls(**tiny_params(name))
            with pytest.raises(ConfigError) as info:
                est.set_params(**{param: bad})
            msg = str(info.value)
            assert name in msg and param in msg and _describe(constraints) in msg, msg
            assert getattr(est, param) is not bad, "set_params stored a refused value"
            before = dict(tiny_params(name), **{param: bad})
            with pytest.raises(ConfigError, match=param):
                cls(**before).fit(data[kind])


# ---- declared capabilities (base.Tags) hold --------------------------------------------------------
@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_tags_are_well_formed(name, kind):
    tags = registry.get(name, kind).get_tags()
    assert tags.input_kinds and set(tags.input_kinds) <= {"wafer", "image"}
    assert tags.needs_labels == (kind == "classifier"), "classifiers need labels; detectors fit on normals"
    assert not (kind == "detector" and (tags.gradcam or tags.multilabel or tags.temperature))


@pytest.mark.parametrize("name,kind", models("images", lambda name: not tag(name, "wafer_only")))
def test_image_model_fits_and_predicts_on_images(name, kind, data):
    est = registry.create(name, kind, **tiny_params(name)).fit(_as_images(data[kind]))
    test = _as_images(data["test"])
    out = _outputs(est, test)
    assert len(out[0]) == len(test) and np.all(np.isfinite(out[0]))


@pytest.mark.parametrize("name,kind", [p for p in models("gradcam") if p.values[1] == "classifier"])
def test_gradcam_where_declared(name, kind, fitted, data):
    from waferscope.errors import ConfigError
    from waferscope.explain import explain

    _, est, _, _ = fitted(name, kind)
    test = data["test"]
    if not tag(name, "gradcam"):
        with pytest.raises(ConfigError, match="Grad-CAM"):
            explain(est, test, progress=False)
        return
    heat = explain(est, test, progress=False).heat
    assert len(heat) == len(test)
    for h, m in zip(heat, test.maps):
        assert h.shape == m.shape[:2] and np.all(np.isfinite(h))


@pytest.mark.parametrize("name,kind", [p for p in models("labels") if p.values[1] == "classifier"])
def test_model_that_needs_labels_refuses_unlabelled_maps(name, kind, data):
    unlabelled = WaferDataset.from_maps(data[kind].maps, None, name="unlabelled")
    _refused(lambda: registry.create(name, kind, **tiny_params(name)).fit(unlabelled), "fit on unlabelled maps")


@pytest.mark.parametrize("name,kind", [p for p in models("temperature") if p.values[1] == "classifier"])
def test_temperature_where_declared(name, kind, fitted, data, tmp_path):
    _, est, _, _ = fitted(name, kind)
    if not tag(name, "temperature"):
        return  # nothing claimed (callers such as `evaluate classification calibrate` ask the tag)
    test = data["test"]
    before = np.asarray(est.predict_proba(test))
    twin = load_run(est.save(tmp_path / "run"), kind=kind).set_temperature(3.0)
    after = np.asarray(twin.predict_proba(test))
    # (a tiny model may give uniform probabilities, which no temperature moves)
    assert not np.allclose(after, before) or np.allclose(before, 1 / before.shape[1]), "the temperature changed nothing"
    np.testing.assert_allclose(load_run(twin.save(tmp_path / "run", overwrite=True)).predict_proba(test), after,
                               atol=1e-6)


@pytest.mark.parametrize("name,kind", [p for p in models("wafer_features") if p.values[1] == "classifier"
                                         and tag(p.values[0], "wafer_features")])
def test_wafer_features_where_declared(name, kind, fitted, data):
    """A model that offers its wafer features: predict_proba is exactly its features → probabilities."""
    from waferscope.features.handcrafted import extract_features

    _, est, _, _ = fitted(name, kind)
    test = data["test"]
    feat = est.features(test)
    np.testing.assert_array_equal(est.proba_from_features(feat), est.predict_proba(test))
    feature_set, orient = est.feature_view()
    # the view names them: anyone computing that view gets the same rows
    np.testing.assert_array_equal(extract_features(test.maps, n_jobs=1, feature_set=feature_set, orient=orient), feat)


# ---- detectors own their decision ----------------------------------------------------------------
DETECTORS = [p for p in models("threshold") if p.values[1] == "detector"]


@pytest.mark.parametrize("name,kind", DETECTORS)
def test_detector_learns_its_threshold_and_decides(name, kind, fitted, data, tmp_path):
    _, est, _, _ = fitted(name, kind)
    assert isinstance(est.threshold_, float) and np.isfinite(est.threshold_)
    assert "quantile" in est.threshold_info_["method"]  # fit's default rule on normal-only data
    normal_scores = np.asarray(est.score(data["detector"]).scores)
    assert est.threshold_ == pytest.approx(np.quantile(normal_scores.astype(np.float64), 0.99), rel=1e-9, abs=1e-12)
    test = data["test"]
    decisions = est.predict(test)
    assert decisions.dtype == bool and decisions.shape == (len(test),)
    np.testing.assert_array_equal(decisions, np.asarray(est.score(test).scores) >= est.threshold_)
    again = load_run(est.save(tmp_path / "run"), kind=kind)
    assert again.threshold_ == est.threshold_ and again.threshold_info_ == est.threshold_info_
    np.testing.assert_array_equal(again.predict(test), decisions)


def test_fit_without_calibration_learns_no_threshold(data):
    """fit(..., calibrate=False) is the contract's (base.py), the same for every detector: one cheap one."""
    det = registry.create("pattern_stats", "detector", **tiny_params("pattern_stats"))
    assert det.fit(data["detector"], calibrate=False) is det and det.threshold_ is None
    _refused(lambda: det.predict(data["test"]), "predict without a threshold")


@pytest.mark.parametrize("name,kind", DETECTORS)
def test_detector_threshold_rules(name, kind, fitted, data, tmp_path):
    from waferscope.errors import ConfigError

    _, est, _, _ = fitted(name, kind)
    twin = load_run(est.save(tmp_path / "run"), kind=kind).set_threshold(None)  # a copy, not a refit
    _refused(lambda: twin.predict(data["test"]), "predict without a threshold")
    # labelled anomalies given: the best-F1 threshold over them and the normals
    mixed = WaferDataset.concat([data["detector"], data["test"]], name="mixed")
    twin.calibrate(mixed)
    assert "best F1" in twin.threshold_info_["method"]
    from waferscope.metrics.detection import detection_targets, threshold_best_f1

    idx, y = detection_targets(mixed)
    assert twin.threshold_ == threshold_best_f1(y, np.asarray(twin.score(mixed.subset(idx)).scores))
    with pytest.raises(ConfigError, match="rule"):
        twin.calibrate(mixed, rule="median")


# ---- docstrings (issue 30 item 7): what help(Model) shows names every parameter and learned attribute
def _doc_section(cls, title: str) -> set[str] | None:
    """The entry names of numpy-style section ``title`` of the class's own docstring (None: no such section).

    An entry is a line at the section's indentation (``name`` or ``a, b, c``, optionally ``: type``);
    its description is indented below it.
    """
    import inspect

    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    lines = doc.splitlines()
    starts = [i for i in range(len(lines) - 1)
              if lines[i].strip() and set(lines[i + 1].strip()) == {"-"} and not lines[i].startswith(" ")]
    for k, i in enumerate(starts):
        if lines[i].strip() != title:
            continue
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        names = set()
        for line in lines[i + 2:end]:
            if line.strip() and not line.startswith((" ", "\t")):
                names.update(n.strip() for n in line.split(":")[0].split(",") if n.strip())
        return names
    return None


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_docstring_lists_every_parameter(name, kind):
    cls = registry.get(name, kind)
    listed = _doc_section(cls, "Parameters")
    assert listed is not None, f"{cls.__qualname__}'s docstring has no 'Parameters' section (numpy style)"
    params = set(cls._param_names())
    assert not params - listed, f"{cls.__qualname__}'s docstring misses parameters {sorted(params - listed)}"
    assert not listed - params, f"{cls.__qualname__}'s docstring lists parameters it does not take: {sorted(listed - params)}"


@pytest.mark.parametrize("name,kind", MODELS, ids=IDS)
def test_docstring_lists_every_learned_attribute(name, kind, fitted):
    _, est, _, added = fitted(name, kind)
    cls = type(est)
    listed = _doc_section(cls, "Attributes")
    assert listed is not None, f"{cls.__qualname__}'s docstring has no 'Attributes' section (numpy style)"
    learned = {a for a in added if not a.startswith("_") and a.endswith("_")}
    assert not learned - listed, f"{cls.__qualname__}'s docstring misses learned attributes {sorted(learned - listed)}"
    not_learned = sorted(a for a in listed if not a.endswith("_"))
    assert not not_learned, f"{cls.__qualname__}'s Attributes names non-learned attributes (no trailing _): {not_learned}"
