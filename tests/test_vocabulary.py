"""The one parameter vocabulary (issue 30, item 3): old names still work for one release.

Every registry entry's names and simple renames are checked in tests/test_conformance.py; here the
cases a table cannot show: a detector's ``batch_size``, whose meaning changed (it was the scoring
batch, now the training batch), the CLI's note, and the docs table.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from waferscope import registry
from waferscope.errors import ConfigError
from waferscope.vocabulary import RETIRED, RETIRED_IN_DISTILLATION, VOCABULARY

from clitools import invoke

ROOT = Path(__file__).resolve().parents[1]


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        return fn()


def test_old_detector_call_keeps_its_meaning():
    """Arguments in the old vocabulary (train_batch_size/verbose beside batch_size) mean what they meant."""
    cls = registry.get("autoencoder", "detector")
    with pytest.warns(FutureWarning) as record:
        est = cls(train_batch_size=8, batch_size=100, verbose=False)
    assert (est.batch_size, est.predict_batch_size, est.progress) == (8, 100, False)
    said = " ".join(str(w.message) for w in record)
    assert "train_batch_size is now called batch_size" in said and "batch_size is now called predict_batch_size" in said
    with pytest.warns(FutureWarning, match="batch_size is now called predict_batch_size"):
        assert registry.get("patchcore", "detector")(batch_size=7).predict_batch_size == 7  # had no training batch


def test_new_batch_size_is_the_training_batch_with_a_note_until_both_are_given():
    cls = registry.get("stfpm", "detector")
    with pytest.warns(FutureWarning, match="meaning of batch_size changed.*predict_batch_size"):
        est = cls(batch_size=8)
    assert est.batch_size == 8 and est.predict_batch_size == cls().predict_batch_size
    est = _no_warning(lambda: cls(batch_size=8, predict_batch_size=32))
    assert (est.batch_size, est.predict_batch_size) == (8, 32)
    _no_warning(est.clone)  # a clone passes both


def test_old_and_new_name_together_is_a_config_error():
    with pytest.raises(ConfigError, match="input_size or its old name size"):
        registry.create("cnn", "classifier", size=32, input_size=16)
    with pytest.raises(ConfigError, match="distil_alpha or its old name alpha"):
        registry.create("kd_student", "classifier", alpha=0.5, distil_alpha=0.4)


def test_bundled_runs_saved_in_the_old_vocabulary_load_silently():
    """The shipped weights keep their model.json (old names, no params_vocabulary)."""
    from waferscope.models.detectors import load_default

    doc = json.loads((ROOT / "src/waferscope/weights/detector_autoencoder/model.json").read_text())
    assert "train_batch_size" in doc["params"] and "params_vocabulary" not in doc
    det = _no_warning(lambda: load_default("autoencoder"))
    assert (det.batch_size, det.predict_batch_size) == (doc["params"]["train_batch_size"], doc["params"]["batch_size"])


def test_cli_set_with_an_old_name_is_a_note(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = invoke(capsys, "classify", "train", "--data", "synthetic:n=18,seed=1", "--model", "cnn",
                           "--epochs", "1", "--set", "size=16", "--set", "width=4", "--set", "progress=false",
                           "--out", str(run))
    assert code == 0, err
    assert "note: cnn: parameter size is now called input_size" in err
    assert json.loads((run / "model.json").read_text())["params"]["input_size"] == 16


def test_docs_table_lists_the_vocabulary():
    text = (ROOT / "docs/contributing.md").read_text()
    table = text[text.index("## One parameter vocabulary"):]
    for name in [*VOCABULARY, *RETIRED, *RETIRED_IN_DISTILLATION]:
        assert re.search(rf"`{name}`", table), f"docs/contributing.md's vocabulary table misses {name}"


def test_callers_that_add_a_quiet_default_translate_first():
    """evaluate's quiet default (progress=False) must not meet a retired `verbose` as 'both names'."""
    from waferscope.evaluate.detection import _maker

    with pytest.warns(FutureWarning, match="verbose is now called progress"):
        det = _maker("pattern_stats", {"verbose": True})()
    assert det.progress is True


def test_shared_docstring_entries_are_filled_in_and_own_descriptions_kept():
    from waferscope.vocabulary import DOCSTRINGS, fill_docstring

    doc = '''Summary.

    Parameters
    ----------
    epochs, seed,
    progress
    seed
        This model's own meaning.

    Attributes
    ----------
    classes_
    '''
    filled = fill_docstring(doc, "Toy")
    assert f"epochs\n    {DOCSTRINGS['epochs']}\nseed\n    {DOCSTRINGS['seed']}\nprogress\n    {DOCSTRINGS['progress']}" in filled
    assert "seed\n    This model's own meaning." in filled
    assert f"classes_\n    {DOCSTRINGS['classes_']}" in filled
    with pytest.raises(ValueError, match="Toy: Parameters entry 'no_such_thing' has no description"):
        fill_docstring("S.\n\nParameters\n----------\nno_such_thing\n", "Toy")


def test_help_of_every_model_describes_every_entry():
    """After filling, no Parameters/Attributes entry of a registered model is left without a description."""
    import inspect

    from waferscope import registry

    for kind in ("classifier", "detector"):
        for name in registry.available(kind):
            lines = inspect.cleandoc(registry.get(name, kind).__doc__ or "").splitlines()
            section = None
            for i, line in enumerate(lines):
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                if line.strip() and set(nxt.strip()) == {"-"}:
                    section = line.strip()
                elif section in ("Parameters", "Attributes") and line.strip() and not line.startswith(" ") \
                        and set(line.strip()) != {"-"}:
                    assert nxt.startswith(" "), f"{name} ({kind}): {section} entry {line.strip()!r} has no description"


def test_a_familys_descriptions_are_inherited_and_win_over_the_vocabulary():
    """A base class's ``_docstrings`` describe its members' bare entries, before DOCSTRINGS does."""
    from waferscope.base import Detector
    from waferscope.vocabulary import DOCSTRINGS

    class Family(Detector):
        _docstrings = {"lr": "Learning rate of the family's optimiser."}

    class Member(Family):
        """Summary.

        Parameters
        ----------
        lr, seed
        """

    assert "lr\n    Learning rate of the family's optimiser." in Member.__doc__
    assert DOCSTRINGS["lr"] not in Member.__doc__ and f"seed\n    {DOCSTRINGS['seed']}" in Member.__doc__
    # the real families: the detectors' lr is not the CNN classifiers' one-cycle lr; RD-ConvNeXt says RD's
    rd_cnx = registry.get("reverse_distillation_convnext", "detector").__doc__
    assert "lr\n    Learning rate of the optimiser." in rd_cnx and "betas\n    Adam's betas." in rd_cnx
    assert "svc_\n    The fitted scikit-learn ``SVC``." in registry.get("svm-linear", "classifier").__doc__
