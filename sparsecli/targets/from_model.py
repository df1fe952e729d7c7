"""Describe a trained sparsecli model as the cost models see it: a list of `LayerShape`s.

Each weight layer (a `SparseWeights` module, named as its params key: `conv.0`,
`layers.1`, `head`) becomes one LayerShape, in execution order:

    weight_density  = non-zero weights / weights, counted on the weights themselves,
                      so masks and any later pruning are both included
    structure       = the layer's model.*.weights.structure (unstructured, 16x1, 2:4, ...)
    input_density_sized, stall_rate = per-sample share of non-zero inputs at `quantile` of the
                      samples (default p99), and the share of samples above it
    input_density   = non-zero input values / input values, over every sample of `x`
                      (the test split): the share of active inputs the sparse-sparse
                      kernels can skip from; a dense data input is below 1 only where
                      features are exactly zero
    linear          in_features, out_features of the weight
    conv            in_features = C_in * kh * kw (fan-in of one output),
                    out_features = C_out, output_positions = H_out * W_out,
                    input_size = C_in * H_in * W_in

Batch norm, pooling and the activations are not costed (their work is linear in the
layer's outputs, small next to the multiply-adds). Torch is imported only when a
model is converted, so `sparsecli.targets` stays importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparsecli.targets.network import LayerShape

if TYPE_CHECKING:
    import torch
    from torch import nn


def network_from_model(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                       quantile: float = 0.99) -> list[LayerShape]:
    """The model's weight layers as LayerShapes, input densities measured on `x` in eval mode.

    Besides the mean input density, each layer gets the per-sample density at `quantile`
    of the samples (`input_density_sized`) and the share of samples above it (`stall_rate`).
    """
    import torch
    from torch import nn

    from sparsecli.sparse.stats import weight_layers

    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no sparse weight layers to describe")
    nonzero = {name: 0 for name in layers}
    total = {name: 0 for name in layers}
    per_sample: dict[str, list] = {name: [] for name in layers}
    geometry: dict[str, tuple[int, int]] = {}  # conv: (output positions, input size)

    def hook(name):
        def record(module, args, out):
            inp = args[0]
            nonzero[name] += int((inp != 0).sum())
            total[name] += inp.numel()
            per_sample[name].append((inp != 0).reshape(inp.shape[0], -1).sum(dim=1))
            if isinstance(module.module, nn.Conv2d):
                geometry[name] = (out.shape[2] * out.shape[3], inp[0].numel())

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    shapes = []
    for name, layer in layers.items():
        shape = _shape(name, layer, nonzero[name], total[name], geometry.get(name))
        counts = torch.cat(per_sample[name]).double()
        per_input = total[name] / max(1, len(counts))
        sized = float(torch.quantile(counts, quantile)) if len(counts) else 0.0
        stall = float((counts > sized).double().mean()) if len(counts) else 0.0
        shapes.append(LayerShape(**{**shape.__dict__, "input_density_sized": min(1.0, max(sized, 1.0) / per_input),
                                    "stall_rate": stall}))
    return shapes


def _shape(name: str, layer, nonzero_inputs: int, inputs: int, geometry: tuple[int, int] | None) -> LayerShape:
    weight = layer.module.weight
    if inputs == 0:
        raise ValueError(f"layer {name!r} saw no input; pass at least one sample")
    # a fraction of non-zeros must stay > 0: at least one weight / one input value
    weight_density = max(int((weight != 0).sum()), 1) / weight.numel()
    input_density = max(nonzero_inputs, 1) / inputs
    common = dict(
        name=name,
        in_features=weight[0].numel(),
        out_features=weight.shape[0],
        weight_density=weight_density,
        input_density=input_density,
        structure=layer.pattern.name,  # the trained weights.structure (pruning keeps it)
    )
    if geometry is None:
        return LayerShape(kind="linear", **common)
    positions, input_size = geometry
    return LayerShape(kind="conv", output_positions=positions, input_size=input_size, **common)
