"""waferscope: wafer-map defect analysis on a CPU.

The library API is what the ``waferscope`` command calls:

- :mod:`waferscope.data` — the wafer-map dataset, loaders, the synthetic generator, preprocessing
- :mod:`waferscope.models` — classifiers and anomaly detectors, created by name from a registry
- :mod:`waferscope.explain` — Grad-CAM and Grad-CAM denoising
- :mod:`waferscope.metrics` — classification and detection metrics, thresholds
- :mod:`waferscope.benchmark` — the reproducible benchmark and its HTML report
"""

__version__ = "0.1.0"

from waferscope.errors import WaferscopeError, DataError  # noqa: E402

__all__ = ["__version__", "WaferscopeError", "DataError"]
