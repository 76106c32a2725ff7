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

_WEIGHTS = _HERE.parent.parent / "weights"
# The detectors shipped with waferscope, named by method (scripts/train_bundled_detector.py trains
# both on the dev protocol's 250 training normals; figures in docs/detection.md):
# "pattern_contrast": trees on 61 pattern features, real normals vs simulated defects (dev image AUROC
#   0.986, ~1,100 wafers/s), the default: the best real-wafer quality above 1,000 wafers/s;
# "autoencoder": a convolutional autoencoder on the die grid (0.929, ~1,400 wafers/s; exports to ONNX).
# Both are trained on wafer maps; ordinary images need a run from `waferscope detect train`.
BUNDLED = {"pattern_contrast": _WEIGHTS / "detector_pattern_contrast",
           "autoencoder": _WEIGHTS / "detector_autoencoder"}
BUNDLED_ALIASES = {"accurate": "pattern_contrast", "fast": "autoencoder"}
DEFAULT_DETECTOR = "pattern_contrast"
# One line each for `waferscope models`.
BUNDLED_SUMMARY = {"pattern_contrast": "trees: your normal maps vs simulated defects; the default",
                   "autoencoder": "convolutional autoencoder; exports to ONNX"}


def load_default(which: str = DEFAULT_DETECTOR):
    """Return a detector shipped with waferscope, by name (:data:`BUNDLED`; old names in :data:`BUNDLED_ALIASES` still work)."""
    from waferscope.base import load_bundled

    return load_bundled(BUNDLED, which, "detector", aliases=BUNDLED_ALIASES)
