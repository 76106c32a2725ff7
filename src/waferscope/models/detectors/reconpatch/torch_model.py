"""ReConPatch's trainable part: a linear modulation of PatchCore patch features.

An online network (representation layer f, then projection layer g, both linear) is trained with the
relaxed contrastive loss; a target network with the same layers follows it as an exponential moving
average and supplies the pseudo-label similarities. After training, f(patch feature) is what goes
into the memory bank and is compared at test time.
"""

from __future__ import annotations

import torch
from torch import nn

from waferscope.models.detectors.reconpatch.loss import mixed_similarity, relaxed_contrastive_loss
from waferscope.models.training import EMA, fit_loop, seed_everything


class ModulationNetwork(nn.Module):
    """ReConPatch's modulation network: a linear representation layer and a projection head."""

    def __init__(self, in_dim: int, representation_dim: int, projection_dim: int):
        super().__init__()
        self.representation = nn.Linear(in_dim, representation_dim)
        self.projection = nn.Linear(representation_dim, projection_dim)
        if representation_dim == in_dim:
            # Our choice (the paper does not say): start the modulation at the identity, i.e. at
            # PatchCore's own features, so training only moves away from them where the loss asks.
            with torch.no_grad():
                self.representation.weight.copy_(torch.eye(in_dim))
                self.representation.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (representation, projection) of patch features ``x``."""
        h = self.representation(x)
        return h, self.projection(h)


def train_modulation(features: torch.Tensor, representation_dim: int, projection_dim: int, *,
                     epochs: int = 3, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-2,
                     sigma: float = 1.0, alpha: float = 0.5, k_contextual: int = 5, margin: float = 1.0,
                     ema_momentum: float = 0.99, steps_per_epoch: int | None = None, seed: int = 0,
                     progress: bool = False) -> tuple[ModulationNetwork, list[float]]:
    """Train the online network on normal patch features (N, D); returns it and the per-epoch mean loss.

    Each step draws ``batch_size`` random patches (seeded); an epoch is ``N // batch_size`` steps
    unless ``steps_per_epoch`` caps it. The target network is the training engine's :class:`EMA` of
    the online one, starting at its initial weights.
    """
    rng = seed_everything(seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    online = ModulationNetwork(x.shape[1], representation_dim, projection_dim)
    target = EMA(online, ema_momentum, from_start=True)
    batch_size = int(min(batch_size, len(x)))
    steps = max(1, len(x) // batch_size)
    if steps_per_epoch:
        steps = min(steps, int(steps_per_epoch))

    def batches(epoch: int):
        for _ in range(steps):
            yield x[torch.from_numpy(rng.choice(len(x), size=batch_size, replace=False))]

    def step(batch: torch.Tensor):
        with torch.no_grad():
            _, z_target = target.module(batch)
            w = mixed_similarity(z_target, sigma=sigma, alpha=alpha, k=k_contextual)
        _, z = online(batch)
        return relaxed_contrastive_loss(z, w, margin=margin), 1  # the epoch's loss: the mean over its steps

    result = fit_loop(online, batches, step, epochs=int(epochs), ema=target, progress=progress, desc="reconpatch",
                      optimizer=torch.optim.AdamW(online.parameters(), lr=lr, weight_decay=weight_decay))
    online.eval().requires_grad_(False)
    return online, result.losses
