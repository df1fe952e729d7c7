"""The hidden block both architectures share: sparse weights -> batch norm -> kWTA or ReLU."""

from __future__ import annotations

import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.params import KWTAParams, ModelParams, WeightsParams, check_k
from sparsecli.sparse import KWinners, KWinners2d, SparseWeights
from sparsecli.sparse.patterns import kept_per_row, matrix_shape, of_structure
from sparsecli.sparse.weights import nonzeros_per_unit


def sparse(module: nn.Linear | nn.Conv2d, weights: WeightsParams, key: str, generator: torch.Generator) -> SparseWeights:
    """``module`` with the static mask ``weights`` describes; what the layer's shape rules out is a ParamsError."""
    sparsity, fan_in = weights.sparsity, module.weight[0].numel()
    if nonzeros_per_unit(sparsity, fan_in) < 1:
        raise ParamsError(
            f"{key}.weights.sparsity = {sparsity}: leaves round((1 - sparsity) * {fan_in}) = 0 "
            f"inputs per unit; use at most {1 - 0.5 / fan_in:.4f}"
        )
    pattern = of_structure(weights.structure)
    problem = pattern.misfit(matrix_shape(module.weight))
    if problem:
        raise ParamsError(f"{key}.weights.structure = {weights.structure!r}: {problem}; "
                          "choose a structure that fits the layer, or unstructured")
    if kept_per_row(pattern, sparsity, fan_in) < 1:
        raise ParamsError(f"{key}.weights.sparsity = {sparsity}: keeps round((1 - sparsity) * {fan_in} / "
                          f"{pattern.cols}) = 0 blocks per block row of structure {weights.structure}; "
                          f"use at most {1 - 0.5 * pattern.cols / fan_in:.4f}")
    return SparseWeights(module, sparsity, generator, pattern)


def checked_k(kwta: KWTAParams, units: int, key: str) -> None:
    """check_k with the full key path, for limits known only once the data shape is."""
    try:
        check_k(kwta, units, "kwta")
    except ValueError as e:
        raise ParamsError(f"{key}.{e.key} = {e.value}: {e.message}") from None


class LinearBlock(nn.Module):
    def __init__(self, in_features: int, units: int, weights: WeightsParams, kwta: KWTAParams | None,
                 batch_norm: bool, key: str, generator: torch.Generator):
        super().__init__()
        self.weights = sparse(nn.Linear(in_features, units), weights, key, generator)
        self.norm = nn.BatchNorm1d(units) if batch_norm else nn.Identity()
        if kwta is None:
            self.act = nn.ReLU()
        else:
            checked_k(kwta, units, key)
            self.act = KWinners(units, kwta.percent_on, kwta.boost_strength, kwta.boost_strength_factor,
                                kwta.duty_cycle_period, kwta.k_inference_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.weights(x)))


class ConvBlock(nn.Module):
    """Conv (same-padded, or valid), then its activation, then max-pooling (or pooling first)."""

    def __init__(self, shape: tuple[int, int, int], channels: int, kernel_size: int, pool: int,
                 weights: WeightsParams, kwta: KWTAParams | None, batch_norm: bool, key: str,
                 generator: torch.Generator, padding: str = "same", pool_first: bool = False):
        super().__init__()
        in_channels, height, width = shape
        if padding == "valid":
            height, width = height - kernel_size + 1, width - kernel_size + 1
            if height < 1 or width < 1:
                raise ParamsError(f"{key}.kernel_size = {kernel_size}: larger than the {shape[1]}x{shape[2]} input "
                                  "of this layer without padding; use padding: same or a smaller kernel")
        self.out_hw = (height, width)
        self.pool_first = pool_first
        if pool_first:
            height, width = height // pool, width // pool
        conv = nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2 if padding == "same" else 0)
        self.weights = sparse(conv, weights, key, generator)
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        if kwta is None:
            self.act = nn.ReLU()
        else:
            checked_k(kwta, channels if kwta.local else channels * height * width, key)
            self.act = KWinners2d(channels, height, width, kwta.percent_on, kwta.boost_strength,
                                  kwta.boost_strength_factor, kwta.duty_cycle_period,
                                  kwta.k_inference_factor, kwta.local)
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            return self.act(self.pool(self.norm(self.weights(x))))
        return self.pool(self.act(self.norm(self.weights(x))))


def linear_blocks(params: ModelParams, in_features: int, generator: torch.Generator) -> tuple[nn.ModuleList, int]:
    """The hidden linear blocks ``model.layers`` describe, and the width they end at."""
    blocks, width = [], in_features
    for i, layer in enumerate(params.layers):
        blocks.append(LinearBlock(width, layer.units, layer.weights, layer.kwta,
                                  params.batch_norm, f"model.layers.{i}", generator))
        width = layer.units
    return nn.ModuleList(blocks), width


def classifier_head(in_features: int, classes: int, generator: torch.Generator) -> SparseWeights:
    """The output layer: dense by default, but masked so pruning can reach it if asked."""
    return SparseWeights(nn.Linear(in_features, classes), 0.0, generator)
