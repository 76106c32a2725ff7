"""ReConPatch: PatchCore on patch features modulated by a contrastively trained linear layer."""

from waferscope.models.detectors.reconpatch.detector import ReConPatchDetector

__all__ = ["ReConPatchDetector"]
