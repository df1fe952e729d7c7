"""A multi-layer perceptron of sparse hidden blocks and a linear classifier head."""

from __future__ import annotations

import torch
from torch import nn

from sparsecli.models.blocks import classifier_head, linear_blocks
from sparsecli.params import ModelParams


class MLP(nn.Module):
    def __init__(self, params: ModelParams, in_features: int, classes: int, generator: torch.Generator):
        super().__init__()
        self.layers, width = linear_blocks(params, in_features, generator)
        self.head = classifier_head(width, classes, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.layers:
            x = block(x)
        return self.head(x)
