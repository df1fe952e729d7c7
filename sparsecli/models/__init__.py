"""Model builders: ``build_model(params, meta)`` makes the network the params describe."""

from __future__ import annotations

import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.params import Params


def build_model(params: Params, meta: dict) -> nn.Module:
    """Build the model for a dataset described by its ``meta.json``; weights and masks from ``seed``.

    The seed drives a dedicated ``torch.Generator``, so the same params give the same masks
    and initial weights whatever else uses torch's global RNG.
    """
    from sparsecli.models.cnn import CNN
    from sparsecli.models.mlp import MLP

    generator = torch.Generator().manual_seed(params.seed)
    classes = int(meta["classes"])
    if params.model.arch == "cnn":
        image_shape = meta.get("image_shape")
        if not image_shape:
            raise ParamsError(
                f"model.arch = cnn: the data ({meta.get('source', '?')}) has no image shape; "
                "use model.arch=mlp or an image source (digits, idx, npz of images)"
            )
        model = CNN(params.model, tuple(image_shape), classes, generator)
    else:
        model = MLP(params.model, int(meta["features"]), classes, generator)
    if params.model.init == "pytorch":
        _pytorch_init(model)
    return model


@torch.no_grad()
def _pytorch_init(model: nn.Module) -> None:
    """Scale the He-uniform weights (+-sqrt(6/n)) to torch's default bound (+-1/sqrt(n)): the same draws."""
    from sparsecli.sparse.weights import SparseWeights

    for module in model.modules():
        if isinstance(module, SparseWeights):
            module.module.weight.mul_(6 ** -0.5)
