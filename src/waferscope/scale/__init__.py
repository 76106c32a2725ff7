"""Scale-out inference: the exported ONNX model run per Parquet partition, locally or on Dask."""

from waferscope.scale.dask_engine import list_partitions, run_partitions

__all__ = ["list_partitions", "run_partitions"]
