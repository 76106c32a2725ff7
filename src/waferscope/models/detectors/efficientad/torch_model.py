"""EfficientAD network: frozen PDN teacher, PDN student with 2×C outputs, and a small autoencoder.

The autoencoder follows the paper's Table 8 scaled to a wafer input: strided 4×4 convs down to a 4×4
grid, one 4×4 conv to a 1×1×64 latent code, then bilinear upsampling + 3×3 convs (with dropout)
back to the teacher's output grid. It must reconstruct the teacher's features from a code that
cannot hold their exact layout, so it learns the *logical* layout of normal wafers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from waferscope.models.detectors.efficientad.anomaly_map import ae_map, quantile_normalise, st_map, to_input_size


class AutoEncoder(nn.Module):
    """EfficientAD's autoencoder: strided convolutions to a latent, bilinear upsampling convolutions back."""

    def __init__(self, input_size: int, output_size: int, out_channels: int, in_channels: int = 3,
                 latent: int = 64, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        n_down = max(1, int(round(math.log2(input_size / 4))))
        enc: list[nn.Module] = []
        cin = in_channels
        for i in range(n_down):
            cout = 32 if i < 2 else latent
            enc += [nn.Conv2d(cin, cout, 4, 2, 1), nn.ReLU(inplace=True)]
            cin = cout
        enc.append(nn.Conv2d(cin, latent, input_size // 2 ** n_down))  # → 1×1 code
        self.encoder = nn.Sequential(*enc)
        self.sizes = []
        s = output_size
        while s > 1:
            self.sizes.insert(0, s)
            s //= 2
        self.up_convs = nn.ModuleList()
        cin = latent
        for _ in self.sizes:
            self.up_convs.append(nn.Sequential(nn.Conv2d(cin, hidden, 3, 1, 1), nn.ReLU(inplace=True), nn.Dropout(dropout)))
            cin = hidden
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, out_channels, 3, 1, 1))
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the autoencoder's output feature maps for a batch."""
        z = self.encoder(x)
        for size, conv in zip(self.sizes, self.up_convs):
            z = conv(F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False))
        return self.head(z)


class EfficientADModel(nn.Module):
    """The teacher (frozen, normalised), student and autoencoder of EfficientAD."""

    def __init__(self, teacher: nn.Module, student: nn.Module, autoencoder: nn.Module, channels: int):
        super().__init__()
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student
        self.autoencoder = autoencoder
        self.channels = channels
        self.register_buffer("teacher_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, channels, 1, 1))
        # Quantiles of the two maps on validation normals (q_a ↦ 0, q_b ↦ 0.1).
        self.register_buffer("quantiles", torch.tensor([0.0, 1.0, 0.0, 1.0]))  # st_a, st_b, ae_a, ae_b

    def train(self, mode: bool = True) -> "EfficientADModel":
        """Set the training mode; the frozen teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the teacher's features, normalised by its training-set channel statistics."""
        return (self.teacher(x) - self.teacher_mean) / self.teacher_std

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (M_ST, M_AE) on the teacher's output grid, before quantile normalisation."""
        t = self.teacher_features(x)
        s = self.student(x)
        a = self.autoencoder(x)
        c = self.channels
        return st_map(t, s[:, :c]), ae_map(a, s[:, c:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """→ (B, H, W) combined map at the input's resolution: mean of both normalised maps."""
        m_st, m_ae = self.raw_maps(x)
        q = self.quantiles
        combined = 0.5 * quantile_normalise(m_st, q[0], q[1]) + 0.5 * quantile_normalise(m_ae, q[2], q[3])
        return to_input_size(combined, tuple(x.shape[-2:]))
