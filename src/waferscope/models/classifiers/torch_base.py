"""Training glue shared by every PyTorch classifier: data → tensors, training loop, persistence.

A subclass provides only :meth:`TorchClassifier.build_network` ``(in_chans, n_classes) → nn.Module``.
Everything else is here:

- preprocessing: ``resample`` to ``input_size``×``input_size`` then ``encoding`` (``onehot3`` by default: the
  3-channel no-die / pass / fail input every backbone accepts); all three are constructor params, so a
  saved run reproduces its own preprocessing. ``resample="nearest"`` (the default, and what every run
  saved before it existed used) samples one die per pixel; ``"area"`` crops the map to its dies and
  gives each pixel the no-die / pass / fail fractions of the dies it covers
  (:func:`waferscope.data.preprocess.area_resize_maps`), which keeps every fail of a large grid;
  ``orient="canonical"`` then turns every map into the one of its 8 rotations/flips that a key of
  the map itself picks (:func:`waferscope.data.preprocess.canonicalise`), so a turned or flipped
  wafer gets the same input and the same prediction, at no inference cost (``"none"``: as given);
- training: through the shared engine (:func:`waferscope.models.training.fit_loop`): AdamW with a
  one-cycle learning rate (warm-up, then cosine decay), class-imbalance handling (``imbalance``:
  ``"loss"`` = class-weighted cross-entropy, ``"sampler"`` = class-balanced sampling, ``"none"``),
  random rotation/flip augmentation (a wafer pattern's class does not change under the 8 symmetries
  of the square; with ``tta`` the prediction is averaged over them too), early stopping on the
  macro-F1 of a seeded stratified validation split with the best epoch's weights restored;
- inference: Conv→BatchNorm folded, channels-last, in batches under ``torch.inference_mode()``;
- determinism: one ``seed`` drives the split, the batch order, the augmentation and the initial
  weights;
- persistence: the network's ``state_dict`` goes to ``weights.safetensors`` (keys ``network.*``).

Hooks for subclasses that change the objective (knowledge distillation, semi-supervised...):
``fit(dataset, **kwargs)`` stores ``kwargs`` in ``self._fit_kwargs`` before training,
:meth:`_loss` ``(logits, targets, batch_x)`` computes the training loss of one batch,
:meth:`_train_batches` yields ``(batch_x, targets)``, :meth:`_training_masks` can supply
per-die masks and :meth:`_soft_targets` a teacher's soft targets, both following their maps through
batching and augmentation. A model with other targets (``multilabel_cnn``) also replaces
:meth:`_training_targets`, :meth:`_validation_split`, :meth:`_epoch_order`, :meth:`_targets`,
:meth:`_imbalance_weights` and :meth:`_validation_score`. ``network_`` is the fitted ``nn.Module``.
"""

from __future__ import annotations

import copy
import time
from typing import Iterator

import numpy as np

from waferscope.base import Classifier, Interval, Options
from waferscope.data.dataset import validate_wafer_maps
from waferscope.data.preprocess import (AREA_LEVELS, ENCODINGS, ORIENT, RESAMPLE, augment_dihedral, channels, dihedral,
                                        encode, encode_images, prepare_maps, resample_maps, stratified_split)
from waferscope.errors import ConfigError, RunDirError
from waferscope.models.classifiers.common import label_order, labelled_for_training
from waferscope.models.classifiers.losses import kd_loss
from waferscope.models.training import EarlyStopping, fit_loop, index_batches, one_cycle, seed_everything

IMBALANCE_MODES = ("loss", "sampler", "none")
_ONEHOT3 = np.eye(3, dtype=np.float32)


