"""Static sparse weights: a fixed random mask with the same non-zero count per output unit.

Wraps a layer instead of subclassing it (as nupic.torch does): ``SparseWeights(nn.Linear(64, 256),
sparsity=0.8, generator=g)``. The mask is a registered buffer, so it is saved in the
state_dict; the training loop calls ``rezero()`` after every optimizer step so masked
weights stay exactly zero without paying for a masked multiply in the forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def nonzeros_per_unit(sparsity: float, fan_in: int) -> int:
    """round((1 - sparsity) * fan_in): the non-zero inputs each output unit keeps."""
    return round((1.0 - sparsity) * fan_in)


def random_mask(out_units: int, fan_in: int, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """A [out_units, fan_in] 0/1 mask with exactly nonzeros_per_unit() ones in every row."""
    keep = nonzeros_per_unit(sparsity, fan_in)
    if keep < 1:
        raise ValueError(f"sparsity {sparsity} leaves no input for a fan-in of {fan_in}")
    order = torch.rand(out_units, fan_in, generator=generator).argsort(dim=1)
    mask = torch.zeros(out_units, fan_in)
    mask.scatter_(1, order[:, :keep], 1.0)
    return mask


class SparseWeights(nn.Module):
    """A Linear or Conv2d whose weight is zero outside a fixed mask."""

    def __init__(self, module: nn.Linear | nn.Conv2d, sparsity: float, generator: torch.Generator):
        super().__init__()
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.module = module
        self.sparsity = sparsity
        weight = module.weight
        out_units, fan_in = weight.shape[0], weight[0].numel()
        mask = random_mask(out_units, fan_in, sparsity, generator).view_as(weight)
        self.register_buffer("mask", mask)
        init_weights(module, int(mask[0].sum()), generator)
        self.rezero()

    @torch.no_grad()
    def rezero(self) -> None:
        self.module.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}"


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
