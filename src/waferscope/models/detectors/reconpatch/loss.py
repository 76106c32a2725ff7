"""ReConPatch's pseudo-label similarities and relaxed contrastive loss (Hyun et al., WACV 2024).

No labels say which patch features belong together, so the similarity between two patches is
estimated from the slowly moving target network's projections z̄ (pseudo-labels):

- pairwise similarity  w_pair(i, j) = exp(-||z̄_i - z̄_j||² / σ)   (Gaussian kernel);
- contextual similarity, from shared neighbourhoods (after STML, Kim et al. CVPR 2022): with N_k(i)
  the k nearest rows of i (itself included), w̃(i, j) = |N_k(i) ∩ N_k(j)| / |N_k(i)| when j ∈ N_k(i)
  (else 0); it is then averaged over i's k/2 reciprocal neighbours R(i) = {l ∈ N_{k/2}(i) : i ∈
  N_{k/2}(l)} (query expansion) and symmetrised;
- mixed: w = α·w_pair + (1-α)·w_ctx.

The relaxed contrastive loss on the online projections z pulls pairs together in proportion to w and
pushes them beyond a margin m in proportion to 1 - w, on distances normalised by each row's mean
distance (so the loss does not shrink by collapsing the scale):
    δ_ij = ||z_i - z_j|| / mean_l ||z_i - z_l||,
    L = mean_i mean_j [ w_ij δ_ij² + (1 - w_ij) max(0, m - δ_ij)² ].
"""

from __future__ import annotations

import torch


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """Return the (N, N) squared Euclidean distances between the rows of ``z``."""
    sq = (z * z).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (z @ z.t())).clamp_min(0)


def pairwise_similarity(z: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Return the Gaussian-kernel pairwise similarity of the rows of ``z``."""
    return torch.exp(-squared_distances(z) / sigma)


def knn_mask(d2: torch.Tensor, k: int) -> torch.Tensor:
    """(N, N) float mask: row i marks i's k nearest rows (itself included)."""
    k = max(1, min(int(k), d2.shape[1]))
    idx = d2.topk(k, dim=1, largest=False).indices
    mask = torch.zeros_like(d2)
    mask.scatter_(1, idx, 1.0)
    return mask


def contextual_similarity(z: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Return the contextual similarity: the overlap of the rows' ``k``-nearest-neighbour sets."""
    d2 = squared_distances(z)
    neigh = knn_mask(d2, k)
    overlap = (neigh @ neigh.t()) / neigh.sum(1, keepdim=True)  # |N(i) ∩ N(j)| / |N(i)|
    w_tilde = overlap * neigh
    half = knn_mask(d2, max(1, k // 2))
    reciprocal = half * half.t()  # l ∈ N_{k/2}(i) and i ∈ N_{k/2}(l); the diagonal is always 1
    w_hat = (reciprocal @ w_tilde) / reciprocal.sum(1, keepdim=True)
    return 0.5 * (w_hat + w_hat.t())


def mixed_similarity(z_target: torch.Tensor, sigma: float = 1.0, alpha: float = 0.5, k: int = 5) -> torch.Tensor:
    """Return the ``alpha``-weighted mix of pairwise and contextual similarity."""
    return alpha * pairwise_similarity(z_target, sigma) + (1.0 - alpha) * contextual_similarity(z_target, k)


def relaxed_contrastive_loss(z: torch.Tensor, similarity: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Return ReConPatch's relaxed contrastive loss of ``z`` under the target ``similarity``."""
    n = len(z)
    off_diag = ~torch.eye(n, dtype=torch.bool)
    # sqrt has an infinite gradient at 0: clamp before, and leave the diagonal (distance 0) out.
    dist = squared_distances(z).clamp_min(1e-12).sqrt() * off_diag
    delta = dist / (dist.sum(1, keepdim=True) / max(1, n - 1)).clamp_min(1e-12)
    w = similarity
    per_pair = w * delta.pow(2) + (1.0 - w) * torch.relu(margin - delta).pow(2)
    return (per_pair * off_diag).sum() / (n * max(1, n - 1))
