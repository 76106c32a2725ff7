"""The experiment log's autoencoder ideas, reproduced as classifiers (docs/classification_advanced.md).

A convolutional autoencoder (:class:`ConvAutoencoder`) reconstructs the one-hot wafer map through a
dense latent vector z; its output is a per-die softmax over the three die states, trained with
cross-entropy. The **residual map** is ``r = ½·Σ_c |x_c − AE(x)_c| = 1 − p(true state)`` ∈ [0, 1]:
high where the autoencoder could not explain a die.

- ``ae_latent``: a classifier that sees only z (frozen encoder → MLP): the log's hypothesis
  "the latent summarises the map, so classifying z should beat the CNN". The AE is trained on **all**
  maps (labelled, unlabelled, every class): a latent meant to describe defects has to have seen them.
- ``cnn_residual``: the compact ``cnn`` with the residual as an extra input channel
  (``residual_mode="channel"``), or the residual used as a training-time augmentation
  (``residual_mode="augment"``: with probability ``p_augment`` the failing dies the AE *did* explain —
  low residual, i.e. the background the AE expects — are turned to pass, so the network also sees the
  pattern without its random fails; inference is unchanged). The channel mode's AE is trained on
  **normal maps only** (``ae_data="normal"``): then it cannot reconstruct a defect cluster, and the
  residual marks the defect's location, as in reconstruction-based anomaly detection. The augment mode
  needs an AE that explains the pattern but not the noise, so it defaults to ``ae_data="all"``.
"""

from __future__ import annotations

import numpy as np

from waferscope.base import Interval, Options
from waferscope.data.preprocess import augment_dihedral, encode
from waferscope.errors import DataError
from waferscope.models.classifiers.cnn import compact_wafer_cnn
from waferscope.models.classifiers.common import require_wafer_maps
from waferscope.models.classifiers.torch_base import TorchClassifier
from waferscope.models.training import fit_loop, index_batches, seed_everything
from waferscope.registry import register

AE_DATA = ("all", "normal")


