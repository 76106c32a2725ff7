"""waferscope: wafer-map defect analysis on a CPU.

The library API is what the ``waferscope`` command calls:

- :mod:`waferscope.data` — the wafer-map dataset, loaders, the synthetic generator, preprocessing
- :mod:`waferscope.models` — classifiers and anomaly detectors, created by name from a registry
- :mod:`waferscope.explain` — Grad-CAM and Grad-CAM denoising
- :mod:`waferscope.metrics` — classification and detection metrics, thresholds
- :mod:`waferscope.benchmark` — the reproducible benchmark and its HTML report
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads (scikit-learn's tree fitting, torch) busy-wait between parallel regions by default.
# On a shared machine the spinning threads take the cores the working thread needs: the gbm tree fit
# took 55-78 s beside other jobs on 2 cores, 6 s with passive waiting (issue #33; benchmarks/
# bench_under_load.py). The runtimes read these once, when they load, so they are set here, before
# numpy/sklearn/torch are imported by anything in the package; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # GNU and LLVM OpenMP: sleep instead of spinning
_os.environ.setdefault("KMP_BLOCKTIME", "0")  # Intel/LLVM OpenMP's spin time before sleeping, in ms

from waferscope.errors import WaferscopeError, DataError  # noqa: E402

__all__ = ["__version__", "WaferscopeError", "DataError"]
