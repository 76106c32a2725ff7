"""The held-out classification protocol (waferscope.evaluate.classification) and `waferscope evaluate heldout`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import invoke
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate
from waferscope.evaluate import classification as ev


class ByFailShare:
    """A stand-in classifier: 'Near-full' when most dies fail, else 'none' (enough to check the scoring)."""

    classes_ = np.array(["Near-full", "none"])

    def predict_proba(self, ds):
        share = np.array([(m == 2).sum() / max((m > 0).sum(), 1) for m in ds.maps])
        return np.c_[share > 0.5, share <= 0.5].astype(float)


def test_heldout_leaves_out_seen_maps_and_scores_the_rest():
    data = generate(30, seed=5)
    seen = data.subset(np.arange(10))
    rows = ev.heldout({"stub": ByFailShare}, data, [seen])
    assert len(rows) == 1 and rows[0]["n"] == 20  # the 10 seen maps are not scored
    held = data.subset(np.arange(10, 30))
    pred = ByFailShare.classes_[ByFailShare().predict_proba(held).argmax(1)]
    ref = ev.score_predictions(held.labels, pred)
    assert rows[0]["accuracy"] == pytest.approx(ref["accuracy"])
    assert rows[0]["macro_f1"] == pytest.approx(np.mean(list(ref["per_class_f1"].values())))
    assert set(rows[0]["per_class_f1"]) == set(held.labels.astype(str))  # classes present in the sample


def test_heldout_refuses_a_sample_entirely_seen():
    from waferscope.errors import DataError

    data = generate(8, seed=1)
    with pytest.raises(DataError, match="every map of the held-out sample is in the training sets"):
        ev.heldout({"stub": ByFailShare}, data, [data], sample_name="s.parquet")


def test_map_key_tells_shape_apart():
    a = np.ones((2, 3), np.uint8)
    assert ev.map_key(a) != ev.map_key(a.reshape(3, 2)) and ev.map_key(a) == ev.map_key(a.copy())


def test_cli_heldout(capsys, tmp_path):
    data = generate(24, seed=3)
    write_parquet(data, tmp_path / "sample.parquet")
    write_parquet(data.subset(np.arange(4)), tmp_path / "seen.parquet")
    code, out, err = invoke(capsys, "evaluate", "heldout", "--sample", tmp_path / "sample.parquet",
                            "--seen", tmp_path / "seen.parquet", "--json", tmp_path / "rows.jsonl")
    assert code == 0, err
    assert "20 maps of sample.parquet are in none of: seen.parquet" in out
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    from waferscope.models.classifiers import BUNDLED

    assert [r["model"] for r in rows] == list(BUNDLED) and all(0 <= r["macro_f1"] <= 1 for r in rows)


def test_cli_heldout_bad_input(capsys, tmp_path):
    code, _, err = invoke(capsys, "evaluate", "heldout", "--run", tmp_path)
    assert code == 2 and "model.json is missing" in err
    code, _, err = invoke(capsys, "evaluate", "heldout", "--sample", tmp_path / "nope.parquet",
                          "--seen", tmp_path / "nope.parquet")
    assert code == 2 and "nope.parquet" in err and "no such file" in err
