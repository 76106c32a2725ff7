"""The ``ensemble`` classifier: the plain mean of its members' probabilities, saved as one run (own
members' weights inside it, bundled members by name), refused clearly when misconfigured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from waferscope import registry
from waferscope.base import load_run
from waferscope.data.synthetic import generate
from waferscope.errors import ConfigError
from waferscope.models.classifiers import load_default
from waferscope.models.classifiers.ensemble import EnsembleClassifier

TINY_MEMBERS = ["gbm:max_iter=3,max_leaf_nodes=4,n_jobs=1", "extra_trees:n_estimators=5,n_jobs=1"]


@pytest.fixture(scope="module")
def data():
    return generate(60, seed=3), generate(20, seed=4)


@pytest.fixture(scope="module")
def fitted(data):
    return registry.create("ensemble", "classifier", members=TINY_MEMBERS, progress=False).fit(data[0])


def test_probabilities_are_the_mean_of_the_members(data, fitted):
    train, test = data
    alone = [registry.create(n, "classifier", progress=False, **p).fit(train)
             for n, p in (registry.parse_spec(s, "classifier") for s in TINY_MEMBERS)]
    want = np.mean([m.predict_proba(test) for m in alone], axis=0)
    np.testing.assert_allclose(fitted.predict_proba(test), want, rtol=0, atol=1e-12)
    assert fitted.classes_ == [str(c) for c in alone[0].classes_]
    # the two members disagree somewhere, so the mean is not one of them
    assert not np.allclose(want, alone[0].predict_proba(test))


def test_save_load_round_trip(tmp_path, data, fitted):
    run = fitted.save(tmp_path / "run")
    back = load_run(run, kind="classifier")
    np.testing.assert_array_equal(back.predict_proba(data[1]), fitted.predict_proba(data[1]))
    doc = json.loads((run / "model.json").read_text())
    assert [m["name"] for m in doc["extras"]["members"]] == ["gbm", "extra_trees"]


def test_bundled_members_are_saved_by_name(tmp_path, data):
    est = EnsembleClassifier.from_members(["bundled:gbm", "bundled:cnn_distilled"])
    run = est.save(tmp_path / "run")
    assert (run / "weights.safetensors").stat().st_size < 1000  # names, not weights
    back = load_run(run, kind="classifier")
    gbm, cnn = load_default("gbm"), load_default("cnn_distilled")
    want = (gbm.predict_proba(data[1]) + cnn.predict_proba(data[1])) / 2
    np.testing.assert_allclose(back.predict_proba(data[1]), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("members, match", [
    (["gbm"], "at least two"),
    (["gbm", "no_such_model"], "unknown classifier 'no_such_model'"),
    (["gbm", "ensemble"], "another ensemble"),
    (["gbm", "bundled:cnn_distilled"], "from_members"),
])
def test_bad_members_are_a_config_error(data, members, match):
    with pytest.raises(ConfigError, match=match):
        registry.create("ensemble", "classifier", members=members, progress=False).fit(data[0])


def test_members_must_share_classes(data):
    a = registry.create("gbm", "classifier", max_iter=2, max_leaf_nodes=4, n_jobs=1, progress=False).fit(data[0])
    keep = np.asarray(data[0].labels) != np.asarray(data[0].labels)[0]
    b = registry.create("gbm", "classifier", max_iter=2, max_leaf_nodes=4, n_jobs=1,
                        progress=False).fit(data[0].subset(np.flatnonzero(keep)))
    with pytest.raises(ConfigError, match="different classes"):
        EnsembleClassifier.from_members([a, b])


def test_progress_reaches_the_members(fitted):
    fitted.set_params(progress=True)
    assert all(m.progress for m in fitted.members_)
    fitted.set_params(progress=False)
    assert not any(m.progress for m in fitted.members_)
