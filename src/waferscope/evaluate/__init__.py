"""Evaluation protocols on real and synthetic wafers, as functions (the CLI's `waferscope evaluate`).

One module per area, each a set of plain functions that take data and model specs and return tables
(pandas DataFrames / dicts) plus, where people look at them, PNGs:

- :mod:`.classification` — lot-grouped k-fold on the real labelled sets, cross-set (train on one
  set, test on the other), held-out evaluation of bundled models, learning curve, class-mix shift
- :mod:`.detection` — the detector dev protocol (train on real normals, test on the rest), the
  leave-one-pattern-out check of ``pattern_contrast``
- :mod:`.explanations` — Grad-CAM localisation on synthetic maps with masks, denoising F1
- :mod:`.synthetic` — realism check (a CNN trained on synthetic maps only, scored on real ones),
  synthetic-vs-real statistics and figures

Results are cached per (method, fold) under a work folder so long protocols can run in pieces.
"""