class TorchClassifier(Classifier):
    """Base of the PyTorch classifiers; see the module docstring."""

    _tags = {"onnx": True, "gradcam": True, "input_kinds": ("wafer", "image")}
    # Names before the one parameter vocabulary (issue 30), still accepted for one release.
    renamed_params = {"size": "input_size"}
    _parameter_constraints = {
        "input_size": [Interval(int, 1)], "encoding": [Options(*ENCODINGS)], "imbalance": [Options(*IMBALANCE_MODES)],
        "resample": [Options(*RESAMPLE)], "orient": [Options(*ORIENT)], "width": [Interval(int, 1)],
        "dropout": [Interval(float, 0, 1, closed="left")], "head": [Interval(int, 1)]}

    @property
    def prior_refusal(self) -> str | None:
        """Return why a class-mix prior must not be applied to this model, or None."""
        if self.imbalance == "none":
            return "it was trained with imbalance='none', so its probabilities carry its training set's class mix"
        return None

    def __init__(self, input_size: int = 64, encoding: str = "onehot3", epochs: int = 30, batch_size: int = 128,
                 lr: float = 2e-3, weight_decay: float = 1e-4, imbalance: str = "loss", augment: bool = True,
                 val_fraction: float = 0.1, patience: int = 6, seed: int = 0, progress: bool = True,
                 tta: bool = False, resample: str = "nearest", orient: str = "none"):
        self.input_size = input_size
        self.encoding = encoding
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.imbalance = imbalance
        self.augment = augment
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.progress = progress
        self.tta = tta
        self.resample = resample
        self.orient = orient

    # ---- what subclasses provide -----------------------------------------------------------------
    def build_network(self, in_chans: int, n_classes: int):
        """Return the network ``(in_chans, n_classes) → nn.Module`` (each subclass provides it)."""
        raise NotImplementedError

    # ---- preprocessing ---------------------------------------------------------------------------
    def _in_chans(self, kind: str = "wafer") -> int:
        return 3 if kind == "image" else channels(self.encoding)

    def resize(self, dataset) -> np.ndarray:
        """(N, size, size) uint8 die states (or (N, size, size[, C]) uint8 pixels for images).

        A wafer map with a die value other than 0/1/2 is a clear DataError (the resize could drop it
        silently).
        """
        if dataset.kind != "wafer":
            return resample_maps(dataset.maps, int(self.input_size))
        validate_wafer_maps(dataset.maps, dataset.name)
        resample = getattr(self, "resample", "nearest")
        if resample not in RESAMPLE:
            raise ConfigError(f"{type(self).__name__} resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
        if resample == "area" and self.encoding not in ("onehot3", "onehot"):
            raise ConfigError(f"resample='area' gives no-die/pass/fail fractions: it takes encoding onehot3 or "
                              f"onehot, not {self.encoding!r}")
        orient = getattr(self, "orient", "none")
        if orient not in ORIENT:
            raise ConfigError(f"{type(self).__name__} orient must be one of {', '.join(ORIENT)}, got {orient!r}")
        return prepare_maps(dataset.maps, int(self.input_size), resample, orient)

    def encode_batch(self, batch: np.ndarray, kind: str = "wafer"):
        """Return a resized uint8 batch → the float32 network input tensor (N, C, size, size)."""
        import torch

        if kind == "image":
            x = encode_images(batch)
            if x.shape[1] == 1:  # grey images: replicate to the 3 channels pretrained backbones expect
                x = np.repeat(x, 3, axis=1)
            return torch.from_numpy(x)
        if batch.ndim == 4:  # area-resampled (N, S, S, 3) uint8 fractions: channels-last already
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() * (1.0 / AREA_LEVELS)
            return x if self.encoding == "onehot3" else x[:, 1:]
        if self.encoding == "onehot3" and batch.ndim == 3:
            # The same values as encode(batch, "onehot3"), built by one table look-up (torch's gather
            # is multi-threaded: 2.5× numpy's here): (N, S, S, 3) seen as (N, 3, S, S) is already the
            # channels-last layout the fast convolutions want.
            index = torch.from_numpy(np.ascontiguousarray(batch)).int()
            return torch.from_numpy(_ONEHOT3)[index].permute(0, 3, 1, 2)
        return torch.from_numpy(encode(batch, self.encoding))

    def heat_to_die_grids(self, heat: np.ndarray, dataset) -> list[np.ndarray] | None:
        """(N, S, S) maps computed on the network input (Grad-CAM) → each wafer's own die grid.

        For an input other than the plain nearest resize (None: the caller's nearest mapping
        applies).
        """
        resample, orient = getattr(self, "resample", "nearest"), getattr(self, "orient", "none")
        if dataset.kind != "wafer" or (resample == "nearest" and orient == "none"):
            return None
        from waferscope.data.preprocess import area_to_die_grid, canonical_views, undo_view
        from waferscope.explain.gradcam import to_die_grid

        x = resample_maps(dataset.maps, int(self.input_size), resample)
        ks = canonical_views(x) if orient == "canonical" else np.zeros(len(x), np.intp)
        out = []
        for h, k, m in zip(heat, ks, dataset.maps):
            h = undo_view(np.asarray(h), int(k))
            out.append(area_to_die_grid(h, m) if resample == "area" else to_die_grid(h, m.shape[:2]))
        return out

    def to_tensor(self, dataset):
        """Return the whole data set as network input (for explanations and exports)."""
        return self.encode_batch(self.resize(dataset), dataset.kind)

    # ---- training --------------------------------------------------------------------------------
    def _class_weights(self, y: np.ndarray, n_classes: int) -> np.ndarray:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
        return w.astype(np.float32)

    def _loss(self, logits, targets, batch_x):
        """Return the training loss of one batch (subclasses add terms, e.g. a distillation term on batch_x).

        Class-weighted cross-entropy, or with a teacher's soft targets (:meth:`_soft_targets`) the
        distillation loss :func:`~waferscope.models.classifiers.losses.kd_loss`.
        """
        import torch.nn.functional as F

        if getattr(self, "_batch_soft", None) is not None:
            return kd_loss(logits, self._batch_soft, targets, self.distil_alpha, self.distil_temperature,
                           weight=self._loss_weight)
        return F.cross_entropy(logits, targets, weight=self._loss_weight)

    def _training_masks(self, dataset) -> np.ndarray | None:
        """Per-die masks resized like the maps, (N, size, size) uint8, for a loss that uses them.

        None (the default) trains without. While training, each batch's masks, turned with their
        maps, are in ``self._batch_masks`` when :meth:`_loss` runs.
        """
        return None

    def _soft_targets(self, dataset) -> np.ndarray | None:
        """Return (N, n_classes) float32 log-probabilities of a teacher for every map of ``dataset``.

        The maps ``fit`` trains on, its validation split left out; columns in ``self.classes_``
        order, for a distillation term in :meth:`_loss`; None (the default) trains on the labels
        alone. A subclass that returns them defines ``distil_alpha`` and ``distil_temperature``.
        They follow their maps through batching; a rotated or flipped map keeps its targets (its
        class does not change under the 8 symmetries of the square).
        """
        return None

    def _epoch_order(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return the order of one epoch's training maps.

        Class-balanced draws with replacement when imbalance == "sampler", else a
        shuffle.
        """
        if self.imbalance == "sampler":
            p = self._class_weights(y, len(self.classes_))[y].astype(np.float64)
            return rng.choice(len(y), size=len(y), replace=True, p=p / p.sum())
        return rng.permutation(len(y))

    def _targets(self, y: np.ndarray):
        """Return a batch's targets as the tensor :meth:`_loss` takes (class indices here)."""
        import torch

        return torch.from_numpy(y.astype(np.int64))

    def _train_batches(self, x_u8: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                       kind: str) -> Iterator[tuple]:
        """One epoch of (encoded batch, targets) in :meth:`_epoch_order`."""
        import torch

        masks = getattr(self, "_train_masks", None)
        soft = getattr(self, "_train_soft", None)
        for idx in index_batches(self._epoch_order(y, rng), int(self.batch_size), min_size=2):  # BatchNorm: 2+
            if soft is not None:
                self._batch_soft = torch.from_numpy(soft[idx])
            xb = x_u8[idx]
            if masks is not None and xb.ndim == 4:  # area input: the mask turns as a 4th channel
                both = np.concatenate([xb, masks[idx][..., None]], axis=-1)
                both = augment_dihedral(both, rng, axes=(1, 2)) if self.augment else both
                xb = both[..., :3]
                self._batch_masks = torch.from_numpy(both[..., 3].astype(np.float32) * (1.0 / AREA_LEVELS))
            elif masks is not None:  # a map and its mask turn together (one draw per map, as without masks)
                both = np.stack([xb, masks[idx]], axis=1)
                both = augment_dihedral(both, rng, axes=(2, 3)) if self.augment else both
                xb, self._batch_masks = both[:, 0], torch.from_numpy(both[:, 1].astype(np.float32))
            elif self.augment:
                xb = augment_dihedral(xb, rng, axes=(1, 2))
            yield self.encode_batch(xb, kind), self._targets(y[idx])

    # The steps of fit a subclass with other targets replaces (multilabel_cnn: 8 sigmoids, BCE).
    def _training_targets(self, dataset) -> tuple:
        """(training set, classes, (N,) int64 class index of every map) of a labelled data set."""
        dataset = labelled_for_training(dataset, type(self).__name__)
        classes = label_order(dataset.labels)
        index = {c: i for i, c in enumerate(classes)}
        return dataset, classes, np.array([index[c] for c in dataset.labels.astype(str)], dtype=np.int64)

    def _validation_split(self, dataset, y_all: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) indices.

        Stratified, ``val_fraction`` of the maps; early stopping needs a few maps of
        every class, so a tiny set trains on everything, all epochs.
        """
        if self.val_fraction > 0 and len(y_all) * self.val_fraction >= 2 * n_classes:
            return stratified_split(dataset.labels.astype(str), test_size=self.val_fraction, seed=self.seed)
        return np.arange(len(y_all)), np.arange(0)

    def _imbalance_weights(self, y: np.ndarray):
        """Return the loss's class weights when imbalance == "loss"."""
        import torch

        return torch.from_numpy(self._class_weights(y, len(self.classes_)))

    def _validation_score(self, x_u8: np.ndarray, y: np.ndarray, kind: str) -> float:
        """Macro-F1 of the arg-max class on the validation maps (early stopping's score)."""
        from waferscope.metrics.classification import macro_f1

        pred = self._logits(x_u8, kind).argmax(1).numpy()
        return macro_f1(y.astype(str), pred.astype(str))

    def fit(self, dataset, **kwargs) -> "TorchClassifier":
        """Train with :func:`waferscope.models.training.fit_loop`.

        AdamW, a one-cycle learning rate, early stopping on the validation split (best epoch
        restored); the loss and batches are :meth:`_loss` and :meth:`_train_batches`.
        """
        import torch

        if self.imbalance not in IMBALANCE_MODES:
            raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {self.imbalance!r}")
        self._fit_kwargs = kwargs
        dataset, classes, y_all = self._training_targets(dataset)
        x_all = self.resize(dataset)
        kind = dataset.kind

        rng = seed_everything(self.seed)  # before the network is built: its initial weights too
        tr, va = self._validation_split(dataset, y_all, len(classes))
        x_tr, y_tr = x_all[tr], y_all[tr]
        masks = self._training_masks(dataset)
        self._train_masks = None if masks is None else masks[tr]
        self._batch_masks = None

        self.classes_ = list(classes)
        self.in_chans_ = self._in_chans(kind)
        # Only the training part: validation maps are scored on hard labels, so a teacher need not see them.
        self._train_soft = self._soft_targets(dataset.subset(tr))
        self._batch_soft = None
        net = self.build_network(self.in_chans_, len(classes))
        self._loss_weight = self._imbalance_weights(y_tr) if self.imbalance == "loss" else None
        steps_per_epoch = max(1, len(y_tr) // int(self.batch_size) + 1)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.network_ = net

        def step(batch):
            xb, yb = batch
            return self._loss(net(xb), yb, xb), len(yb)

        stopping = None
        if len(va):
            stopping = EarlyStopping(lambda: self._validation_score(x_all[va], y_all[va], kind), int(self.patience),
                                     name="val_macro_f1")
        started = time.perf_counter()
        try:
            result = fit_loop(net, lambda epoch: self._train_batches(x_tr, y_tr, rng, kind), step,
                              epochs=int(self.epochs), optimizer=opt,
                              schedule=one_cycle(opt, self.lr, self.epochs * steps_per_epoch + 1),
                              early_stopping=stopping, progress=bool(self.progress),
                              desc=f"train {self.registry_name or type(self).__name__}")
        finally:
            self._train_masks = self._batch_masks = self._train_soft = self._batch_soft = None
        self._fast_net = None
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.train_seconds_ = time.perf_counter() - started
        return self

    # ---- inference -------------------------------------------------------------------------------
    def inference_network(self):
        """Return an eval-only copy of ``network_`` for prediction.

        Conv→BatchNorm pairs of a sequential network folded together, channels-last memory
        layout (faster convolutions on CPU). It returns the same logits as ``network_`` up
        to float rounding.
        """
        import torch
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        cached = getattr(self, "_fast_net", None)
        if cached is not None and cached[0] is self.network_:
            return cached[1]
        def fold(module):
            """Conv→BatchNorm pairs inside every nn.Sequential (at any depth) folded into the conv."""
            if isinstance(module, nn.Sequential):
                layers: list = []
                for layer in module:
                    if isinstance(layer, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
                        layers[-1] = fuse_conv_bn_eval(layers[-1], layer)
                    else:
                        layers.append(fold(layer))
                return nn.Sequential(*layers).eval()
            for name, child in list(module.named_children()):
                setattr(module, name, fold(child))
            return module

        net = fold(copy.deepcopy(self.network_).eval())
        net = net.to(memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
        self._fast_net = (self.network_, net)
        return net

    def _logits(self, x_u8: np.ndarray, kind: str = "wafer", batch_size: int = 128):
        """Logits of a resized uint8 batch; after fitting through :meth:`inference_network`."""
        import torch

        net = self.network_
        was_training = net.training
        fast = not was_training  # during fit (validation) the weights still change: the plain path
        if fast:
            net = self.inference_network()
        else:
            net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(x_u8), batch_size):
                xb = self.encode_batch(x_u8[start:start + batch_size], kind)
                out.append(net(xb.contiguous(memory_format=torch.channels_last) if fast else xb))
        self.network_.train(was_training)
        n_classes = len(self.classes_)
        return torch.cat(out) if out else torch.zeros((0, n_classes))

    def predict_proba(self, dataset) -> np.ndarray:
        """Class probabilities; with ``tta`` the mean over the 8 rotations/flips of every map."""
        import torch

        self._check_fitted()
        x = self.resize(dataset)
        if not getattr(self, "tta", False):
            return torch.softmax(self._logits(x, dataset.kind).float(), dim=1).numpy()
        total = 0.0
        for k in range(8):
            view = np.ascontiguousarray(dihedral(x, k, axes=(1, 2)))
            total = total + torch.softmax(self._logits(view, dataset.kind).float(), dim=1).numpy()
        return total / 8.0

    def n_parameters(self) -> int:
        """Return the number of parameters of the fitted network."""
        self._check_fitted()
        return int(sum(p.numel() for p in self.network_.parameters()))

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self):
        tensors = {f"network.{k}": v for k, v in self.network_.state_dict().items()}
        extras = {"classes": list(self.classes_), "in_chans": int(self.in_chans_),
                  "best_epoch": int(getattr(self, "best_epoch_", 0)), "history": getattr(self, "history_", [])}
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        self.classes_ = list(extras["classes"])
        self.in_chans_ = int(extras["in_chans"])
        self.best_epoch_ = int(extras.get("best_epoch", 0))
        self.history_ = list(extras.get("history", []))
        net = self.build_network(self.in_chans_, len(self.classes_))
        state = {k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise RunDirError(f"the saved weights do not fit {type(self).__name__}({self.get_params()}): "
                              f"{str(exc).splitlines()[0]}") from None
        net.eval()
        self.network_ = net
        self._fast_net = None
