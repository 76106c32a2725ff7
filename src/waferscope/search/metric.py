"""A learnt metric for similar-wafer search: a small MLP head trained with a supervised contrastive loss.

The head maps standardised wafer features (120 ``extended`` features) to a 32-dimensional
L2-normalised vector in which wafers of one class sit close together. The loss is the supervised
contrastive loss of Khosla et al. 2020 (every other wafer of the anchor's class in the batch is a
positive, all others in the batch are negatives, temperature 0.1), which ranks neighbours directly,
unlike a classifier's cross-entropy (measured: mAP 0.90 against 0.78 for the penultimate layer of the
same head trained with cross-entropy, docs/search.md).

Training is cheap on purpose (~10 s for 5,000 wafers on one core): Linear(F, 256) → GELU → dropout
0.1 → Linear(256, 32), AdamW with a one-cycle schedule, 100 epochs of batches of 512, a little
Gaussian noise on the inputs. Seeded; the learnt state is four arrays (:meth:`MetricHead.arrays`),
saved with the index (npz) or bundled as safetensors, never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from waferscope.errors import ConfigError, DataError

BUNDLED_HEAD = Path(__file__).resolve().parent.parent / "weights" / "search_metric"
_KEYS = ("head_w1", "head_b1", "head_w2", "head_b2")


def supcon_loss(emb, labels, temperature: float = 0.1):
    """Supervised contrastive loss of L2-normalised embeddings ``emb`` (B, D) with integer ``labels`` (B,).

    Mean over anchors that have a positive of -mean log p(positive | anchor).
    """
    import torch

    sim = emb @ emb.T / temperature
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(eye, -1e9)  # an anchor is not its own positive nor negative
    pos = (labels[:, None] == labels[None, :]) & ~eye
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return (sim * 0).sum()
    return -((logp * pos).sum(dim=1)[has] / n_pos[has]).mean()


class MetricHead:
    """``fit(x, labels)`` → self; ``transform(x)`` → (N, dim) float32 unit vectors."""

    def __init__(self, dim: int = 32, hidden: int = 256, epochs: int = 100, batch_size: int = 512, lr: float = 2e-3,
                 weight_decay: float = 1e-4, dropout: float = 0.1, noise: float = 0.05, temperature: float = 0.1,
                 seed: int = 0, progress: bool = False):
        self.dim = dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.noise = noise
        self.temperature = temperature
        self.seed = seed
        self.progress = progress

    def fit(self, x: np.ndarray, labels) -> "MetricHead":
        """Train the metric head on features ``x`` with class ``labels``; return ``self``."""
        import torch
        from torch import nn

        from waferscope.models.training import fit_loop

        x = np.asarray(x, dtype=np.float32)
        classes, y = np.unique(np.asarray(labels).astype(str), return_inverse=True)
        if len(classes) < 2 or len(x) < 4:
            raise ConfigError("the metric head needs labelled wafers of at least two classes")
        gen = torch.Generator().manual_seed(int(self.seed))
        torch.manual_seed(int(self.seed))  # the layers' initial weights
        net = nn.Sequential(nn.Linear(x.shape[1], self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                            nn.Linear(self.hidden, self.dim))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        per_epoch = -(-len(x) // self.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=self.epochs * per_epoch)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

        def batches(epoch):  # a fresh order and fresh feature noise every epoch, from the seeded generator
            perm = torch.randperm(len(xt), generator=gen)
            for s in range(0, len(xt), self.batch_size):
                idx = perm[s:s + self.batch_size]
                yield xt[idx] + self.noise * torch.randn(len(idx), xt.shape[1], generator=gen), yt[idx]

        def step(batch):
            xb, yb = batch
            return supcon_loss(nn.functional.normalize(net(xb), dim=1), yb, self.temperature), len(xb)

        fit_loop(net, batches, step, epochs=self.epochs, optimizer=opt, schedule=sched, progress=bool(self.progress),
                 desc="metric head")
        self.w1_, self.b1_ = net[0].weight.detach().numpy().copy(), net[0].bias.detach().numpy().copy()
        self.w2_, self.b2_ = net[3].weight.detach().numpy().copy(), net[3].bias.detach().numpy().copy()
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the head's unit-norm vectors of ``x``."""
        import torch

        with torch.no_grad():
            h = torch.from_numpy(np.asarray(x, dtype=np.float32)) @ torch.from_numpy(self.w1_).T + torch.from_numpy(self.b1_)
            e = torch.nn.functional.gelu(h) @ torch.from_numpy(self.w2_).T + torch.from_numpy(self.b2_)
            return torch.nn.functional.normalize(e, dim=1).numpy().astype(np.float32)

    def arrays(self) -> dict:
        """Return the head's weights by name."""
        return dict(zip(_KEYS, (self.w1_, self.b1_, self.w2_, self.b2_)))

    @classmethod
    def from_arrays(cls, arrays) -> "MetricHead":
        """Rebuild a fitted head from :meth:`arrays`; a clear error when one is missing."""
        try:
            w1, b1, w2, b2 = (np.asarray(arrays[k], dtype=np.float32) for k in _KEYS)
        except KeyError as exc:
            raise DataError(f"metric head state lacks {exc.args[0]}", "embedding state") from None
        if w1.ndim != 2 or w2.ndim != 2 or b1.shape != (w1.shape[0],) or w2.shape[1] != w1.shape[0] \
                or b2.shape != (w2.shape[0],):
            raise DataError(f"metric head arrays of inconsistent shapes {w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}",
                            "embedding state")
        self = cls(dim=w2.shape[0], hidden=w1.shape[0])
        self.w1_, self.b1_, self.w2_, self.b2_ = w1, b1, w2, b2
        return self


def load_bundled_head(folder: Path = BUNDLED_HEAD):
    """(head, feature mean, feature std) shipped with waferscope (scripts/train_search_head.py).

    Refused when it was trained on another feature set than this waferscope computes.
    """
    from safetensors.numpy import load_file

    from waferscope.features.handcrafted import feature_names

    try:
        meta = json.loads((folder / "head.json").read_text())
        arrays = load_file(str(folder / "head.safetensors"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the bundled search head: {exc}", folder) from None
    if tuple(meta.get("feature_names", ())) != feature_names("extended"):
        raise ConfigError("the bundled search head was trained on another feature set than this waferscope "
                          "computes; fit the metric embedding on labelled wafers instead (index build --fit-data) "
                          "or retrain it with scripts/train_search_head.py")
    return MetricHead.from_arrays(arrays), arrays["mean"].astype(np.float64), arrays["std"].astype(np.float64)


def save_bundled_head(embedding, folder: Path, about: dict) -> None:
    """Write a fitted :class:`~waferscope.search.embed.MetricEmbedding`'s head as the bundled one."""
    from safetensors.numpy import save_file

    from waferscope.features.handcrafted import feature_names

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in embedding.head_.arrays().items()}
    arrays.update(mean=np.asarray(embedding.mean_, np.float64), std=np.asarray(embedding.std_, np.float64))
    save_file(arrays, str(folder / "head.safetensors"))
    (folder / "head.json").write_text(json.dumps({**about, "feature_names": list(feature_names("extended"))},
                                                 indent=1) + "\n")
