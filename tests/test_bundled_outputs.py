"""The bundled models give the outputs recorded in tests/data/bundled_outputs.json (issue 30:
refactoring the model contract must leave them unchanged). Recorded with tests/bundled_outputs.py
before the refactor; re-record only after a deliberate change such as retrained weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundled_outputs import EXPECTED, current_outputs


@pytest.fixture(scope="module")
def outputs():
    return json.loads(EXPECTED.read_text()), current_outputs()


def test_same_models_are_bundled(outputs):
    want, got = outputs
    assert sorted(got) == sorted(want), "the set of bundled models changed: re-record (tests/bundled_outputs.py)"


@pytest.mark.parametrize("key", sorted(json.loads(EXPECTED.read_text())))
def test_bundled_model_outputs_unchanged(outputs, key):
    want, got = outputs
    if key not in got:
        pytest.fail(f"{key} is no longer bundled")
    w, g = want[key], got[key]
    assert g["weights_sha256"] == w["weights_sha256"], (
        f"{key}: the weights file changed (a retrained model?): re-record with tests/bundled_outputs.py")
    for field in ("proba", "scores", "map_sums", "map_max"):
        if field in w:
            tol = 1e-3 if field == "map_sums" else 2e-6  # sums of many float32 values; rounded values
            np.testing.assert_allclose(np.asarray(g[field]), np.asarray(w[field]), rtol=0, atol=tol,
                                       err_msg=f"{key}: {field} changed")
    assert g.get("threshold") == w.get("threshold"), f"{key}: decision threshold changed"
    assert g["decisions_sha256"] == w["decisions_sha256"], f"{key}: decisions changed"
