"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a compact student learns a teacher's soft targets.

Loss of one batch (student logits ``s``, teacher logits ``t``, temperature ``T``)::

    α · T² · KL(softmax(t/T) ‖ softmax(s/T))  +  (1 − α) · CE(s, y)

The T² factor keeps the soft-target gradients on the scale of the hard-label ones as T grows (their
magnitude shrinks as 1/T²), so α means the same thing at every temperature.

What the sweep measured (docs/classification_advanced.md, section 1; 5 folds of the real dev maps):

- **the student's width decides retention**, not α or T (α ∈ {0.5, 0.9, 1}, T ∈ {2, 4} all within one
  point): a student whose last features are ~27 channels wide keeps ~94–95 % of the ``cnn`` teacher's
  macro-F1 whatever the loss; the same parameter budget spent on wide features (72 channels with
  depthwise-separable convolutions, ``arch="separable"``; or a 1×1 expansion to 128 channels before the
  pool, ``head=128``) keeps 96–100 %;
- the **schedule must finish**: early stopping cut the one-cycle learning rate before it decayed, so
  ``patience`` defaults to the number of epochs (the best validation epoch is still kept);
- **every rotation/flip** of a map is a transfer example: the teacher's logits are computed once for
  all 8 dihedral views of every training map and looked up during training;
- extra transfer maps did *not* help: synthetic maps cost 1–2 points (they are not the distribution
  the student is tested on), die-noise copies of the training maps about 1, and initialising the
  student by pruning the teacher nothing; those options were removed. ``fit(dataset, transfer=...)``
  stays, for real unlabelled maps (what WM-811K's 78 % unlabelled maps would be). That is with a ``cnn`` teacher,
  which sees the maps as the student does; with the feature-based ``gbm`` as teacher, synthetic
  transfer maps are what carry its knowledge into ``cnn_fine`` (+0.043 macro-F1:
  ``cnn_fine(teacher=...)``, docs/classification.md).

The default student (``arch="patchify"``, ``width=7``, ``head=128``; :func:`compact_student`) is sized
for throughput: a 4×4 stride-4 "patchify" stem, 3×3 convolutions on 12×12 and smaller maps, a 1×1
expansion to 128 channels and a global average pool: 12,064 parameters, 8.8 % of the ``cnn`` teacher.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from waferscope.base import Interval, Options
from waferscope.data.preprocess import dihedral
from waferscope.errors import ConfigError, DataError
from waferscope.models.classifiers.common import label_order
from waferscope.models.classifiers.losses import IGNORE, kd_loss
from waferscope.models.classifiers.torch_base import TorchClassifier
from waferscope.models.training import index_batches
from waferscope.registry import register

def compact_student(in_chans: int, n_classes: int, width: int = 7, head: int = 0):
    """Patchify stem (4×4, stride 4, w) → 3×3 conv (2w) → two 3×3 stride-2 convs (3w) → global pool → linear.

    The stem has no padding, so on the one-hot input it can be rewritten to read the raw die states
    (:meth:`DistilledStudentClassifier.inference_network`). Two stride-2 stages after it give the last
    features a receptive field spanning most of a 48-px wafer: a pattern's *position* (Center vs Loc
    vs Edge-Loc) is what the class depends on, and a global pool over small receptive fields loses it.
    """
    from torch import nn

    w = int(width)

    def conv_bn_relu(c_in: int, c_out: int, stride: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        nn.Conv2d(in_chans, w, 4, stride=4, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        *conv_bn_relu(w, 2 * w, 1),
        *conv_bn_relu(2 * w, 3 * w, 2),
        *conv_bn_relu(3 * w, 3 * w, 2),
        *wide_head(3 * w, head),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(head or 3 * w, n_classes),
    )


def wide_head(c_in: int, head: int) -> list:
    """Return the layers of a wide head: a 1×1 Conv-BN-ReLU expansion to ``head`` channels before the pool.

    None ([]) when ``head`` is 0. As in MobileNetV3's last stage, the pooled features become a wide
    non-linear summary of the small last feature map for ~(c_in + 11)·head parameters and almost no
    compute (it runs on 3×3 cells).
    """
    from torch import nn

    if not head:
        return []
    return [nn.Conv2d(c_in, int(head), 1, bias=False), nn.BatchNorm2d(int(head)), nn.ReLU(inplace=True)]


def teacher_shaped_student(in_chans: int, n_classes: int, width: int = 7, encoding: str = "onehot3"):
    """Return the ``cnn`` teacher's layout at a reduced width.

    3×3 convs of widths w, 2w, 4w (stride 2) and 4w (stride 1), global average pool, linear (no
    dropout: soft targets regularise enough).

    Same inductive bias as the teacher (same receptive fields, same down-sampling), so the student can
    imitate the teacher's function rather than approximate it with a different one. The map is padded
    by :class:`NoDiePad` (the area outside a wafer holds no dies) and the convolutions themselves have
    no padding, which lets :meth:`DistilledStudentClassifier.inference_network` read raw die states.
    At w = 7 it has 12,070 parameters on 9 classes (8.8 % of the width-24 ``cnn``).
    """
    from torch import nn

    w = int(width)

    def block(c_in: int, c_out: int, stride: int, pad: bool = True) -> list:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1 if pad else 0, bias=False)
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        NoDiePad(1, no_die_channel=0 if encoding == "onehot3" else None),
        *block(in_chans, w, 2, pad=False),
        *block(w, 2 * w, 2),
        *block(2 * w, 4 * w, 2),
        *block(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, n_classes),
    )


