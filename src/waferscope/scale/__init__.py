"""Scale-out inference and indexing over partitioned archives.

The exported ONNX model runs per Parquet partition, locally or on Dask; the similar-wafer index of a
partitioned archive is embedded on Dask (:mod:`waferscope.scale.index`).
"""

from waferscope.scale.dask_engine import list_partitions, run_partitions
from waferscope.scale.index import build_index_partitions

__all__ = ["build_index_partitions", "list_partitions", "run_partitions"]
