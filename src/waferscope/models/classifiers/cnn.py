"""Convolutional classifiers: a compact wafer CNN (``cnn``), the same CNN with a die-resolution head
(``cnn_fine``, the bundled model) and a ResNet-18 (``resnet18``).

Both take the 3-channel ``onehot3`` wafer encoding. ``cnn`` is sized for throughput: stride-2
convolutions halve the map from the first layer on, so a 48×48 wafer costs about 6 M multiply-adds
and the bundled model classifies thousands of wafers per second on two CPU cores. ``resnet18`` is the
ResNet-18 of :mod:`waferscope.models.backbones.resnet` (torchvision key names) with the small-input
stem, at ``width`` × the usual channel counts.
"""

from __future__ import annotations

import numpy as np

from waferscope.data.preprocess import resize_maps
from waferscope.errors import ConfigError
from waferscope.models.classifiers.torch_base import TorchClassifier
from waferscope.registry import register


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> list:
    """3×3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU — the block both wafer CNNs stack."""
    from torch import nn

    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def compact_wafer_cnn(in_chans: int, n_classes: int, width: int = 24, dropout: float = 0.2):
    """Conv-BN-ReLU blocks of widths w, 2w, 4w (each stride 2) and 4w (stride 1), global average pool.

    Striding from the first convolution keeps the cost low (about 6 M multiply-adds for a 48×48
    wafer at w = 24); on 48-px inputs the last blocks see 6×6 cells of 8×8 pixels, several dies
    each, enough for wafer-scale patterns.
    """
    from torch import nn

    w = int(width)
    return nn.Sequential(
        *conv_bn_relu(in_chans, w, 2),
        *conv_bn_relu(w, 2 * w, 2),
        *conv_bn_relu(2 * w, 4 * w, 2),
        *conv_bn_relu(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * w, n_classes),
    )


@register("cnn", kind="classifier")
class CompactCNNClassifier(TorchClassifier):
    """A small, fast wafer CNN trained from scratch."""

    def __init__(self, size: int = 48, encoding: str = "onehot3", epochs: int = 25, batch_size: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: int = 24, dropout: float = 0.2):
        super().__init__(size=size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta)
        self.width = width
        self.dropout = dropout

    def build_network(self, in_chans: int, n_classes: int):
        return compact_wafer_cnn(in_chans, n_classes, self.width, self.dropout)


def fine_head_wafer_cnn(in_chans: int, n_classes: int, width: int = 24, head: int = 24, dropout: float = 0.2,
                        input_kernel: int = 3):
    """``compact_wafer_cnn``'s trunk plus a top-down head that ends at the input resolution.

    The trunk is the same stride-2 stack (w at S/2, 2w at S/4, 4w, 4w at S/8). The head adds the
    deep features, upsampled, to 1×1 projections of the S/4 and S/2 features and of the input
    itself (a feature-pyramid top-down path, Lin et al. 2017) and classifies the global average of
    that S×S map (``fuse``). So the last feature map has one cell per input pixel — per die for
    wafers up to S dies across: its Grad-CAM is a die-resolution map of where the class evidence
    is. (At S/2, even a perfect map of a one-die-wide scratch resampled to the die grid keeps only
    half its mass on the scratch.) The head costs 1×1 convolutions and element-wise adds only; on
    the one-hot input the input projection is a learned value per die state.
    """
    import torch.nn.functional as F
    from torch import nn

    def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*conv_bn_relu(c_in, c_out, stride))

    def lateral(c_in: int, c_out: int, k: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out))

    def up(t, like):
        return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)

    class FineHeadNet(nn.Module):
        explain_layer = "fuse"  # Grad-CAM's default target: the S×S map the classifier pools

        def __init__(self):
            super().__init__()
            w, h = int(width), int(head)
            self.stem = block(in_chans, w, 2)
            self.stage2 = block(w, 2 * w, 2)
            self.stage3 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1))
            self.lateral0 = lateral(in_chans, h, int(input_kernel))
            self.lateral1, self.lateral2, self.lateral3 = lateral(w, h), lateral(2 * w, h), lateral(4 * w, h)
            self.fuse = nn.ReLU()
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(h, n_classes)
            self.last_map = None  # while training: the fused map of the last batch (for a map loss)

        def forward(self, x):
            a = self.stem(x)
            b = self.stage2(a)
            d = self.stage3(b)
            t = F.interpolate(self.lateral3(d), size=b.shape[-2:], mode="nearest") + self.lateral2(b)
            t = up(t, a) + self.lateral1(a)
            f = self.fuse(up(t, x) + self.lateral0(x))
            # kept for the localisation loss while training only (a graph tensor cannot be deep-copied)
            self.last_map = f if self.training else None
            return self.fc(self.dropout(f.mean((2, 3))))

    return FineHeadNet()


def class_evidence_map(net, targets):
    """Grad-CAM of ``fine_head_wafer_cnn`` for ``targets`` before its ReLU, differentiable.

    The logits are ``fc(mean(f))``, so the gradient of class c's logit with respect to the fused
    map ``f`` is ``fc.weight[c] / (H·W)`` at every cell and Grad-CAM is ``ReLU(Σ_k w_ck f_k)`` up to
    that constant: this computes ``Σ_k w_ck f_k`` for the last training batch, (N, H, W).
    """
    import torch

    return torch.einsum("nkhw,nk->nhw", net.last_map, net.fc.weight[targets])


