"""The one training loop every torch model in waferscope uses (issue 30 item 4).

A model supplies what is its own — how to cut an epoch into batches and what the loss of one batch
is — and :func:`fit_loop` does the rest, the same way for all of them:

- **optimiser and schedule**: the model builds its optimiser (:func:`torch.optim.AdamW`, SGD...)
  and optionally an LR schedule; the loop zeroes, back-propagates, steps both once per batch. A
  schedule with a fixed length (:func:`one_cycle`) stops at its last step rather than raising;
- **EMA** (:class:`EMA`): an exponential moving average of the weights, updated after every step;
- **early stopping** (:class:`EarlyStopping`): a validation score after every epoch, the best
  epoch's weights kept and restored, training ends after ``patience`` epochs without a better one;
- **progress**: one tqdm bar over the epochs on stderr, with the epoch's loss and score;
- **determinism**: the loop itself draws no random numbers. :func:`seed_everything` seeds torch and
  returns the numpy generator the model's batches draw from, so a seeded fit repeats exactly.

A model's part, in full (the autoencoder of ``ae_latent``; ``rng = seed_everything(seed)``)::

    def batches(epoch):                      # what one epoch sees
        for idx in index_batches(rng.permutation(len(x)), batch_size, min_size=2):
            yield augment_dihedral(x[idx], rng, axes=(1, 2))

    def step(xb):                            # (loss of one batch, how many samples it averages)
        return F.cross_entropy(ae(encode(xb)), torch.from_numpy(xb.astype(np.int64))), len(xb)

    result = fit_loop(ae, batches, step, epochs=10, optimizer=torch.optim.AdamW(ae.parameters(), lr=2e-3))
    result.losses                            # the mean training loss of each epoch

Why a function and not a framework (Lightning's Trainer, anomalib's engine): the models differ
most in their batches (class-balanced sampling, masks that turn with their maps, teacher targets,
synthetic maps drawn fresh each epoch, random patch subsets) and a callback for "the batches" keeps
each of those where it is readable, in its model, while the loop stays one page long.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["seed_everything", "index_batches", "one_cycle", "EMA", "EarlyStopping", "FitResult", "fit_loop"]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch's global generator and return a numpy generator for everything else a model draws.

    The torch generator draws initial weights and dropout, the numpy one shuffling and augmentation.
    Call it once, before building the network.
    """
    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def index_batches(order: np.ndarray, batch_size: int, *, min_size: int = 1) -> Iterator[np.ndarray]:
    """Consecutive slices of ``order`` of ``batch_size`` indices.

    A last, shorter slice is kept only when it has ``min_size`` or more (2 for BatchNorm,
    which cannot normalise one sample; ``batch_size`` to keep full batches only).
    """
    for start in range(0, len(order), int(batch_size)):
        idx = order[start:start + int(batch_size)]
        if len(idx) >= min_size:
            yield idx


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.15):
    """Return the one-cycle learning rate (linear warm-up for ``pct_start`` of the steps, then cosine decay)."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=int(total_steps),
                                               pct_start=pct_start)


class EMA:
    """An exponential moving average of a module's parameters.

    After every step ``average = decay · average + (1 − decay) · weights`` (buffers are not averaged: a
    BatchNorm's statistics of the averaged weights have to be recomputed, e.g. with
    ``torch.optim.swa_utils.update_bn``).

    ``from_start=True``: the average starts at the module's weights as they are now (a *target*
    network that trails the trained one from its initialisation, as ReConPatch and BYOL use);
    ``False``: it starts at the weights after the first step, so the random initialisation never
    enters an average meant for evaluation (torch's ``AveragedModel`` does the same).
    """

    def __init__(self, module: torch.nn.Module, decay: float, *, from_start: bool = True):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"an EMA decay must be in [0, 1), got {decay!r}")
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = float(decay)
        self.updates = 1 if from_start else 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Update the moving average of the weights with ``module``'s."""
        for avg, p in zip(self.module.parameters(), module.parameters()):
            if self.updates == 0:
                avg.copy_(p)
            else:
                avg.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        self.updates += 1


@dataclass
class EarlyStopping:
    """After every epoch ``validate()`` scores the model (higher is better).

    The best epoch's weights are kept and restored at the end, and training stops once
    ``patience`` epochs in a row brought no better score. The score goes into the epoch's history
    entry as ``name``.
    """

    validate: Callable[[], float]
    patience: int
    name: str = "val_score"


@dataclass
class FitResult:
    """What :func:`fit_loop` returns.

    ``history``: one dict per epoch run (``epoch``, ``train_loss`` — the sample-weighted mean
    loss of its steps — and the early-stopping score); ``best_epoch``: the epoch whose weights
    the modules hold (the last one without early stopping); ``stopped_early``: whether patience
    ran out before ``epochs``.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    @property
    def losses(self) -> list[float]:
        """Return the training loss of every epoch."""
        return [entry["train_loss"] for entry in self.history]


def _schedule_finished(schedule) -> bool:
    # OneCycleLR raises when stepped past total_steps. A schedule sized for exactly the steps taken
    # would raise at the last one (which only sets the LR for a step that never comes), and one
    # sized for fewer steps simply holds its end value for the rest.
    total = getattr(schedule, "total_steps", None)
    return total is not None and schedule.last_epoch >= total - 1


def fit_loop(modules: torch.nn.Module | Sequence[torch.nn.Module], batches: Callable[[int], Iterable],
             step: Callable[[object], tuple[torch.Tensor, float]], *, epochs: int,
             optimizer: torch.optim.Optimizer, schedule=None, ema: EMA | None = None,
             early_stopping: EarlyStopping | None = None, evaluate: Callable[[], dict] | None = None,
             progress: bool = False, desc: str = "train") -> FitResult:
    """Train for up to ``epochs`` epochs and return the :class:`FitResult`.

    ``modules``: put in train mode at the start of every epoch (a validation pass may have switched
    them to eval) and in eval mode at the end; the first one is the network whose weights early
    stopping keeps and EMA averages. ``batches(epoch)``: the batches of epoch ``epoch`` (0-based),
    anything ``step`` accepts. ``step(batch)``: ``(loss, n)``, the batch's loss tensor and how many
    samples it averages over (the weight of that loss in the epoch's mean). ``evaluate()``: figures
    to add to every epoch's history entry (a held-out metric to watch) that do not steer training.
    """
    from tqdm.auto import tqdm

    modules = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
    network = modules[0] if modules else None
    if network is None and (ema is not None or early_stopping is not None):
        raise ValueError("EMA and early stopping need the network: pass it as the first of modules")
    result = FitResult()
    best_score, best_state = -math.inf, None
    bar = tqdm(range(int(epochs)), desc=desc, disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    for epoch in bar:
        for m in modules:
            m.train()
        total, count = 0.0, 0.0
        for batch in batches(epoch):
            loss, n = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None and not _schedule_finished(schedule):
                schedule.step()
            if ema is not None:
                ema.update(network)
            total += float(loss.detach()) * n
            count += n
        entry = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
        if evaluate is not None:
            entry.update(evaluate())
        if early_stopping is not None:
            score = float(early_stopping.validate())
            entry[early_stopping.name] = score
            if score > best_score:
                best_score, best_state, result.best_epoch = score, copy.deepcopy(network.state_dict()), epoch + 1
        else:
            result.best_epoch = epoch + 1
        result.history.append(entry)
        bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "epoch"})
        if early_stopping is not None and epoch + 1 - result.best_epoch >= early_stopping.patience:
            result.stopped_early = epoch + 1 < int(epochs)
            break
    bar.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    for m in modules:
        m.eval()
    return result
