"""Wafer-map data: the dataset container, loaders behind one entry point, the synthetic generator and preprocessing."""

from waferscope.data.classes import BASE_PATTERNS, CLASSES, NORMAL
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.data.load import load

__all__ = ["BASE_PATTERNS", "CLASSES", "NORMAL", "WaferDataset", "validate_map", "load"]
