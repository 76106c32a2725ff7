"""Convolutional classifiers.

A compact wafer CNN (``cnn``), the same CNN with a die-resolution head (``cnn_fine``, the bundled
model) and a ResNet-18 (``resnet18``).

Both take the 3-channel ``onehot3`` wafer encoding. ``cnn`` is sized for throughput: stride-2
convolutions halve the map from the first layer on, so a 48×48 wafer costs about 6 M multiply-adds
and the bundled model classifies thousands of wafers per second on two CPU cores. ``resnet18`` is the
ResNet-18 of :mod:`waferscope.models.backbones.resnet` (torchvision key names) with the small-input
stem, at ``width`` × the usual channel counts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from waferscope.base import Interval, Options
from waferscope.data.preprocess import area_resize_map, resize_maps
from waferscope.data.synthetic import PROFILES
from waferscope.errors import ConfigError
from waferscope.models.classifiers.common import label_order, labelled_for_training
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
    """A small, fast wafer CNN trained from scratch.

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, tta, width, dropout, resample, orient

    Attributes
    ----------
    best_epoch_, classes_, history_, in_chans_, network_, train_seconds_
    """

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 25, batch_size: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: int = 24, dropout: float = 0.2, resample: str = "nearest",
                 orient: str = "none"):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta,
                         resample=resample, orient=orient)
        self.width = width
        self.dropout = dropout

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network (:func:`compact_wafer_cnn`)."""
        return compact_wafer_cnn(in_chans, n_classes, self.width, self.dropout)


