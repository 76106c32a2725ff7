"""STFPM loss (Wang et al. 2021, eq. 1-2): L2 distance of channel-normalised feature vectors.

Per layer l: ``1/(2 h_l w_l) * sum_{i,j} || F_t(i,j)/|F_t(i,j)| - F_s(i,j)/|F_s(i,j)| ||^2``, averaged over
the batch and summed over the pyramid layers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def layer_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) pair → (B, h, w) map of 0.5·||t̂ − ŝ||² (in [0, 2])."""
    t = F.normalize(teacher, dim=1)
    s = F.normalize(student, dim=1)
    return 0.5 * (t - s).pow(2).sum(1)


def stfpm_loss(teacher_features: Sequence[torch.Tensor], student_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return the STFPM loss: the per-layer feature distance averaged, summed over the layers."""
    return sum(layer_distance(t, s).mean() for t, s in zip(teacher_features, student_features))