def separable_student(in_chans: int, n_classes: int, width: int = 18, encoding: str = "onehot3"):
    """Return a student in the teacher's layout with depthwise-separable 3×3 convolutions after the stem.

    Widths w, 2w, 4w, 4w; strides 2, 2, 2, 1: ~2.5× the channels of :func:`teacher_shaped_student`
    for the same parameters. At w = 18: 11,439 parameters on 9 classes.
    """
    from torch import nn

    w = int(width)

    def separable(c_in: int, c_out: int, stride: int) -> list:
        return [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                nn.ReLU(inplace=True), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        NoDiePad(1, no_die_channel=0 if encoding == "onehot3" else None),
        nn.Conv2d(in_chans, w, 3, stride=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        *separable(w, 2 * w, 2),
        *separable(2 * w, 4 * w, 2),
        *separable(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, n_classes),
    )


@functools.lru_cache(maxsize=None)
def _no_die_pad_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class NoDiePad(nn.Module):
        """Pads a map by ``pad`` pixels of "no die".

        Channel ``no_die_channel`` = 1 and the others 0 (one-hot3); ``None``: zeros (encodings whose
        no-die state is the zero vector, raw die states).
        """

        def __init__(self, pad: int, no_die_channel: int | None = 0):
            super().__init__()
            self.pad = int(pad)
            self.no_die_channel = no_die_channel

        def forward(self, x):
            p = (self.pad,) * 4
            c = self.no_die_channel
            if c is None:
                return F.pad(x, p)
            parts = [F.pad(x[:, :c], p), F.pad(x[:, c:c + 1], p, value=1.0), F.pad(x[:, c + 1:], p)]
            return torch.cat([t for t in parts if t.shape[1]], dim=1)

        def extra_repr(self):
            return f"pad={self.pad}, no_die_channel={self.no_die_channel}"

    return NoDiePad


def NoDiePad(pad: int, no_die_channel: int | None = 0):  # noqa: N802 (a module factory, used like a class)
    """Return an ``nn.Module`` padding a map with "no die" pixels (see ``_no_die_pad_class``)."""
    return _no_die_pad_class()(pad, no_die_channel)


def _is_no_die_pad(layer) -> bool:
    return type(layer) is _no_die_pad_class()


class _DieStateStem:
    """Builds the stem that reads die states s ∈ {0, 1, 2} (one float channel) instead of one-hot.

    With one-hot channels (no-die, pass, fail) = (1 − p − f, p, f), p = s(2 − s), f = s(s − 1)/2, a
    padding-free convolution W is  Σ W₀ + conv(p; W₁ − W₀) + conv(f; W₂ − W₀)
    = Σ W₀ + conv(s; 2(W₁−W₀) − ½(W₂−W₀)) + conv(s²; ½(W₂−W₀) − (W₁−W₀)): two 1-channel convolutions
    and a bias, and no 3-channel float tensor to build (the one-hot encoding cost more than the network).
    """

    @staticmethod
    def build(conv):
        from torch import nn

        W = conv.weight.detach()
        d1, d2 = W[:, 1:2] - W[:, 0:1], W[:, 2:3] - W[:, 0:1]
        bias = W[:, 0].sum((1, 2)) + (conv.bias.detach() if conv.bias is not None else 0)

        class DieStateStem(nn.Module):
            def __init__(self):
                super().__init__()
                kw = dict(kernel_size=conv.kernel_size, stride=conv.stride, bias=False)
                self.linear = nn.Conv2d(1, W.shape[0], **kw)
                self.square = nn.Conv2d(1, W.shape[0], **kw)
                self.linear.weight.data = 2 * d1 - 0.5 * d2
                self.square.weight.data = 0.5 * d2 - d1
                self.bias = nn.Parameter(bias.view(1, -1, 1, 1).clone())

            def forward(self, s):
                return self.linear(s) + self.square(s * s) + self.bias

        return DieStateStem()


def count_parameters(net) -> int:
    """Return the number of parameters of a network."""
    return int(sum(p.numel() for p in net.parameters()))


@register("kd_student", kind="classifier")
class DistilledStudentClassifier(TorchClassifier):
    """A compact CNN student distilled from a teacher classifier.

    ``teacher``: a run directory of a fitted classifier, or ``None`` to train ``teacher_name`` (with
    ``teacher_params``) on the same labelled maps first. ``fit(dataset, teacher=<fitted classifier>,
    transfer=<WaferDataset>)`` overrides both at fit time (the sweep reuses one teacher that way).
    The student uses the teacher's input size and encoding so both see the very same tensor.

    120 epochs with ``patience`` = ``epochs`` (the one-cycle schedule always finishes): on the
    lot-grouped protocol (``waferscope evaluate student cnn kd_student``) they keep 98.4 % of the
    ``cnn`` teacher's macro-F1 where 60 epochs kept 97.9 % and 60 epochs with the 1,534 unlabelled
    real maps as transfer maps 97.3 % (docs/classification_real.md, "Student check").

    Parameters
    ----------
    input_size, encoding, epochs, batch_size, lr, weight_decay, imbalance, augment, val_fraction, patience,
    seed, progress, width, distil_alpha, distil_temperature
    teacher
        A run directory of a fitted classifier to distil from; None: train ``teacher_name`` on the same maps
        first.
    teacher_name
        Registered classifier trained as the teacher when ``teacher`` is None.
    teacher_params
        Constructor parameters of that teacher.
    use_transfer
        Also distil on the unlabelled maps of the training set (the teacher labels them).
    transfer_ratio
        At most this many transfer maps per labelled map (None: all of them).
    arch
        Student architecture: ``"patchify"`` (:func:`compact_student`), ``"cnn"`` or ``"separable"``.
    head
        Channels of the 1×1 expansion before the global pool (0: none).

    Attributes
    ----------
    best_epoch_, classes_, history_, in_chans_, network_
    teacher_parameters_
        Parameter count of the teacher's network.
    train_seconds_
    transfer_size_
        Transfer maps (unlabelled) the teacher labelled for the student.
    """

    # Options measured as no help and removed (name → the value that meant "off"): runs saved with
    # them off still load.
    removed_params = {"transfer_synthetic": 0, "noisy_copies": 0, "init_from_teacher": False}
    # Names before the one parameter vocabulary (issue 30), still accepted for one release.
    renamed_params = {"alpha": "distil_alpha", "temperature": "distil_temperature"}

    _tags = {"input_kinds": ("wafer",)}  # refuses images (a die-state autoencoder / stem / teacher)
    _parameter_constraints = {
        "distil_alpha": [Interval(float, 0, 1)], "distil_temperature": [Interval(float, 0, None, closed="neither")],
        "arch": [Options("cnn", "patchify", "separable")],
        "transfer_ratio": [Interval(float, 0), None]}

    def __init__(self, input_size: int = 48, encoding: str = "onehot3", epochs: int = 120, batch_size: int = 128,
                 lr: float = 4e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 120, seed: int = 0, progress: bool = True,
                 width: int = 7, distil_alpha: float = 0.9, distil_temperature: float = 4.0, teacher: str | None = None,
                 teacher_name: str = "cnn", teacher_params: dict | None = None, use_transfer: bool = True,
                 transfer_ratio: float | None = None, arch: str = "patchify", head: int = 128):
        super().__init__(input_size=input_size, encoding=encoding, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, imbalance=imbalance, augment=augment,
                         val_fraction=val_fraction, patience=patience, seed=seed, progress=progress)
        self.width = width
        self.distil_alpha = distil_alpha
        self.distil_temperature = distil_temperature
        self.teacher = teacher
        self.teacher_name = teacher_name
        self.teacher_params = teacher_params
        self.use_transfer = use_transfer
        self.transfer_ratio = transfer_ratio
        self.arch = arch
        self.head = head

    def build_network(self, in_chans: int, n_classes: int):
        """Return the student network of ``arch``."""
        if self.arch == "cnn":
            return teacher_shaped_student(in_chans, n_classes, self.width, self.encoding)
        if self.arch == "patchify":
            return compact_student(in_chans, n_classes, self.width, self.head)
        if self.arch == "separable":
            return separable_student(in_chans, n_classes, self.width, self.encoding)
        raise ConfigError(f"kd_student arch must be 'cnn' (the teacher's layout, narrower) or 'patchify', "
                          f"got {self.arch!r}")

    # ---- the teacher -----------------------------------------------------------------------------
    def _resolve_teacher(self, labelled, given):
        from waferscope import registry
        from waferscope.base import load_run

        if given is not None:
            teacher = given
        elif self.teacher:
            teacher = load_run(self.teacher, kind="classifier")
        else:
            # teacher_params in today's names first (a saved run's may say size=): setdefault must see them
            params = registry.get(self.teacher_name, "classifier").translate_params(dict(self.teacher_params or {}))
            params.setdefault("input_size", self.input_size)
            params.setdefault("encoding", self.encoding)
            params.setdefault("seed", self.seed)
            params.setdefault("progress", self.progress)
            teacher = registry.create(self.teacher_name, "classifier", **params).fit(labelled)
        if not teacher.get_tags().gradcam:  # the declared capability of a network_ on this input (base.Tags)
            raise ConfigError(f"the teacher {type(teacher).__name__} is not a PyTorch classifier "
                              "(distillation needs its logits)")
        if int(teacher.input_size) != int(self.input_size) or teacher.encoding != self.encoding:
            raise ConfigError(f"the teacher reads {teacher.input_size}px {teacher.encoding} maps, the student "
                              f"{self.input_size}px {self.encoding}: set the student's input_size/encoding to the teacher's")
        if list(teacher.classes_) != label_order(labelled.labels):
            raise DataError(f"the teacher knows classes {teacher.classes_}, the training labels are "
                            f"{label_order(labelled.labels)}")
        return teacher

    def _teacher_views(self, x_u8: np.ndarray) -> np.ndarray:
        """Teacher logits for all 8 dihedral views of every map: (N, 8, n_classes) float32."""
        from tqdm.auto import tqdm

        import hashlib

        views = 8 if self.augment else 1
        # A sweep distils many students from one teacher on the same maps: remember the last result.
        key = (views, x_u8.shape, hashlib.sha1(np.ascontiguousarray(x_u8).data).hexdigest())
        memo = getattr(self._teacher, "_kd_views_memo", None)
        if memo is not None and memo[0] == key:
            return memo[1]
        out = np.empty((len(x_u8), views, len(self.classes_)), dtype=np.float32)
        for k in tqdm(range(views), desc="teacher logits", disable=not self.progress, file=sys.stderr,
                      leave=False):
            out[:, k] = self._teacher._logits(np.ascontiguousarray(dihedral(x_u8, k, axes=(1, 2))), "wafer").numpy()
        self._teacher._kd_views_memo = (key, out)
        return out

    # ---- training --------------------------------------------------------------------------------
    def fit(self, dataset, teacher=None, transfer=None, **kwargs) -> "DistilledStudentClassifier":
        """Fit the student on the teacher's soft targets; ``teacher`` / ``transfer`` override the parameters."""
        if dataset.kind != "wafer":
            raise DataError(f"{dataset.name}: kd_student distils wafer maps, not images")
        labelled = dataset.labelled()
        if len(labelled) == 0:
            raise DataError(f"{dataset.name}: no labelled maps to train on")
        self._teacher = self._resolve_teacher(labelled, teacher)
        parts = [dataset.subset(~dataset.is_labelled)] if (~dataset.is_labelled).any() else []
        if transfer is not None:
            parts.append(transfer)
        n_extra = sum(len(p) for p in parts)
        if self.use_transfer and n_extra:
            x_extra = np.concatenate([self.resize(p) for p in parts])
            cap = len(x_extra) if self.transfer_ratio is None else int(round(float(self.transfer_ratio) * len(labelled)))
            if len(x_extra) > cap:
                keep = np.random.default_rng(self.seed).choice(len(x_extra), size=cap, replace=False)
                x_extra = x_extra[np.sort(keep)]
            self._x_transfer = x_extra
        else:
            self._x_transfer = np.zeros((0, int(self.input_size), int(self.input_size)), dtype=np.uint8)
        self._cache = None
        try:
            super().fit(labelled, **kwargs)
        finally:
            teacher_params = count_parameters(self._teacher.network_)
            n_transfer = len(self._x_transfer)
            del self._teacher, self._x_transfer, self._cache
        self.teacher_parameters_ = teacher_params
        self.transfer_size_ = n_transfer
        return self

    def _train_batches(self, x_u8, y, rng, kind):
        """Labelled batches, each followed by its share of transfer maps; teacher logits looked up."""
        import torch

        if self._cache is None:  # first epoch: teacher logits for every view of train + transfer maps
            extra = self._x_transfer
            x_both = np.concatenate([x_u8, extra])
            self._cache = (x_both, np.concatenate([y, np.full(len(extra), IGNORE)]), self._teacher_views(x_both))
        x_both, y_both, t_views = self._cache
        n_lab, n_tr = len(y), len(x_both) - len(y)
        order = np.concatenate([self._epoch_order(y, rng), n_lab + rng.permutation(n_tr)])
        order = order[rng.permutation(len(order))]
        for idx in index_batches(order, int(self.batch_size), min_size=2):  # BatchNorm: 2+
            ks = rng.integers(0, t_views.shape[1], size=len(idx))
            xb = np.empty((len(idx),) + x_both.shape[1:], dtype=np.uint8)
            for k in np.unique(ks):
                sel = np.flatnonzero(ks == k)
                xb[sel] = dihedral(x_both[idx[sel]], int(k), axes=(1, 2))
            self._batch_teacher_logits = torch.from_numpy(t_views[idx, ks])
            yield self.encode_batch(xb, kind), torch.from_numpy(y_both[idx].astype(np.int64))

    def _loss(self, logits, targets, batch_x):
        return kd_loss(logits, self._batch_teacher_logits, targets, self.distil_alpha, self.distil_temperature,
                       weight=self._loss_weight)

    # ---- fast inference: BatchNorm folded into the convolutions, channels-last, one-hot in torch ----
    def inference_network(self):
        """Return an eval-only copy of the student for prediction.

        Every Conv→BatchNorm pair fused, channels-last, and (one-hot input) a stem that reads the raw
        die states, see :class:`_DieStateStem`. It takes :meth:`encode_fast`'s input and returns the
        same logits as ``network_``.
        """
        import copy

        import torch
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self._check_fitted()
        cached = getattr(self, "_fast", None)
        if cached is not None and cached[0] is self.network_:
            return cached[1]
        fused = []
        for layer in copy.deepcopy(self.network_).eval():
            if isinstance(layer, nn.BatchNorm2d) and fused and isinstance(fused[-1], nn.Conv2d):
                fused[-1] = fuse_conv_bn_eval(fused[-1], layer)
            else:
                fused.append(layer)
        if _is_no_die_pad(fused[0]) and len(fused) > 1 and self._die_state_input(fused[1]):
            fused[0] = NoDiePad(fused[0].pad, None)  # die state 0 = no die
            fused[1] = _DieStateStem.build(fused[1])
        elif self._die_state_input(fused[0]):
            fused[0] = _DieStateStem.build(fused[0])
        net = nn.Sequential(*fused).eval().to(memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
        self._fast = (self.network_, net)
        return net

    def _die_state_input(self, first=None) -> bool:
        from torch import nn

        if first is None:
            first = self.network_[1] if _is_no_die_pad(self.network_[0]) else self.network_[0]
        return (self.encoding == "onehot3" and isinstance(first, nn.Conv2d) and first.in_channels == 3
                and tuple(first.padding) == (0, 0))

    def encode_fast(self, x_u8: np.ndarray):
        """Return the input of :meth:`inference_network`: (N, 1, S, S) float die states (or the usual encoding)."""
        import torch

        if not self._die_state_input():
            return self.encode_batch(x_u8).contiguous(memory_format=torch.channels_last)
        return torch.from_numpy(np.ascontiguousarray(x_u8)).to(torch.float32)[:, None]

    def _logits(self, x_u8: np.ndarray, kind: str = "wafer", batch_size: int = 4096):
        import torch

        if kind != "wafer" or self.network_.training:  # validation during fit: the plain path
            return super()._logits(x_u8, kind, min(batch_size, 1024))
        net = self.inference_network()
        with torch.inference_mode():
            out = [net(self.encode_fast(x_u8[i:i + batch_size])) for i in range(0, len(x_u8), batch_size)]
        return torch.cat(out) if out else torch.zeros((0, len(self.classes_)))

    # ---- persistence: the teacher is not needed to predict, only its size is recorded ------------
    def predict_proba(self, dataset) -> np.ndarray:
        """Return the class probabilities of every map (wafer maps only)."""
        if dataset.kind != "wafer":  # fit refuses images; the die-state stem cannot read them either
            raise DataError(f"{dataset.name}: kd_student reads die-state wafer maps, not images")
        return super().predict_proba(dataset)

    def _state(self):
        tensors, extras = super()._state()
        extras["teacher_parameters"] = int(getattr(self, "teacher_parameters_", 0))
        extras["transfer_size"] = int(getattr(self, "transfer_size_", 0))
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        super()._load_state(tensors, extras)
        self.teacher_parameters_ = int(extras.get("teacher_parameters", 0))
        self.transfer_size_ = int(extras.get("transfer_size", 0))

    @property
    def parameter_ratio(self) -> float:
        """Student parameters / teacher parameters."""
        return self.n_parameters() / max(1, self.teacher_parameters_)

