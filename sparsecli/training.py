"""THE training loop, shared by ``train``, ``prune``'s fine-tuning and ``tune``'s trials.

Epochs are the fidelity: a cheap trial is the same network trained for fewer epochs.
Hooks let callers add what they need without copying the loop: ``after_step`` (e.g. a
dynamic-sparsity mask update) runs after every optimizer step and mask re-application;
``on_epoch`` receives each epoch's record and may return ``True`` to stop (e.g. a tune
scheduler). All shuffling comes from a generator seeded by (seed, epoch), so a run that
resumes from an epoch checkpoint sees the same batches as one that never stopped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsecli.data.layout import SPLITS, meta_path, split_path
from sparsecli.errors import InputFileError, SparsecliError
from sparsecli.evaluation import Split, evaluate
from sparsecli.params import TrainParams
from sparsecli.progress import Progress
from sparsecli.sparse import rezero_weights, update_boost_strength


def read_splits(workdir: Path = Path(".")) -> tuple[dict[str, Split], dict]:
    """The ``data`` stage's outputs as tensors, plus ``meta.json``."""
    meta = read_meta(workdir)
    splits = {}
    for name in SPLITS:
        path = split_path(name, workdir)
        try:
            with np.load(path, allow_pickle=False) as archive:
                splits[name] = Split(torch.from_numpy(archive["x"]), torch.from_numpy(archive["y"]))
        except FileNotFoundError:
            raise InputFileError(f"{path}: not found; run `sparsecli data` (or `dvc repro`) first") from None
        except Exception:
            raise InputFileError(f"{path}: unreadable or corrupted; rerun `sparsecli data`") from None
    return splits, meta


def read_meta(workdir: Path = Path(".")) -> dict:
    """The ``data`` stage's ``data/meta.json``."""
    import json

    path = meta_path(workdir)
    if not path.is_file():
        raise InputFileError(f"{path}: not found; run `sparsecli data` (or `dvc repro`) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputFileError(f"{path}: not valid JSON; rerun `sparsecli data`") from None


class DivergedError(SparsecliError):
    """The loss became NaN or infinite."""


@dataclass
class FitState:
    """What an epoch checkpoint holds to resume a fit."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    optimizer: dict | None = None
    scheduler: dict | None = None
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    stopped_early: bool = False


def make_optimizer(model: nn.Module, train: TrainParams) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def epoch_steps(train: TrainParams, samples: int, epoch: int) -> int:
    """Optimizer steps (batches) in an epoch: epoch 1 may use ``first_epoch_batch_size``."""
    return math.ceil(samples / batch_size(train, epoch))


def batch_size(train: TrainParams, epoch: int) -> int:
    return train.first_epoch_batch_size if epoch == 1 and train.first_epoch_batch_size else train.batch_size


def make_scheduler(optimizer, train: TrainParams, epochs: int, steps_per_epoch: int, first_epoch_steps: int | None = None):
    """A scheduler stepped once per optimizer step, whatever the schedule.

    Schedules are functions of the epochs done (a fraction within an epoch), so a first epoch
    with more, smaller batches (``train.first_epoch_batch_size``) counts as one epoch.
    """
    first = first_epoch_steps or steps_per_epoch
    total = first + (epochs - 1) * steps_per_epoch

    def done(s: int) -> float:  # epochs done after s steps
        return s / first if s < first else 1 + (s - first) / steps_per_epoch

    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total)
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(done(s), epochs) / epochs)))
    if train.schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: train.gamma ** (math.floor(done(s) + 1e-9) // train.step_size))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def fit(
    model: nn.Module,
    train: TrainParams,
    splits: dict[str, Split],
    *,
    seed: int,
    epochs: int | None = None,
    state: FitState | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
    on_epoch: Callable[[dict, FitState], bool | None] | None = None,
    progress: Progress | None = None,
    task: str = "train",
) -> FitState:
    """Train ``model`` for ``epochs`` (default ``train.epochs``), resuming from ``state`` if given.

    Masks are re-applied after every step, kWTA boosting decays once per epoch, and with
    ``train.early_stopping`` the best-val-accuracy weights are restored at the end.
    """
    epochs = epochs or train.epochs
    progress = progress or Progress()
    state = state or FitState()
    data = splits["train"]
    steps_per_epoch = epoch_steps(train, len(data), 2)
    first_steps = epoch_steps(train, len(data), 1)
    optimizer = make_optimizer(model, train)
    scheduler = make_scheduler(optimizer, train, epochs, steps_per_epoch, first_steps)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    progress.start(task, epochs, steps_per_epoch)
    step = first_steps + (state.epoch - 1) * steps_per_epoch if state.epoch else 0
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            model.train()
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            total_loss, correct, seen = 0.0, 0, 0
            lr = optimizer.param_groups[0]["lr"]
            size = batch_size(train, epoch)
            for start in range(0, len(data), size):
                idx = order[start:start + size]
                if len(idx) == 1 and start > 0:
                    continue  # batch norm cannot train on one sample: a last batch of one is skipped
                x, y = data.x[idx], data.y[idx]
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise DivergedError(f"loss became {loss_value} at epoch {epoch}; lower train.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rezero_weights(model)
                step += 1
                if after_step is not None:
                    after_step(model, step)
                scheduler.step()
                total_loss += loss_value * len(y)
                correct += int((logits.argmax(dim=1) == y).sum())
                seen += len(y)
                progress.step(loss_value)
            update_boost_strength(model)
            val_loss, val_accuracy = evaluate(model, splits["val"])
            record = {
                "epoch": epoch,
                "train_loss": total_loss / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": lr,
            }
            state.epoch = epoch
            state.history.append(record)
            if train.early_stopping and val_accuracy > state.best_val_accuracy:
                state.best_val_accuracy, state.best_epoch = val_accuracy, epoch
                state.best_state = copy.deepcopy(model.state_dict())
            state.optimizer = optimizer.state_dict()
            state.scheduler = scheduler.state_dict()
            progress.epoch(record)
            stop = on_epoch(record, state) if on_epoch is not None else False
            if train.early_stopping and epoch - state.best_epoch >= train.early_stopping:
                state.stopped_early = True
                stop = True
            if stop:
                break
    finally:
        progress.finish()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return state