def _ae_modules(in_chans: int, size: int, latent_dim: int, width: int):
    from torch import nn

    if size % 8:
        raise ValueError(f"the autoencoder needs an input size divisible by 8, got {size}")
    w, g = int(width), size // 8

    def down(i: int, o: int) -> list:
        return [nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    def up(i: int, o: int) -> list:
        return [nn.ConvTranspose2d(i, o, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    encoder = nn.Sequential(*down(in_chans, w), *down(w, 2 * w), *down(2 * w, 4 * w), nn.Flatten(),
                            nn.Linear(4 * w * g * g, latent_dim))
    decoder = nn.Sequential(nn.Linear(latent_dim, 4 * w * g * g), nn.ReLU(inplace=True),
                            nn.Unflatten(1, (4 * w, g, g)), *up(4 * w, 2 * w), *up(2 * w, w),
                            nn.ConvTranspose2d(w, in_chans, 4, stride=2, padding=1))
    return encoder, decoder


def build_autoencoder(in_chans: int = 3, size: int = 48, latent_dim: int = 64, width: int = 16):
    """Return the encoder (3 stride-2 convs → linear → z) and mirrored decoder (→ per-die die-state logits)."""
    from torch import nn

    class ConvAutoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = _ae_modules(in_chans, size, latent_dim, width)

        def forward(self, x):
            return self.decoder(self.encoder(x))

        def residual(self, x):
            """½·Σ_c |x − softmax(AE(x))| per die: (N, 1, H, W) in [0, 1]."""
            import torch

            p = torch.softmax(self(x), dim=1)
            return 0.5 * (x - p).abs().sum(1, keepdim=True)

    return ConvAutoencoder()


def train_autoencoder(ae, x_u8: np.ndarray, encoding: str = "onehot3", epochs: int = 10, batch_size: int = 128,
                      lr: float = 2e-3, seed: int = 0, progress: bool = True) -> list[float]:
    """Fit ``ae`` to reconstruct the (N, S, S) die-state maps (random rotations/flips); returns the loss per epoch."""
    import torch
    import torch.nn.functional as F

    if encoding != "onehot3":
        raise ValueError("the autoencoder reconstructs die states: use encoding='onehot3'")
    rng = seed_everything(seed)

    def batches(epoch):
        for idx in index_batches(rng.permutation(len(x_u8)), batch_size, min_size=2):  # BatchNorm: 2+
            yield augment_dihedral(x_u8[idx], rng, axes=(1, 2))

    def step(xb):
        target = torch.from_numpy(xb.astype(np.int64))
        return F.cross_entropy(ae(torch.from_numpy(encode(xb, "onehot3"))), target), len(xb)

    result = fit_loop(ae, batches, step, epochs=epochs, progress=progress, desc="train autoencoder",
                      optimizer=torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=1e-5))
    for p in ae.parameters():
        p.requires_grad_(False)
    return result.losses


class _AEClassifierBase(TorchClassifier):
    """Shared: train the autoencoder on the chosen maps before the classifier's own training."""

    _docstrings = {
        "latent_dim": "Size of the autoencoder's latent vector z.",
        "ae_width": "Channels of the autoencoder's first convolution (doubled per stage).",
        "ae_epochs": "Passes of the autoencoder's own training, before the classifier's.",
        "ae_": "The fitted autoencoder (``torch.nn.Module``).",
        "ae_history_": "Per-epoch autoencoder training loss.",
    }

    ae_default_data = "all"

    _tags = {"input_kinds": ("wafer",)}  # refuses images (a die-state autoencoder / stem / teacher)
    _parameter_constraints = {
        # the autoencoder halves the map three times and reconstructs die states
        "input_size": [Interval(int, 8, None, multiple_of=8)], "encoding": [Options("onehot3")],
        "latent_dim": [Interval(int, 1)], "ae_width": [Interval(int, 1)], "ae_epochs": [Interval(int, 1)],
        "ae_data": [Options(*AE_DATA)], "hidden": [Interval(int, 1)]}

    def _ae_training_maps(self, dataset, extra) -> np.ndarray:
        if self.ae_data not in AE_DATA:
            raise ValueError(f"ae_data must be one of {AE_DATA}, got {self.ae_data!r}")
        parts = [dataset] + ([extra] if extra is not None else [])
        if self.ae_data == "normal":
            parts = [p.normal() for p in parts]
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError(f"{dataset.name}: no {'normal ' if self.ae_data == 'normal' else ''}maps to train the autoencoder on")
        return np.concatenate([self.resize(p) for p in parts])

    def fit(self, dataset, unlabelled=None, **kwargs):
        """``unlabelled``: extra maps (any labels) used only to train the autoencoder."""
        import torch

        if dataset.kind != "wafer":
            raise DataError(f"{dataset.name}: the autoencoder variants take wafer maps, not images")
        for part in (dataset, unlabelled):  # die states 0/1/2 before the autoencoder sees them
            if part is not None:
                require_wafer_maps(part, self.registry_name or type(self).__name__)
        torch.manual_seed(self.seed)  # the autoencoder's initial weights too, not only its training
        self.ae_ = build_autoencoder(self._in_chans(), int(self.input_size), self.latent_dim, self.ae_width)
        self.ae_history_ = train_autoencoder(self.ae_, self._ae_training_maps(dataset, unlabelled), self.encoding,
                                             self.ae_epochs, seed=self.seed, progress=self.progress)
        return super().fit(dataset, **kwargs)

    def predict_proba(self, dataset) -> np.ndarray:
        require_wafer_maps(dataset, self.registry_name or type(self).__name__)
        return super().predict_proba(dataset)

    # The whole autoencoder is saved beside the classifier network (``ae.*``), so a reloaded run can
    # still show residual maps and reconstructions, whatever the variant keeps of it in its network.
    def _state(self):
        tensors, extras = super()._state()
        tensors.update({f"ae.{k}": v.clone() for k, v in self.ae_.state_dict().items()})  # clone: no shared storage
        extras["ae_history"] = list(getattr(self, "ae_history_", []))
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        self.ae_ = build_autoencoder(channels_of(self.encoding), int(self.input_size), self.latent_dim, self.ae_width)
        self.ae_.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("ae.")})
        self.ae_.eval()
        for p in self.ae_.parameters():
            p.requires_grad_(False)
        self.ae_history_ = list(extras.get("ae_history", []))
        super()._load_state(tensors, extras)


def channels_of(encoding: str) -> int:
    """Return the input channels of ``encoding``."""
    from waferscope.data.preprocess import channels

    return channels(encoding)


@register("ae_latent", kind="classifier")
class AELatentClassifier(_AEClassifierBase):
    """A classifier on the autoencoder's latent z only (the encoder is frozen unless ``finetune``).

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress
    latent_dim
    ae_width
    ae_epochs
    ae_data
        ``"all"`` (every map, any label) or ``"normal"`` (normal maps only): what the autoencoder is trained on.
    finetune
        Train the encoder with the classifier (default: frozen).
    hidden
        Units of the MLP's hidden layer on z.

    Attributes
    ----------
    ae_
    ae_history_
    best_epoch_, classes_, history_, in_chans_, network_, train_seconds_
    """

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 30, batch_size: int = 128,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 latent_dim: int = 64, ae_width: int = 16, ae_epochs: int = 10, ae_data: str = "all",
                 finetune: bool = False, hidden: int = 128):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress)
        self.latent_dim = latent_dim
        self.ae_width = ae_width
        self.ae_epochs = ae_epochs
        self.ae_data = ae_data
        self.finetune = finetune
        self.hidden = hidden

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network: the autoencoder's encoder (frozen unless ``finetune``) and an MLP on z."""
        import copy

        from torch import nn

        encoder = copy.deepcopy(self.ae_.encoder)
        for p in encoder.parameters():
            p.requires_grad_(bool(self.finetune))

        class LatentClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder
                self.head = nn.Sequential(nn.LayerNorm(encoder[-1].out_features),
                                          nn.Linear(encoder[-1].out_features, hidden), nn.ReLU(inplace=True),
                                          nn.Dropout(0.2), nn.Linear(hidden, n_classes))

            def forward(self, x):
                return self.head(self.encoder(x))

            def train(self, mode: bool = True):  # a frozen encoder keeps its BatchNorm statistics
                super().train(mode)
                if not finetune:
                    self.encoder.eval()
                return self

        hidden, finetune = int(self.hidden), bool(self.finetune)
        return LatentClassifier()


