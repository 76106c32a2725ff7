"""STFPM network: a frozen pre-trained teacher and a same-architecture student, both feature pyramids."""

from __future__ import annotations

import torch
from torch import nn

from waferscope.models.detectors.stfpm.anomaly_map import anomaly_map


class STFPMModel(nn.Module):
    """``teacher`` and ``student`` map an image batch to a list of feature maps (the pyramid)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, fusion: str = "product"):
        super().__init__()
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student
        self.fusion = fusion

    def train(self, mode: bool = True) -> "STFPMModel":
        """Set the training mode; the frozen teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()  # frozen: its BatchNorm statistics must not drift
        return self

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return (teacher, student) feature pyramids of a batch."""
        with torch.no_grad():
            t = list(self.teacher(x))
        return t, list(self.student(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """→ (B, H, W) anomaly map at the input's resolution."""
        t, s = self.features(x)
        return anomaly_map(t, s, tuple(x.shape[-2:]), self.fusion)