def fine_head_wafer_cnn(in_chans: int, n_classes: int, width: int = 24, head: int = 24, dropout: float = 0.2,
                        input_kernel: int = 3, relu_stride: int = 4):
    """``compact_wafer_cnn``'s trunk plus a top-down head that ends at the input resolution.

    The trunk is the same stride-2 stack (w at S/2, 2w at S/4, 4w, 4w at S/8). The head adds the
    deep features, upsampled, to projections of the shallower levels (a feature-pyramid top-down
    path, Lin et al. 2017): 1×1 projections of the S/4 and S/2 features and an
    ``input_kernel``×``input_kernel`` projection of the input itself, ending in ``fuse``, an S×S map.
    The classifier is a linear layer on the global average of ``fuse``, so the map it pools has one
    cell per input pixel — per die for wafers up to S dies across — and its Grad-CAM,
    ``ReLU(Σ_k w_ck fuse_k)``, is a die-resolution map of where the class evidence is.

    The head has one non-linearity (``coarse``, a ReLU) at the level of stride ``relu_stride``
    (1 = S, 2 = S/2, 4 = S/4); below it the head is linear. On the one-hot input the finer levels
    then add learned per-class die-state filters that sharpen the coarse evidence to single dies.
    Why linear: the mean of a linear map is the same linear map of the means, so prediction (no
    gradient needed) pools ``coarse`` with the bilinear upsamples' exact weights and the finer
    projections through window sums of their inputs, and never builds the finer maps. With the
    ReLU at S (``relu_stride=1``, the design of the first localisation-trained model) that
    element-wise S×S work cost more than the whole trunk (2,228 vs 8,275 wafers/s, see
    docs/classification.md). Training and Grad-CAM (gradients on) build ``fuse`` explicitly; a test
    checks both paths give the same logits.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    if not (isinstance(input_kernel, int) and input_kernel > 0 and input_kernel % 2 == 1):
        raise ConfigError(f"cnn_fine input_kernel must be a positive odd integer (1, 3, ...), got {input_kernel!r}")
    if relu_stride not in (1, 2, 4):
        raise ConfigError(f"cnn_fine relu_stride must be 1, 2 or 4 (the head level of the ReLU), got {relu_stride!r}")
    relu_level = {1: 0, 2: 1, 4: 2}[relu_stride]

    def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*conv_bn_relu(c_in, c_out, stride))

    def lateral(c_in: int, c_out: int, k: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out))

    class FineHeadNet(nn.Module):
        explain_layer = "fuse"  # Grad-CAM's default target: the S×S map the classifier pools

        def __init__(self):
            super().__init__()
            w, h = int(width), int(head)
            self.stem = block(in_chans, w, 2)
            self.stage2 = block(w, 2 * w, 2)
            self.stage3 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1))
            self.lateral0 = lateral(in_chans, h, input_kernel)
            self.lateral1, self.lateral2, self.lateral3 = lateral(w, h), lateral(2 * w, h), lateral(4 * w, h)
            self.coarse = nn.ReLU(inplace=True)
            self.fuse = nn.Identity()  # names the S×S map for Grad-CAM hooks
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(h, n_classes)
            self.last_map = None  # while training: the fused map of the last batch (for a map loss)

        def forward(self, x):
            a = self.stem(x)
            b = self.stage2(a)
            feats = (x, a, b, self.stage3(b))
            laterals = (self.lateral0, self.lateral1, self.lateral2)
            explicit = self.training or torch.is_grad_enabled()
            t = self.lateral3(feats[3])
            for level in (2, 1, 0):
                if level < relu_level and not explicit:
                    break
                mode = "nearest" if level == 2 else "bilinear"
                t = F.interpolate(t, size=feats[level].shape[-2:], mode=mode,
                                  align_corners=None if mode == "nearest" else False)
                t = t + laterals[level](feats[level])
                if level == relu_level:
                    t = self.coarse(t)
            if explicit:
                f = self.fuse(t)
                # kept for the localisation loss while training only (a graph tensor cannot be deep-copied)
                self.last_map = f if self.training else None
                pooled = f.mean((2, 3))
            else:  # the same mean, from the linear levels' means
                sizes = [feats[level].shape[-2] for level in range(relu_level - 1, -1, -1)]
                pooled = mean_of_upsampled(t, sizes)
                for level in range(relu_level):
                    pooled = pooled + mean_of_projection(laterals[level], feats[level])
            return self.fc(self.dropout(pooled))

    return FineHeadNet()


@lru_cache(maxsize=32)
def _upsample_mean_weights(sizes: tuple[int, ...]):
    """Return the (sizes[0],) weights of the mean of a chain of 1-D linear upsamples.

    The chain (align_corners=False) goes from ``sizes[0]`` cells through ``sizes[1:]``; the weights
    are over the first level's cells. None when they are uniform (then the mean is the plain mean).
    """
    import torch
    import torch.nn.functional as F

    weights = torch.full((sizes[-1],), 1.0 / sizes[-1], dtype=torch.float64)
    for n_in, n_out in zip(sizes[-2::-1], sizes[:0:-1]):
        step = F.interpolate(torch.eye(n_in, dtype=torch.float64)[:, None, :], size=n_out, mode="linear",
                             align_corners=False)[:, 0, :]  # (n_in, n_out): input cell i's share of output j
        weights = step @ weights
    return None if bool(torch.allclose(weights, weights[0], rtol=0, atol=1e-12)) else weights.float()


def mean_of_upsampled(g, sizes):
    """Return the spatial mean of ``g`` bilinearly upsampled (align_corners=False) to each size in ``sizes``.

    In turn (square maps), without building the upsampled maps: a bilinear upsample is separable and
    linear, so the mean is a fixed weighting of ``g``'s cells — uniform for exact 2× steps, the
    bundled model's case.
    """
    wr = _upsample_mean_weights((g.shape[-2], *sizes)) if sizes else None
    wc = _upsample_mean_weights((g.shape[-1], *sizes)) if sizes else None
    if wr is None and wc is None:
        return g.mean((2, 3))
    rows = g.mean(2) if wr is None else (g * wr.to(g.dtype)[:, None]).sum(2)  # (N, C, W)
    return rows.mean(2) if wc is None else (rows * wc.to(g.dtype)).sum(2)


def mean_of_projection(projection, x):
    """Return ``projection(x).mean((2, 3))`` without the full-size output.

    For a stride-1 ``Conv2d`` (zero padding) followed by per-channel affine layers (eval-mode
    BatchNorm).

    The spatial mean of a convolution is the kernel applied to the sums of the input over its
    shifted windows. With padding, kernel tap (i, j) sees every input cell except a few border rows
    and columns, so each window sum is the total minus those thin bands (plus their overlap): one
    pass over the input, the rest touches only the border.
    """
    import torch

    conv, rest = projection[0], projection[1:]
    kh, kw = conv.kernel_size
    ph, pw = conv.padding
    h, w = x.shape[-2:]
    out_h, out_w = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    total = x.sum((2, 3))

    def kept(tap, pad, out, n):  # the input cells kernel tap `tap` reads: [lo, hi)
        return min(max(tap - pad, 0), n), min(max(tap - pad + out, 0), n)

    row_ranges = [kept(i, ph, out_h, h) for i in range(kh)]
    col_ranges = [kept(j, pw, out_w, w) for j in range(kw)]
    cols_out = [x[:, :, :, :c0].sum((2, 3)) + x[:, :, :, c1:].sum((2, 3)) for c0, c1 in col_ranges]
    taps = []
    for r0, r1 in row_ranges:
        band = torch.cat([x[:, :, :r0], x[:, :, r1:]], 2).sum(2)  # (N, C, W): column sums of the rows left out
        rows_out = band.sum(2)
        for (c0, c1), col_out in zip(col_ranges, cols_out):
            corner = band[:, :, :c0].sum(2) + band[:, :, c1:].sum(2)
            taps.append(total - rows_out - col_out + corner)
    windows = torch.stack(taps, -1).reshape(x.shape[0], x.shape[1], kh, kw)
    pooled = torch.einsum("nckl,ockl->no", windows, conv.weight) / (out_h * out_w)
    if conv.bias is not None:
        pooled = pooled + conv.bias
    pooled = pooled[:, :, None, None]
    for layer in rest:
        pooled = layer(pooled)
    return pooled[:, :, 0, 0]


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

    ``teacher`` (a run directory, ``bundled:gbm``, or a classifier name such as ``gbm``, which is
    then trained on the same maps first; or ``fit(dataset, teacher=<fitted classifier>)``) distils a
    slower, more accurate classifier into this fast network: every training map gets the teacher's
    probabilities as soft targets (loss: :func:`~waferscope.models.classifiers.losses.kd_loss` with
    ``distil_alpha``, ``distil_temperature``), and ``distil_synthetic`` extra synthetic maps, from a
    seed no training set uses, show the student the teacher's function on maps the teacher did not
    fit. Unlabelled maps in the training set are transfer maps too (real ones): the teacher's arg-max
    is their label and its probabilities their soft targets; without a teacher they are skipped.
    On the 5-fold real dev protocol a ``gbm`` teacher lifts ``cnn_fine`` from 0.755 to 0.798
    macro-F1 in 12 epochs, 0.808 with ``localise=0`` and 0.837 with ``localise=0`` over 30 epochs
    (docs/classification.md, "Distilling gbm into cnn_fine"); the student keeps its speed.

    Fab wafers (issue 27): ``resample="area"`` and ``orient="canonical"`` (see
    :mod:`~waferscope.models.classifiers.torch_base`) make the input independent of grid size,
    margins and rotation; ``synthetic_profile="fab"`` draws the ``distil_synthetic`` maps with
    :func:`~waferscope.data.synthetic.generate`'s fab profile (half of them fab-like: 20–300 dies
    across, clean wafers with 0–3 % fails, edge exclusion...), which learn from their own labels
    (the teacher labels the rest); ``distil_classes`` ("|"-separated, repeats weight) is the class
    cycle of those maps (default: every training class once).

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, tta, width, dropout
    head
        Channels of the S×S map the classifier pools.
    localise
        Weight of :func:`localisation_loss` (Grad-CAM against per-die masks) for maps that carry masks; 0: off.
    input_kernel
        Side of the projection of the input itself into the head (odd: 1, 3, ...).
    relu_stride
        Head level (stride 1, 2 or 4) of its one ReLU.
    teacher
        A classifier to distil from: a run directory, ``bundled:gbm`` or a classifier name (then trained on the
        same maps first); None: labels alone.
    distil_alpha, distil_temperature
    distil_synthetic
        Extra synthetic maps the teacher labels for the student (0: none).
    resample, orient
    synthetic_profile
        Profile of those synthetic maps (``"wm811k"`` or ``"fab"``, see
        :func:`~waferscope.data.synthetic.generate`).
    distil_classes
        Class cycle of the synthetic maps (``"|"``-separated, a repeat weights a class; "": every training class
        once).

    Attributes
    ----------
    best_epoch_, classes_
    distilled_from_
        The teacher the network was distilled from (None: trained on the labels alone).
    history_, in_chans_, network_, train_seconds_
    """

    _parameter_constraints = {
        "localise": [Interval(float, 0)], "input_kernel": [Interval(int, 1)], "relu_stride": [Interval(int, 1)],
        "distil_alpha": [Interval(float, 0, 1)], "distil_temperature": [Interval(float, 0, None, closed="neither")],
        "distil_synthetic": [Interval(int, 0)], "synthetic_profile": [Options(*PROFILES)]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 40, batch_size: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 10, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: int = 24, dropout: float = 0.2, head: int = 24, localise: float = 3.0,
                 input_kernel: int = 3, relu_stride: int = 4, teacher: str | None = None,
                 distil_alpha: float = 0.8, distil_temperature: float = 2.0, distil_synthetic: int = 0,
                 resample: str = "nearest", orient: str = "none", synthetic_profile: str = "wm811k",
                 distil_classes: str = ""):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta,
                         width=width, dropout=dropout, resample=resample, orient=orient)
        self.head = head
        self.localise = localise
        self.input_kernel = input_kernel
        self.relu_stride = relu_stride
        self.teacher = teacher
        self.distil_alpha = distil_alpha
        self.distil_temperature = distil_temperature
        self.distil_synthetic = distil_synthetic
        self.synthetic_profile = synthetic_profile
        self.distil_classes = distil_classes

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network (:func:`fine_head_wafer_cnn`)."""
        return fine_head_wafer_cnn(in_chans, n_classes, self.width, self.head, self.dropout, self.input_kernel,
                                   self.relu_stride)

    def fit(self, dataset, teacher=None, **kwargs) -> "FineHeadCNNClassifier":
        """Fit on the labelled maps, distilling ``teacher`` (a fitted classifier) or the ``teacher`` parameter when given."""
        if not float(self.localise) >= 0:
            raise ConfigError(f"cnn_fine localise must be a weight >= 0, got {self.localise!r}")
        self._teacher = None
        self.distilled_from_ = None  # a refit without a teacher must not keep an earlier teacher's name
        if teacher is not None or self.teacher:
            dataset = self._with_teacher(dataset, teacher)
        try:
            super().fit(dataset, **kwargs)
        finally:
            self._teacher = None
        self.network_.last_map = None
        return self

    def _with_teacher(self, dataset, teacher):
        """Resolve the teacher; the training maps plus ``distil_synthetic`` transfer maps."""
        from waferscope.data import WaferDataset
        from waferscope.data.classes import CLASSES
        from waferscope.data.synthetic import generate
        import dataclasses

        from waferscope.data.dataset import validate_wafer_maps
        from waferscope.models.classifiers.teachers import fitted_teacher, teacher_log_proba

        if not 0 <= float(self.distil_alpha) <= 1 or not float(self.distil_temperature) > 0:
            raise ConfigError(f"cnn_fine distils with 0 <= distil_alpha <= 1 and distil_temperature > 0, got "
                              f"{self.distil_alpha!r} and {self.distil_temperature!r}")
        unlabelled = dataset.subset(~dataset.is_labelled) if dataset.kind == "wafer" else None
        if unlabelled is not None:
            validate_wafer_maps(unlabelled.maps, dataset.name)
            dataset = dataset.labelled()  # (so the note "skipping unlabelled maps" is not printed: they are used)
        labelled = labelled_for_training(dataset, type(self).__name__)
        self._teacher = teacher if teacher is not None else fitted_teacher(
            self.teacher, labelled, seed=int(self.seed), progress=bool(self.progress))
        self.distilled_from_ = (type(self._teacher).__name__ if teacher is not None else str(self.teacher))
        parts = [labelled]
        if int(self.distil_synthetic) > 0 and labelled.kind == "wafer":
            known = [c for c in label_order(labelled.labels) if c in CLASSES]
            if self.distil_classes:  # "|"-separated, a class repeated to draw it more often
                wanted = [c.strip() for c in str(self.distil_classes).split("|") if c.strip()]
                unknown = sorted(set(wanted) - set(known))
                if unknown:
                    raise ConfigError(f"cnn_fine distil_classes {', '.join(unknown)} are not among the training "
                                      f"classes {', '.join(known)}")
                known = wanted
            # A seed the training data do not use, so the teacher's targets on them are predictions, not
            # its fit to its own training maps.
            parts.append(generate(int(self.distil_synthetic), seed=20_000 + int(self.seed), classes=known,
                                  profile=self.synthetic_profile))
        if unlabelled is not None and len(unlabelled):
            # Real transfer maps: the teacher's arg-max is their label for the hard term, its
            # probabilities (_soft_targets) the soft one.
            classes = label_order(labelled.labels)
            guess = np.asarray(classes)[teacher_log_proba(self._teacher, unlabelled, classes).argmax(1)]
            parts.append(dataclasses.replace(unlabelled, labels=guess.astype(object)))
        if len(parts) == 1:
            return labelled
        return WaferDataset.concat(parts, name=f"{labelled.name}+{sum(map(len, parts[1:]))} transfer maps")

    def _soft_targets(self, dataset):
        if getattr(self, "_teacher", None) is None:
            return None
        from waferscope.data.synthetic import FAB_SOURCE
        from waferscope.models.classifiers.teachers import label_log_proba, teacher_log_proba

        # Fab-like synthetic maps (up to 300+ dies across) learn from their own labels: the feature
        # teacher was fitted on WM-811K-sized maps and needs ~1 s per large map.
        own = dataset.meta["source"].astype(str).to_numpy() == FAB_SOURCE
        if not own.any():
            return teacher_log_proba(self._teacher, dataset, self.classes_)
        out = label_log_proba(dataset.labels.astype(str), self.classes_)
        if (~own).any():
            out[~own] = teacher_log_proba(self._teacher, dataset.subset(np.flatnonzero(~own)), self.classes_)
        return out

    def _state(self):
        tensors, extras = super()._state()
        extras["head_design"] = 2  # relu_stride is a parameter
        if getattr(self, "distilled_from_", None):
            extras["distilled_from"] = self.distilled_from_
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        if extras.get("head_design") is None:
            # saved before relu_stride existed: those runs had the ReLU at S×S (same weight names)
            self.relu_stride = 1
        if extras.get("distilled_from"):
            self.distilled_from_ = extras["distilled_from"]
        super()._load_state(tensors, extras)

    def _training_masks(self, dataset):
        # on_wafer in _loss reads the onehot3 no-die channel; other encodings train without masks
        if not self.localise or dataset.kind != "wafer" or self.encoding != "onehot3" or dataset.masks is None:
            return None
        if not any(k is not None and k.any() for k in dataset.masks):
            return None
        masks = [np.zeros(m.shape[:2], np.uint8) if k is None else k.astype(np.uint8)
                 for m, k in zip(dataset.maps, dataset.masks)]
        if getattr(self, "resample", "nearest") == "area":
            # the mask's share of each pixel, on the map's own crop: channel 1 of an area resample
            return np.stack([area_resize_map(np.where(m != 0, 1 + (k > 0), 0).astype(np.uint8), int(self.input_size))[..., 2]
                             for m, k in zip(dataset.maps, masks)])
        return resize_maps(masks, int(self.input_size))

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

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, tta
    width
        Fraction of ResNet-18's usual channel counts (1.0: torchvision's).

    Attributes
    ----------
    best_epoch_, classes_, history_, in_chans_, network_, train_seconds_
    """

    _parameter_constraints = {"width": [Interval(float, 0, None, closed="neither")]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 15, batch_size: int = 64,
                 lr: float = 2e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 5, seed: int = 0, progress: bool = True,
                 tta: bool = False, width: float = 0.25):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress, tta=tta)
        self.width = width

    def build_network(self, in_chans: int, n_classes: int):
        """Return the network (a small-input ResNet-18)."""
        from waferscope.models.backbones.resnet import resnet18

        return resnet18(num_classes=n_classes, width=self.width, small_input=True, in_channels=in_chans)