@register("cnn_residual", kind="classifier")
class ResidualCNNClassifier(_AEClassifierBase):
    """The compact ``cnn`` helped by the autoencoder's residual map (extra channel or augmentation).

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, width, dropout
    residual_mode
        ``"channel"`` (the residual map is an extra input channel) or ``"augment"`` (it only shapes training
        batches).
    latent_dim
    ae_width
    ae_epochs
    ae_data
        ``"all"`` or ``"normal"``: what the autoencoder is trained on; None: ``"normal"`` for the channel mode,
        ``"all"`` for augment.
    p_augment
        Chance that a training map is augmented (``residual_mode="augment"``).
    residual_threshold
        Residual below which a failing die counts as explained (and is turned to pass by the augmentation).

    Attributes
    ----------
    ae_
    ae_history_
    best_epoch_, classes_, history_, in_chans_, network_, train_seconds_
    """

    _parameter_constraints = {
        "residual_mode": [Options("channel", "augment")], "ae_data": [Options(*AE_DATA), None],
        "p_augment": [Interval(float, 0, 1)]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 30, batch_size: int = 128,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 width: int = 24, dropout: float = 0.2, residual_mode: str = "channel", latent_dim: int = 64,
                 ae_width: int = 16, ae_epochs: int = 10, ae_data: str | None = None, p_augment: float = 0.5,
                 residual_threshold: float = 0.5):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress)
        self.width = width
        self.dropout = dropout
        self.residual_mode = residual_mode
        self.latent_dim = latent_dim
        self.ae_width = ae_width
        self.ae_epochs = ae_epochs
        self.ae_data = ae_data
        self.p_augment = p_augment
        self.residual_threshold = residual_threshold

    def fit(self, dataset, unlabelled=None, **kwargs):
        """Fit as the other torch classifiers; ``unlabelled`` maps only train the autoencoder."""
        if self.residual_mode not in ("channel", "augment"):
            raise ValueError(f"residual_mode must be 'channel' or 'augment', got {self.residual_mode!r}")
        chosen = self.ae_data
        if chosen is None:  # the documented per-mode default, without changing the stored param
            self.ae_data = "normal" if self.residual_mode == "channel" else "all"
        try:
            return super().fit(dataset, unlabelled=unlabelled, **kwargs)
        finally:
            self.ae_data = chosen

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network: the compact CNN with the residual as an extra channel (or plain, for augment)."""
        import torch
        from torch import nn

        if self.residual_mode == "augment":  # the AE only shapes training batches; the network is plain
            return compact_wafer_cnn(in_chans, n_classes, self.width, self.dropout)
        cnn = compact_wafer_cnn(in_chans + 1, n_classes, self.width, self.dropout)
        ae = self.ae_

        class ResidualChannelNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.ae = ae
                self.cnn = cnn

            def forward(self, x):
                with torch.no_grad():
                    r = self.ae.residual(x)
                return self.cnn(torch.cat([x, r], dim=1))

            def train(self, mode: bool = True):  # the AE stays frozen, BatchNorm statistics included
                super().train(mode)
                self.ae.eval()
                return self

        return ResidualChannelNet()

    def _train_batches(self, x_u8, y, rng, kind):
        import torch

        for xb, yb in super()._train_batches(x_u8, y, rng, kind):
            if self.residual_mode == "augment" and self.p_augment > 0:
                chosen = torch.from_numpy(rng.random(len(xb)) < float(self.p_augment))
                if bool(chosen.any()):
                    with torch.no_grad():
                        explained = self.ae_.residual(xb[chosen])[:, 0] < float(self.residual_threshold)
                    xs = xb[chosen].clone()
                    background_fail = (xs[:, 2] > 0) & explained  # fails the AE expected: background noise
                    xs[:, 2][background_fail] = 0.0
                    xs[:, 1][background_fail] = 1.0
                    xb = xb.clone()
                    xb[chosen] = xs
            yield xb, yb
