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
# The two detectors shipped with waferscope (scripts/train_bundled_detector.py trains both, on the
# protocol's 250 training normals): "fast" is the autoencoder (wafer maps and images; dev image AUROC
# 0.929) and "accurate" is pattern_contrast (wafer maps only; 0.986).
BUNDLED = {"fast": DEFAULT_MODEL_DIR, "accurate": DEFAULT_MODEL_DIR.parent / "detector_accurate"}


def load_default(which: str = "fast"):
    """A detector shipped with waferscope: ``"fast"`` (the default) or ``"accurate"`` (:data:`BUNDLED`)."""
    from waferscope.base import load_bundled

    return load_bundled(BUNDLED, which, "detector")
