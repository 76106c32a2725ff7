"""The reproducible CPU benchmark: a YAML config → method × data set × seed cells → tables and an HTML report.

Entry point: :func:`run_benchmark` (``waferscope benchmark --config FILE --out DIR``).
"""

from waferscope.benchmark.config import BenchmarkConfig, load_config
from waferscope.benchmark.runner import run_benchmark

__all__ = ["BenchmarkConfig", "load_config", "run_benchmark"]
