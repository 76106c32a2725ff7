"""Reverse-distillation loss (Deng & Li 2022, eq. 2-3).

Per scale k: ``M_k(h, w) = 1 − cos(f_E^k(h, w), f_D^k(h, w))`` over the channel vector at each position;
``L = Σ_k mean_{h,w} M_k``. (The authors' released code instead takes one cosine of the whole
flattened map per sample; we follow the paper's per-position definition, which is also what the
anomaly map uses.)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def cosine_distance_map(encoder_feature: torch.Tensor, decoder_feature: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) pair → (B, h, w) map of 1 − cosine similarity, in [0, 2]."""
    return 1.0 - F.cosine_similarity(encoder_feature, decoder_feature, dim=1, eps=1e-6)


def reverse_distillation_loss(encoder_features: Sequence[torch.Tensor],
                              decoder_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return the reverse-distillation loss: the mean cosine distance summed over the layers."""
    return sum(cosine_distance_map(e, d).mean() for e, d in zip(encoder_features, decoder_features))
