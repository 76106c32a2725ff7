"""Anomaly detectors, one folder each (torch_model.py, anomaly_map.py, loss.py, detector.py); importing registers them.

Every sub-folder that has a ``detector.py`` is imported here, so adding a detector needs no edit to
this file: register the Detector class in its ``detector.py`` with
``@register("name", kind="detector")``. Shared glue lives in :mod:`.common`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

_HERE = Path(__file__).parent

for _sub in sorted(p.parent.name for p in _HERE.glob("*/detector.py")):
    importlib.import_module(f"{__name__}.{_sub}.detector")

DEFAULT_MODEL_DIR = _HERE.parent.parent / "weights" / "detector_default"


def load_default():
    """The detector shipped with waferscope (scripts/train_bundled_detector.py trains it)."""
    from waferscope.base import load_run
    from waferscope.errors import RunDirError

    if not (DEFAULT_MODEL_DIR / "model.json").is_file():
        raise RunDirError("no bundled detector is installed: pass --run with a run directory from "
                          "`waferscope detect train`", DEFAULT_MODEL_DIR)
    return load_run(DEFAULT_MODEL_DIR, kind="detector")
