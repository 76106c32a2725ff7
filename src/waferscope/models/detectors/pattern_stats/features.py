"""The ``pattern_stats`` detector's statistics live in :mod:`waferscope.features.pattern_stats`, shared
with the feature classifiers; this module keeps the detector's old import path working."""

from waferscope.features.pattern_stats import FEATURE_NAMES, RING_EDGES, _grid, local_fail_rate, pattern_features, window

__all__ = ["FEATURE_NAMES", "RING_EDGES", "_grid", "local_fail_rate", "pattern_features", "window"]
