"""A trained or pruned sparsecli model as kernel specs (``LayerSpec``, ``ConvSpec``), packed once.

MLPs become a list of ``LayerSpec``; CNNs (``models.cnn.CNN``) their conv blocks as
``ConvSpec`` (same padding, kWTA or ReLU, then max-pooling) plus the linear layers
(``model_network``). Batch norm is folded into each layer's weights and bias (``y = (Wx + b - mean) * gamma / sqrt(var + eps) + beta`` is a
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

    from sparsecli.models.cnn import CNN

    if not isinstance(model, (MLP, CNN)):
        raise ParamsError(f"the sparse CPU kernels run sparsecli's MLP and CNN models, not {type(model).__name__}")
    specs = []
    for block in model.layers:
        linear = block.weights.module
        weight, bias = _folded(linear, block.norm)
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


def _folded(module, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) with a following batch norm folded in: a per-output scaling."""
    weight = module.weight.detach().double()
    bias = module.bias.detach().double() if module.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = (bias - norm.running_mean.double()) * scale + norm.bias.detach().double()
    return weight, bias


def conv_specs(model: nn.Module) -> list:
    """One ``ConvSpec`` per conv block of a ``CNN``: BN folded, kWTA (k at inference) or ReLU, then pool."""
    from sparsecli.kernels.conv import ConvSpec
    from sparsecli.sparse.kwinners import KWinners2d

    specs = []
    for block in model.conv:
        conv = block.weights.module
        weight, bias = _folded(conv, block.norm)
        k = local = None
        if isinstance(block.act, KWinners2d):
            k, local = block.act.k_inference, block.act.local
            if k >= block.act.units:
                k = None  # every unit wins: kWTA is the identity
        pool = block.pool.kernel_size if isinstance(block.pool, nn.MaxPool2d) else 1
        pool = pool if isinstance(pool, int) else pool[0]
        specs.append(ConvSpec(weight.float().numpy(), bias.float().numpy(), padding=int(conv.padding[0]),
                              stride=int(conv.stride[0]), pool=int(pool), k=k, local=bool(local),
                              pool_first=False, relu=isinstance(block.act, nn.ReLU)))
    return specs


def model_network(model: nn.Module, label: str = "pipeline model"):
    """The model as a ``measure.Network``: its engines, MACs and ideal speedups."""
    from sparsecli.kernels.measure import Network
    from sparsecli.models.cnn import CNN

    linears = layer_specs(model)
    if isinstance(model, CNN):
        return Network("cnn", label, linears, conv_specs(model), tuple(model.image_shape))
    return Network("mlp", label, linears, [], (linears[0].n_in,))


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
