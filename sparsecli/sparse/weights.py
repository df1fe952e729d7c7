"""Static sparse weights: a fixed random mask with the same non-zero count per output unit.

The mask may have a structure (``sparsecli.sparse.patterns``: whole RxC blocks, or N:M
groups), drawn at init with the same count of groups in every (block) row; re-applying
it after each step keeps the structure through training.

Wraps a layer instead of subclassing it (as nupic.torch does): ``SparseWeights(nn.Linear(64, 256),
sparsity=0.8, generator=g)``. The mask is a registered buffer, so it is saved in the
state_dict; the training loop calls ``rezero()`` after every optimizer step so masked
weights stay exactly zero without paying for a masked multiply in the forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecli.sparse.patterns import Block, Pattern, from_matrix, structured_mask


def nonzeros_per_unit(sparsity: float, fan_in: int) -> int:
    """round((1 - sparsity) * fan_in): the non-zero inputs each output unit keeps."""
    return round((1.0 - sparsity) * fan_in)


def random_mask(out_units: int, fan_in: int, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """A [out_units, fan_in] 0/1 mask with exactly nonzeros_per_unit() ones in every row."""
    if nonzeros_per_unit(sparsity, fan_in) < 1:
        raise ValueError(f"sparsity {sparsity} leaves no input for a fan-in of {fan_in}")
    return structured_mask(Block(), (out_units, fan_in), sparsity, generator)


class SparseWeights(nn.Module):
    """A Linear or Conv2d whose weight is zero outside a fixed mask."""

    def __init__(self, module: nn.Linear | nn.Conv2d, sparsity: float, generator: torch.Generator,
                 pattern: Pattern = Block()):
        super().__init__()
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.module = module
        self.sparsity = sparsity
        self.pattern = pattern  # the structure the mask keeps (pruning and dynamic sparsity respect it)
        weight = module.weight
        out_units, fan_in = weight.shape[0], weight[0].numel()
        if pattern == Block():  # unstructured: row order does not matter; the draws predate structures
            mask = random_mask(out_units, fan_in, sparsity, generator).view_as(weight)
        else:  # conv fan-in channels innermost, as patterns.as_matrix sees it
            mask = from_matrix(structured_mask(pattern, (out_units, fan_in), sparsity, generator), weight)
        self.register_buffer("mask", mask)
        init_weights(module, int(mask[0].sum()), generator)
        self.rezero()

    @torch.no_grad()
    def rezero(self) -> None:
        self.module.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}" + ("" if self.pattern == Block() else f", structure={self.pattern.name}")


def init_weights(module: nn.Linear | nn.Conv2d, fan_in: int, generator: torch.Generator) -> None:
    """Kaiming-uniform init for ReLU-like units, scaled to the non-zero fan-in.

    With a mask, each unit sums only ``fan_in`` inputs; scaling by the full fan-in would
    shrink activations layer after layer.
    """
    bound = math.sqrt(6.0 / fan_in)
    with torch.no_grad():
        module.weight.uniform_(-bound, bound, generator=generator)
        if module.bias is not None:
            bias_bound = 1.0 / math.sqrt(fan_in)
            module.bias.uniform_(-bias_bound, bias_bound, generator=generator)


def rezero_weights(model: nn.Module) -> None:
    """Re-apply every mask in the model (after an optimizer step)."""
    for module in model.modules():
        if isinstance(module, SparseWeights):
            module.rezero()
