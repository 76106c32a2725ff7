"""EfficientAD losses (Batzner et al. 2024, section 3.2-3.3).

- student–teacher: hard-feature loss — squared differences ``D = (T̂(I) − S(I))²`` (teacher normalised
  per channel), mean over the elements at or above their ``q``-quantile (``q = 0.999``), plus an
  optional penalty ``mean S(P)²`` on out-of-distribution images ``P`` (ImageNet in the paper);
- autoencoder: ``mean (T̂(I') − A(I'))²`` on an augmented image ``I'``;
- student vs autoencoder: ``mean (A(I') − S'(I'))²`` with the student's second channel half ``S'``.
"""

from __future__ import annotations

import torch


def hard_feature_loss(teacher: torch.Tensor, student: torch.Tensor, quantile: float = 0.999) -> torch.Tensor:
    """Return the hard-feature loss: the mean of the squared differences above their ``quantile``."""
    sq = (teacher - student).pow(2)
    threshold = torch.quantile(sq.detach().flatten(), quantile) if sq.numel() < 2 ** 24 else \
        sq.detach().flatten().kthvalue(max(1, int(quantile * sq.numel()))).values
    return sq[sq >= threshold].mean()


def penalty_loss(student_on_penalty_images: torch.Tensor) -> torch.Tensor:
    """Return the penalty loss: the student's mean squared output on the penalty images."""
    return student_on_penalty_images.pow(2).mean()


def autoencoder_loss(teacher: torch.Tensor, autoencoder: torch.Tensor) -> torch.Tensor:
    """Return the autoencoder's loss: its mean squared difference from the teacher."""
    return (teacher - autoencoder).pow(2).mean()


def student_autoencoder_loss(autoencoder: torch.Tensor, student_ae_half: torch.Tensor) -> torch.Tensor:
    """Return the student's autoencoder-half loss: its mean squared difference from the autoencoder."""
    return (autoencoder - student_ae_half).pow(2).mean()
