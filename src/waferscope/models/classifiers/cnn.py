"""Convolutional classifiers: a compact wafer CNN (``cnn``) and a ResNet-18 (``resnet18``).

Both take the 3-channel ``onehot3`` wafer encoding. ``cnn`` is sized for throughput: stride-2
convolutions halve the map from the first layer on, so a 48×48 wafer costs about 6 M multiply-adds
and the bundled model classifies thousands of wafers per second on two CPU cores. ``resnet18`` is the
ResNet-18 of :mod:`waferscope.models.backbones.resnet` (torchvision key names) with the small-input
stem, at ``width`` × the usual channel counts.
"""

from __future__ import annotations

from waferscope.models.classifiers.torch_base import TorchClassifier
from waferscope.registry import register


def compact_wafer_cnn(in_chans: int, n_classes: int, width: int = 24, dropout: float = 0.2):
    """Conv-BN-ReLU blocks of widths w, 2w, 4w (each stride 2) and 4w (stride 1), global average pool.

    Striding from the first convolution keeps the cost low (about 6 M multiply-adds for a 48×48
    wafer at w = 24); on 48-px inputs the last blocks see 6×6 cells of 8×8 pixels, several dies
    each, enough for wafer-scale patterns.
    """
    from torch import nn

    def block(c_in: int, c_out: int, stride: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)]

    w = int(width)
    return nn.Sequential(
        *block(in_chans, w, 2),
        *block(w, 2 * w, 2),
        *block(2 * w, 4 * w, 2),
        *block(4 * w, 4 * w, 1),
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
