"""Evaluating a model: accuracy, noise robustness, and the metrics every model-writing stage reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsecli.data.layout import meta_path, noise_sets_path
from sparsecli.errors import InputFileError
from sparsecli.params import NoiseParams
from sparsecli.sparse.stats import activity, weight_sparsity


@dataclass
class Split:
    """One data split as tensors: features [N, F] and labels [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) in eval mode."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train(was_training)
    n = max(len(split), 1)
    return loss / n, correct / n


@dataclass
class NoiseProtocol:
    """How the test split is corrupted at each level (``train.noise``), ready to apply.

    ``pixels``: ``white`` is the per-feature white value in the model's input space, the raw
    ``input_stats.mean + white_std * input_stats.std`` put through the data stage's
    standardisation (``meta.json``), so a noisy pixel is what the data stage would have made of
    a raw image with that pixel white. ``waveform``: ``precomputed`` holds the data stage's
    noisy test features per level.
    """

    kind: str
    levels: list[float]
    seed: int
    white: torch.Tensor | None = None
    precomputed: dict[float, torch.Tensor] | None = None

    def apply(self, split: Split, index: int, level: float) -> torch.Tensor:
        if self.kind == "waveform":
            return self.precomputed[level]
        if self.kind == "gaussian":
            generator = torch.Generator().manual_seed(self.seed * 1_000 + index)
            return split.x + level * torch.randn(split.x.shape, generator=generator)
        # pixels: int(level * features) features of each sample, chosen at random, set to white
        n, features = split.x.shape
        count = int(level * features + 1e-9)
        if count == 0:
            return split.x
        rng = np.random.default_rng([self.seed, index])
        chosen = np.argsort(rng.random((n, features)), axis=1)[:, :count]
        x = split.x.clone()
        rows = torch.arange(n).unsqueeze(1)
        cols = torch.from_numpy(chosen)
        x[rows, cols] = self.white[cols]
        return x


def noise_protocol(noise: NoiseParams, seed: int, meta: dict, workdir: Path = Path(".")) -> NoiseProtocol:
    """The protocol ``train.noise`` describes, with what it needs from the data stage's outputs."""
    protocol = NoiseProtocol(noise.kind, list(noise.levels), seed)
    if noise.kind == "pixels":
        stats = meta.get("input_stats")
        if not stats:
            raise InputFileError(f"{meta_path(workdir)}: has no input_stats (written by an older sparsecli); rerun `sparsecli data`")
        white = stats["mean"] + noise.white_std * stats["std"]
        features = int(meta["features"])
        standard = meta.get("standardization")
        if standard:
            mean = torch.tensor(standard["mean"], dtype=torch.float32)
            std = torch.tensor(standard["std"], dtype=torch.float32)
            protocol.white = ((white - mean) / std).float()
        else:
            protocol.white = torch.full((features,), float(white))
    elif noise.kind == "waveform":
        path = noise_sets_path(workdir)
        try:
            with np.load(path, allow_pickle=False) as archive:
                levels = [float(v) for v in archive["levels"]]
                sets = {level: torch.from_numpy(archive[f"x_{i}"]) for i, level in enumerate(levels)}
        except FileNotFoundError:
            raise InputFileError(f"{path}: not found; waveform noise needs the data stage's noisy test sets: "
                                 "rerun `sparsecli data` with train.noise.kind waveform") from None
        except Exception:
            raise InputFileError(f"{path}: unreadable or corrupted; rerun `sparsecli data`") from None
        missing = [level for level in noise.levels if level not in sets]
        if missing:
            raise InputFileError(f"{path}: has no noisy test set for level {missing[0]} (it has {levels}); "
                                 "rerun `sparsecli data` after changing train.noise.levels")
        protocol.precomputed = sets
    return protocol


@torch.no_grad()
def noise_robustness(model: nn.Module, split: Split, protocol: NoiseProtocol) -> dict:
    """Accuracy at each noise level, and the noise score: correct classifications summed over the levels.

    ``noise_score_fraction`` is the score over its maximum (samples x levels).
    """
    per_level, correct = {}, 0
    for index, level in enumerate(protocol.levels):
        accuracy = evaluate(model, Split(protocol.apply(split, index, level), split.y))[1]
        per_level[str(level)] = accuracy
        correct += round(accuracy * len(split))
    total = len(split) * len(protocol.levels)
    return {"noise_kind": protocol.kind, "accuracy_by_noise": per_level, "noise_score": correct,
            "noise_score_fraction": correct / total if total else 0.0}


def model_metrics(model: nn.Module, splits: dict[str, Split], noise: NoiseProtocol) -> dict:
    """Accuracy and loss (val, test), weight and activation sparsity, MACs, noise robustness.

    Activation sparsity and MACs are measured on the test split, in eval mode.
    """
    val_loss, val_accuracy = evaluate(model, splits["val"])
    test_loss, test_accuracy = evaluate(model, splits["test"])
    overall, per_layer = weight_sparsity(model)
    return {
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy,
        "test_loss": test_loss,
        "val_loss": val_loss,
        "weight_sparsity": overall,
        "weight_sparsity_per_layer": per_layer,
        **activity(model, splits["test"].x),
        **noise_robustness(model, splits["test"], noise),
    }
