"""A trained or pruned sparsecli model as kernel ``LayerSpec``s, packed once for inference.

Only MLPs convert (the engine has no conv kernels). Batch norm is folded into each
layer's weights and bias (``y = (Wx + b - mean) * gamma / sqrt(var + eps) + beta`` is a
row scaling, so zero weights stay zero); kWTA keeps ``k_inference`` winners. kWTA's
boosting is not folded: at inference it only reorders near-ties after training has
decayed ``boost_strength``, and ``fidelity()`` measures how often the engine's answer
still matches the torch model's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.kernels.engine import LayerSpec
from sparsecli.sparse.kwinners import KWinners


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """One spec per weight layer of an MLP, first to last, BN folded, k = k at inference."""
    from sparsecli.models.mlp import MLP

    if not isinstance(model, MLP):
        raise ParamsError("model.arch = cnn: the sparse CPU kernels run MLPs only; benchmark an MLP pipeline "
                          "(the reference network is measured either way)")
    specs = []
    for block in model.layers:
        linear = block.weights.module
        weight = linear.weight.detach().double()
        bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        if isinstance(block.norm, nn.BatchNorm1d):
            norm = block.norm
            scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
            weight = weight * scale[:, None]
            bias = (bias - norm.running_mean.double()) * scale + norm.bias.detach().double()
        k = block.act.k_inference if isinstance(block.act, KWinners) else None
        if k is not None and k >= weight.shape[0]:
            k = None  # every unit wins: kWTA is the identity
        if k is None and not isinstance(block.act, KWinners):
            raise ParamsError("a hidden layer without kWTA (ReLU) has no sparse-sparse kernel; "
                              "give every hidden layer a kwta block to benchmark the pipeline model")
        specs.append(LayerSpec(weight.float().numpy(), bias.float().numpy(), k))
    head = model.head.module
    specs.append(LayerSpec(head.weight.detach().numpy().astype(np.float32),
                           head.bias.detach().numpy().astype(np.float32), None))
    return specs


@torch.no_grad()
def fidelity(model: nn.Module, engine, x: torch.Tensor) -> dict:
    """How closely ``engine`` reproduces the torch model in eval mode on ``x``."""
    model.eval()
    expected = model(x).numpy()
    got = engine(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return {
        "argmax_agreement": float((expected.argmax(1) == got.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(expected - got).max()),
    }
