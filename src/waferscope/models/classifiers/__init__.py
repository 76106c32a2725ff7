"""Defect-pattern classifiers; importing this package registers them.

- ``cnn``, ``resnet18``: PyTorch networks on the resized one-hot wafer map (:mod:`.cnn`)
- ``svm-linear``, ``svm-rbf``: the handcrafted WM-811K features + one-vs-one SVM (:mod:`.svm`)
- ``gbm``: gradient-boosted trees on the 120 extended features (:mod:`.gbm`)
- ``extra_trees``: an extremely-randomised forest on the same features (:mod:`.extra_trees`)

:func:`load_default` returns a bundled classifier (by default the one `classify` uses for labels).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.models.classifiers import cnn, extra_trees, gbm, svm  # noqa: F401  (registers cnn, resnet18, gbm, extra_trees, svm-*)

_WEIGHTS = Path(__file__).resolve().parent.parent.parent / "weights"
# The classifiers shipped with waferscope, named by what they are (scripts/train_bundled_classifier.py
# trains each; figures in docs/classification_real.md):
# "gbm": gradient-boosted trees on 120 wafer features of each map's canonical view (compiled
#   features, ~10,000 wafers/s on 2 cores), the most accurate on real lots and the default for labels;
# "cnn_distilled": cnn_fine distilled from gbm (~7,000 wafers/s), the model that exports to ONNX (the
#   Dask engine and `export` run it);
# "cnn_gradcam": the same network trained with a Grad-CAM localisation loss, so that its heat maps sit
#   on the pattern (docs/explain.md), the default for explanations;
# "ensemble": the mean of gbm's and cnn_distilled's probabilities (stored by name: no weights of its
#   own), the most accurate on real lots at about half gbm's speed.
BUNDLED = {"cnn_distilled": _WEIGHTS / "classifier_cnn_distilled",
           "cnn_gradcam": _WEIGHTS / "classifier_cnn_gradcam",
           "ensemble": _WEIGHTS / "classifier_ensemble",
           "gbm": _WEIGHTS / "classifier_gbm"}
# Names used before the bundled models were named by method; they still work, with a deprecation note.
BUNDLED_ALIASES = {"distilled": "cnn_distilled", "fast": "cnn_gradcam", "accurate": "gbm"}
# Which one a command uses when given neither --run nor --bundled. Labels come from gbm: the best
# lot-grouped real-wafer quality, above the speed target (>= 5,000 wafers/s) since its features are
# compiled, no clean-wafer false alarms at any size, and the same call for every rotation/flip.
# Explanations come from "cnn_gradcam", the only network trained so that its Grad-CAM sits on the
# pattern; so the two commands may name different classes for an arguable map. What runs as ONNX
# (the Dask engine) needs a network: "cnn_distilled".
DEFAULT_FOR_LABELS = "gbm"
DEFAULT_FOR_ONNX = "cnn_distilled"
# One line each for `waferscope models`.
BUNDLED_SUMMARY = {"cnn_distilled": "cnn_fine distilled from the bundled gbm: exports to ONNX (the Dask engine's default)",
                   "cnn_gradcam": "cnn_fine with a Grad-CAM localisation loss: the default for explanations",
                   "ensemble": "the mean of gbm and cnn_distilled: the most accurate on real lots, about half gbm's speed",
                   "gbm": "boosted trees on 120 wafer features, trained on dev + dev2: the most accurate, the default for labels"}
DEFAULT_FOR_EXPLANATIONS = "cnn_gradcam"


def load_default(which: str = DEFAULT_FOR_LABELS):
    """Return a classifier shipped with waferscope, by name (:data:`BUNDLED`; old names in :data:`BUNDLED_ALIASES` still work)."""
    from waferscope.base import load_bundled

    return load_bundled(BUNDLED, which, "classifier", aliases=BUNDLED_ALIASES)


# Advanced classification (docs/classification_advanced.md): distillation, autoencoder variants,
# pseudo-labelling, mixed-type multi-label.
from waferscope.models.classifiers import (  # noqa: F401,E402  (registers kd_student, ae_latent, cnn_residual, pseudo_label_cnn, multilabel_cnn, ensemble)
    autoencoder_variants, distill, ensemble, multilabel, semi_supervised)
