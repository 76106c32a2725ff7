"""Defect-pattern classifiers; importing this package registers them.

- ``cnn``, ``resnet18``: PyTorch networks on the resized one-hot wafer map (:mod:`.cnn`)
- ``svm-linear``, ``svm-rbf``: the handcrafted WM-811K features + one-vs-one SVM (:mod:`.svm`)
- ``gbm``: gradient-boosted trees on the 120 extended features (:mod:`.gbm`)

:func:`load_default` returns the bundled default classifier.
"""

from __future__ import annotations

from pathlib import Path

from waferscope.models.classifiers import cnn, gbm, svm  # noqa: F401  (registers cnn, resnet18, gbm, svm-*)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "weights" / "classifier_default"


def load_default():
    """The classifier shipped with waferscope (scripts/train_bundled_classifier.py trains it)."""
    from waferscope.base import load_run

    return load_run(DEFAULT_MODEL_DIR, kind="classifier")
# Advanced classification (docs/classification_advanced.md): distillation, autoencoder variants,
# pseudo-labelling, mixed-type multi-label.
from waferscope.models.classifiers import (  # noqa: F401,E402  (registers kd_student, ae_latent, cnn_residual, pseudo_label_cnn, multilabel_cnn)
    autoencoder_variants, distill, multilabel, semi_supervised)
