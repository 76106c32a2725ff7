"""A convolutional autoencoder with a dense bottleneck (pure nn.Module, no waferscope glue).

Encoder: four stride-2 3×3 conv + BatchNorm + LeakyReLU blocks (S → S/16), flattened to a
``latent_dim`` vector; the decoder mirrors it with transposed convolutions. The dense bottleneck is
the point: it cannot copy individual dies through, so it reconstructs what a normal wafer looks like
(its shape and a smooth fail density), and defect clusters stand out in the residual.

``out_channels`` is 1 for wafer maps (logit of "this die fails") and 3 for images (RGB in [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder: stride-2 encoder, a dense bottleneck and a mirrored decoder."""

    def __init__(self, input_size: int = 64, in_channels: int = 3, out_channels: int = 1, base_channels: int = 32,
                 latent_dim: int = 64):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        c = [base_channels, base_channels * 2, base_channels * 4, base_channels * 4]
        self.grid = input_size // 16
        self.bottleneck_channels = c[3]
        self.encoder = nn.Sequential(_down(in_channels, c[0]), _down(c[0], c[1]), _down(c[1], c[2]), _down(c[2], c[3]))
        flat = c[3] * self.grid * self.grid
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.LeakyReLU(0.2, inplace=True))
        self.decoder = nn.Sequential(_up(c[3], c[2]), _up(c[2], c[1]), _up(c[1], c[0]),
                                     nn.ConvTranspose2d(c[0], out_channels, 4, stride=2, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the latent vectors of a batch."""
        return self.to_latent(torch.flatten(self.encoder(x), 1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the reconstructions of latent vectors."""
        h = self.from_latent(z).view(-1, self.bottleneck_channels, self.grid, self.grid)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction of a batch."""
        return self.decode(self.encode(x))
