"""How sparse a model is: weight sparsity per layer, activation sparsity, and MACs.

A layer is a ``SparseWeights`` module, named by its path without the ``.weights`` suffix
(``layers.0``, ``conv.1``, ``head``), the same name as its ``model.*`` params key.

MACs per inference (one sample):
- dense: weights × output positions (1 for linear, H_out × W_out for conv).
- non-zero: multiply-adds whose weight *and* input are both non-zero. For a linear layer,
  the mean over samples of sum_j [x_j != 0] × (non-zeros in weight column j); for a conv,
  non-zero weights × output positions × input density (an average, as input zeros move).
The two sparsities multiply: 90% zero weights and 90% zero inputs leave ~1% of the MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecli.sparse.kwinners import is_kwinners
from sparsecli.sparse.weights import SparseWeights


def weight_layers(model: nn.Module) -> dict[str, SparseWeights]:
    return {name.removesuffix(".weights"): m for name, m in model.named_modules() if isinstance(m, SparseWeights)}


def weight_sparsity(model: nn.Module) -> tuple[float, dict[str, float]]:
    """Overall (all weight layers, head included) and per-layer fraction of zero weights."""
    per_layer, zeros, total = {}, 0, 0
    for name, layer in weight_layers(model).items():
        w = layer.module.weight
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros += z
        total += w.numel()
    return zeros / max(total, 1), per_layer


@torch.no_grad()
def activity(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> dict:
    """Activation sparsity of each hidden layer and the MACs per inference, measured on ``x``."""
    layers = weight_layers(model)
    macs_dense = {name: 0.0 for name in layers}
    macs_nonzero = {name: 0.0 for name in layers}
    zeros = {}
    counts = {}
    hooks = []

    def on_input(name):
        def hook(module: SparseWeights, args):
            inp = args[0]
            w = module.module.weight
            nonzero_w = (w != 0).float()
            if isinstance(module.module, nn.Linear):
                positions = 1
                per_sample = (inp != 0).float() @ nonzero_w.sum(dim=0)
                macs_nonzero[name] += float(per_sample.sum())
            else:
                out = module.module(inp[:1])
                positions = out.shape[2] * out.shape[3]
                density = float((inp != 0).float().mean())
                macs_nonzero[name] += float(nonzero_w.sum()) * positions * density * inp.shape[0]
            macs_dense[name] += float(w.numel()) * positions * inp.shape[0]
        return hook

    def on_output(name):
        def hook(module, args, out):
            zeros[name] = zeros.get(name, 0) + int((out == 0).sum())
            counts[name] = counts.get(name, 0) + out.numel()
        return hook

    for name, layer in layers.items():
        hooks.append(layer.register_forward_pre_hook(on_input(name)))
    for name, module in model.named_modules():
        if name.endswith(".act") and (is_kwinners(module) or isinstance(module, nn.ReLU)):
            hooks.append(module.register_forward_hook(on_output(name.removesuffix(".act"))))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = max(len(x), 1)
    act = {name: zeros[name] / counts[name] for name in zeros}
    dense_total = sum(macs_dense.values()) / n
    nonzero_total = sum(macs_nonzero.values()) / n
    units = sum(counts.values())
    return {
        "activation_sparsity": (sum(zeros.values()) / units) if units else 0.0,
        "activation_sparsity_per_layer": act,
        "macs_dense": dense_total,
        "macs_nonzero": nonzero_total,
        "mac_reduction": dense_total / nonzero_total if nonzero_total else float("inf"),
        "macs_per_layer": {name: {"dense": macs_dense[name] / n, "nonzero": macs_nonzero[name] / n} for name in layers},
    }
