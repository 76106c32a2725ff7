"""`waferscope models` lists every registered and bundled model with a summary."""

from __future__ import annotations

import json

from clitools import invoke

from waferscope import registry


def test_models_lists_every_registered_and_bundled_model(capsys):
    code, out, _ = invoke(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    for kind in ("classifier", "detector", "backbone"):
        listed = {r["name"] for r in rows if r["kind"] == kind}
        assert listed == set(registry.available(kind))
    assert all(r["summary"] for r in rows), [r["name"] for r in rows if not r["summary"]]
    bundled = {r["name"]: r for r in rows if r["kind"].startswith("bundled")}
    assert bundled["gbm"]["default"] == "default for classify"
    assert bundled["pattern_contrast"]["model"] == "pattern_contrast"
    code, out, _ = invoke(capsys, "models")
    assert code == 0 and "bundled detectors:" in out
