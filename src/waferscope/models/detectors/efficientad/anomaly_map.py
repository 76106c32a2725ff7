"""EfficientAD anomaly maps and their quantile normalisation.

``M_ST = mean_c (T̂ − S)²`` (local anomalies), ``M_AE = mean_c (A − S')²`` (logical anomalies). Each
is normalised with quantiles of its values on validation normals, ``q_a`` (0.9) ↦ 0 and ``q_b``
(0.995) ↦ 0.1, so both are on one scale, and the final map is their average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def st_map(teacher: torch.Tensor, student_st: torch.Tensor) -> torch.Tensor:
    """Return the student–teacher map: the squared difference averaged over channels."""
    return (teacher - student_st).pow(2).mean(1)


def ae_map(autoencoder: torch.Tensor, student_ae: torch.Tensor) -> torch.Tensor:
    """Return the autoencoder–student map: the squared difference averaged over channels."""
    return (autoencoder - student_ae).pow(2).mean(1)


def quantile_normalise(maps: torch.Tensor, q_a: torch.Tensor | float, q_b: torch.Tensor | float) -> torch.Tensor:
    """Map ``q_a`` to 0 and ``q_b`` to 0.1 (paper, section 3.4)."""
    return 0.1 * (maps - q_a) / (q_b - q_a + 1e-12)


def map_quantiles(maps: torch.Tensor, q_a: float = 0.9, q_b: float = 0.995) -> tuple[float, float]:
    """Return the q_a and q_b quantiles of every pixel value of a stack of validation maps."""
    flat = maps.detach().flatten().double()
    qs = torch.quantile(flat, torch.tensor([q_a, q_b], dtype=flat.dtype)) if flat.numel() < 2 ** 24 else \
        torch.from_numpy(__import__("numpy").quantile(flat.numpy(), [q_a, q_b]))
    return float(qs[0]), float(qs[1])


def to_input_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return (N, h, w) maps resized bilinearly to ``size``."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
