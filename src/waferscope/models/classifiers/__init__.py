"""Defect-pattern classifiers; importing this package registers them.

- ``cnn``, ``resnet18``: PyTorch networks on the resized one-hot wafer map (:mod:`.cnn`)
- ``svm-linear``, ``svm-rbf``: the handcrafted WM-811K features + one-vs-one SVM (:mod:`.svm`)
- ``gbm``: gradient-boosted trees on the 120 extended features (:mod:`.gbm`)

:func:`load_default` returns a bundled classifier (by default the one `classify` uses for labels).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.models.classifiers import cnn, gbm, svm  # noqa: F401  (registers cnn, resnet18, gbm, svm-*)

_WEIGHTS = Path(__file__).resolve().parent.parent.parent / "weights"
# The classifiers shipped with waferscope (scripts/train_bundled_classifier.py trains each):
# "fast" (cnn_fine: ~9,000 wafers/s, Grad-CAM trained to sit on the pattern; 5-fold dev macro-F1 0.755),
# "distilled" (the same network distilled from gbm without the localisation loss: as fast, 0.837, its
# Grad-CAM not trained to sit on the pattern; docs/classification.md) and
# "accurate" (gbm: ~250 wafers/s, no Grad-CAM; 0.874).
BUNDLED = {"fast": _WEIGHTS / "classifier_fast", "distilled": _WEIGHTS / "classifier_distilled",
           "accurate": _WEIGHTS / "classifier_accurate"}
# Which one a command uses when given neither --run nor --bundled. Labels come from the distilled
# network: at the same speed it beats "fast" by 0.08 macro-F1 on the 5-fold dev protocol (0.837 vs
# 0.755). Explanations come from "fast", the only network trained so that its Grad-CAM sits on the
# pattern (docs/explain.md); so the two commands may name different classes for an arguable map.
DEFAULT_FOR_LABELS = "distilled"
DEFAULT_FOR_EXPLANATIONS = "fast"


def load_default(which: str = DEFAULT_FOR_LABELS):
    """A classifier shipped with waferscope: ``"distilled"`` (the default for labels), ``"fast"`` (the
    default for explanations) or ``"accurate"`` (:data:`BUNDLED`)."""
    from waferscope.base import load_bundled

    return load_bundled(BUNDLED, which, "classifier")


# Advanced classification (docs/classification_advanced.md): distillation, autoencoder variants,
# pseudo-labelling, mixed-type multi-label.
from waferscope.models.classifiers import (  # noqa: F401,E402  (registers kd_student, ae_latent, cnn_residual, pseudo_label_cnn, multilabel_cnn)
    autoencoder_variants, distill, multilabel, semi_supervised)