def localisation_loss(evidence, masks, on_wafer):
    """Mean over maps with a non-empty mask of 1 − (energy share in the mask + soft Dice) / 2.

    ``evidence``: (N, H, W) pre-ReLU class evidence; ``masks``: (N, H, W) 0/1; ``on_wafer``: (N, H, W)
    0/1. The energy share is the localisation metric itself (ReLU mass on mask dies / on all dies);
    the soft Dice of the peak-normalised map adds coverage, so the evidence spreads over the whole
    pattern rather than one die of it. Both are scale-free, so the classifier's logits keep their
    own scale. Maps without a mask (e.g. normal wafers) contribute nothing.
    """
    import torch

    cam = torch.relu(evidence) * on_wafer
    has = masks.flatten(1).amax(1) > 0
    if not bool(has.any()):
        return evidence.sum() * 0.0
    cam, masks = cam[has], masks[has]
    energy = (cam * masks).sum((1, 2)) / cam.sum((1, 2)).clamp_min(1e-6)
    norm = cam / cam.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    dice = 2 * (norm * masks).sum((1, 2)) / (norm.sum((1, 2)) + masks.sum((1, 2))).clamp_min(1e-6)
    return (1 - (energy + dice) / 2).mean()


@register("cnn_fine", kind="classifier")
class FineHeadCNNClassifier(CompactCNNClassifier):
    """``cnn`` with a die-resolution head (:func:`fine_head_wafer_cnn`): the bundled classifier.

    Same training recipe as ``cnn`` but 40 epochs with patience 10: the one-cycle learning rate is
    still high in the first third, where a patience of 6 stopped one fold at epoch 17 (macro-F1 0.65
    instead of ≈ 0.75). ``head`` is the channel count of the S×S map it pools.
    ``localise`` > 0 adds, for training maps that carry per-die masks (synthetic maps do; real ones
    need none), ``localise`` × :func:`localisation_loss` of the true class's Grad-CAM against the
    mask: the network is taught to put its class evidence on the pattern's dies, not on the clean
    wafer around them (which a global-average classifier otherwise also uses as evidence).
    """

    def __init__(self, size: int = 48, encoding: str = "onehot3", epochs: int = 40, batch_size: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 10, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: int = 24, dropout: float = 0.2, head: int = 24, localise: float = 3.0,
                 input_kernel: int = 3):
        super().__init__(size=size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta,
                         width=width, dropout=dropout)
        self.head = head
        self.localise = localise
        self.input_kernel = input_kernel

    def build_network(self, in_chans: int, n_classes: int):
        return fine_head_wafer_cnn(in_chans, n_classes, self.width, self.head, self.dropout, self.input_kernel)

    def fit(self, dataset, **kwargs) -> "FineHeadCNNClassifier":
        if not (isinstance(self.input_kernel, int) and self.input_kernel > 0 and self.input_kernel % 2 == 1):
            raise ConfigError(f"cnn_fine input_kernel must be a positive odd integer (1, 3, ...), got {self.input_kernel!r}")
        if not float(self.localise) >= 0:
            raise ConfigError(f"cnn_fine localise must be a weight >= 0, got {self.localise!r}")
        super().fit(dataset, **kwargs)
        self.network_.last_map = None
        return self

    def _training_masks(self, dataset):
        # on_wafer in _loss reads the onehot3 no-die channel; other encodings train without masks
        if not self.localise or dataset.kind != "wafer" or self.encoding != "onehot3" or dataset.masks is None:
            return None
        if not any(k is not None and k.any() for k in dataset.masks):
            return None
        masks = [np.zeros(m.shape[:2], np.uint8) if k is None else k.astype(np.uint8)
                 for m, k in zip(dataset.maps, dataset.masks)]
        return resize_maps(masks, int(self.size))

    def _loss(self, logits, targets, batch_x):
        loss = super()._loss(logits, targets, batch_x)
        if self._batch_masks is None:  # no masks: _training_masks returned None (e.g. localise=0)
            return loss
        evidence = class_evidence_map(self.network_, targets)
        on_wafer = 1.0 - batch_x[:, 0]  # onehot3 channel 0 marks positions without a die
        return loss + float(self.localise) * localisation_loss(evidence, self._batch_masks, on_wafer)


@register("resnet18", kind="classifier")
class ResNet18Classifier(TorchClassifier):
    """ResNet-18 (He et al. 2016) with the 3×3 small-input stem, trained from scratch.

    The defaults (48-px input, a quarter of the usual channel counts: 16/32/64/128) keep a 5-fold
    evaluation within CPU reach; ``width=1.0`` gives torchvision's channel counts.
    """

    def __init__(self, size: int = 48, encoding: str = "onehot3", epochs: int = 15, batch_size: int = 64,
                 lr: float = 2e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 5, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: float = 0.25):
        super().__init__(size=size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta)
        self.width = width

    def build_network(self, in_chans: int, n_classes: int):
        from waferscope.models.backbones.resnet import resnet18

        return resnet18(num_classes=n_classes, width=self.width, small_input=True, in_channels=in_chans)
