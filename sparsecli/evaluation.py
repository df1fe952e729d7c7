"""Evaluating a model: accuracy, noise robustness, and the metrics every model-writing stage reports."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


@torch.no_grad()
def noise_robustness(model: nn.Module, split: Split, levels: list[float], seed: int) -> dict:
    """Accuracy with Gaussian noise of each std added to the (standardised) inputs, and their sum."""
    generator = torch.Generator().manual_seed(seed)
    per_level = {}
    for std in levels:
        noisy = split.x + std * torch.randn(split.x.shape, generator=generator)
        per_level[str(std)] = evaluate(model, Split(noisy, split.y))[1]
    return {"accuracy_by_noise": per_level, "noise_score": sum(per_level.values())}


def model_metrics(model: nn.Module, splits: dict[str, Split], noise_levels: list[float], seed: int) -> dict:
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
        **noise_robustness(model, splits["test"], noise_levels, seed),
    }
