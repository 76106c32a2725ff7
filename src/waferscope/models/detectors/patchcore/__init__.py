"""PatchCore: locally aware patch features of a frozen CNN, a greedy-coreset memory bank, kNN scoring."""

from waferscope.models.detectors.patchcore.detector import PatchCoreDetector

__all__ = ["PatchCoreDetector"]
