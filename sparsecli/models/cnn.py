"""A small CNN: sparse conv blocks (with kWTA or ReLU, then pooling), sparse linear blocks, a head."""

from __future__ import annotations

import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.models.blocks import ConvBlock, classifier_head, linear_blocks
from sparsecli.params import ModelParams


class CNN(nn.Module):
    def __init__(self, params: ModelParams, image_shape: tuple[int, int, int], classes: int,
                 generator: torch.Generator):
        super().__init__()
        self.image_shape = tuple(image_shape)
        shape = self.image_shape
        convs = []
        for i, conv in enumerate(params.conv):
            key = f"model.conv.{i}"
            block = ConvBlock(shape, conv.channels, conv.kernel_size, conv.pool, conv.weights,
                              conv.kwta, params.batch_norm, key, generator, conv.padding, conv.pool_first)
            convs.append(block)
            height, width = block.out_hw[0] // conv.pool, block.out_hw[1] // conv.pool
            if height < 1 or width < 1:
                raise ParamsError(
                    f"{key}.pool = {conv.pool}: the {shape[1]}x{shape[2]} input of this layer would pool "
                    f"to nothing; use pool: 1 or remove the layer"
                )
            shape = (conv.channels, height, width)
        self.conv = nn.ModuleList(convs)
        self.layers, width = linear_blocks(params, shape[0] * shape[1] * shape[2], generator)
        self.head = classifier_head(width, classes, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.image_shape)
        for block in self.conv:
            x = block(x)
        x = x.flatten(1)
        for block in self.layers:
            x = block(x)
        return self.head(x)
