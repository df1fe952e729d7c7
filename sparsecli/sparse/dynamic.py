"""Dynamic sparse training: masks that move during ``train`` (SET, RigL), and ERK initial masks.

Every ``update_interval`` optimizer steps, until ``end_fraction`` of training, each sparse
layer drops the ``f * non-zeros`` unmasked weights of smallest magnitude and regrows as
many: at random (SET, Mocanu et al. 2018) or where the dense gradient is largest (RigL,
Evci et al. 2020). ``f`` decays from ``drop_fraction`` along a cosine. A regrown weight
starts at zero; a dropped one is zeroed. The non-zero count of each mask never changes.

RigL needs the gradient of the *masked* weights too. ``fit`` masks by zeroing weights
after each optimizer step, so backward yields the full dense gradient; a tensor hook keeps
a copy of it as backward computes it, before the optimizer step can touch ``.grad``.

A layer is sparse if its mask has a zero; dense layers (the head, by default) stay dense.

Structured masks keep their structure: a layer of RxC blocks (``weights.structure``) drops
and regrows whole blocks (ranked by their L2 norm; regrown where the summed grow score is
largest), and ERK draws whole blocks. N:M fixes each group's count, so it is refused here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.params import DynamicParams, Params
from sparsecli.sparse.patterns import NM, Block, as_matrix, from_matrix, tiles, untile
from sparsecli.sparse.schedules import cosine_decay
from sparsecli.sparse.stats import weight_layers
from sparsecli.sparse.weights import SparseWeights, init_weights


def sparse_layers(model: nn.Module) -> dict[str, SparseWeights]:
    return {name: layer for name, layer in weight_layers(model).items() if bool((layer.mask == 0).any())}


class DynamicSparsity:
    """An ``after_step`` hook for ``fit`` that moves the masks of ``layers`` (call ``close()`` after)."""

    def __init__(self, layers: dict[str, SparseWeights], params: DynamicParams, total_steps: int, seed: int):
        self.layers = layers
        self.method = params.method
        self.interval = params.update_interval
        self.drop_fraction = params.drop_fraction
        self.end = max(1, math.floor(params.end_fraction * total_steps))
        self.seed = seed
        self.updates = 0
        self.grads: dict[str, torch.Tensor] = {}
        self._hooks = []
        if self.method == "rigl":
            for name, layer in layers.items():
                self._hooks.append(layer.module.weight.register_hook(self._keeper(name)))

    def _keeper(self, name: str):
        def keep(grad: torch.Tensor) -> None:
            self.grads[name] = grad.detach().clone()
        return keep

    def is_update(self, step: int) -> bool:
        return step % self.interval == 0 and step < self.end

    def fraction(self, step: int) -> float:
        return cosine_decay(step, self.drop_fraction, self.end)

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int) -> None:
        if not self.is_update(step):
            return
        fraction = self.fraction(step)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        for name, layer in self.layers.items():
            if self.method == "rigl":
                grow_score = self.grads[name].abs()
            else:
                grow_score = torch.rand(layer.mask.shape, generator=generator)
            drop_and_grow(layer, fraction, grow_score)
        self.updates += 1

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


@torch.no_grad()
def drop_and_grow(layer: SparseWeights, fraction: float, grow_score: torch.Tensor) -> int:
    """Drop ``round(fraction * non-zero groups)`` smallest kept groups, regrow as many with the highest score.

    A group is one weight, or one whole block of a blocks-structured layer (magnitude: its
    L2 norm; grow score: the sum over it). Candidates for regrowth are all groups not kept,
    the just-dropped included (as in RigL). Returns how many groups moved.
    """
    block = layer.pattern if layer.pattern != Block() else None
    mask, weight, score = layer.mask, layer.module.weight, grow_score
    if block is not None:
        mask, weight, score = (tiles(as_matrix(t), block.rows, block.cols) for t in (mask, weight, grow_score))
        grid = mask.shape[:2]
        mask, weight, score = mask.amax(dim=2), weight.norm(dim=2), score.sum(dim=2)
    active = mask.flatten() > 0
    n_drop = round(fraction * int(active.sum()))
    if n_drop == 0:
        return 0
    magnitude = weight.flatten().abs()
    dropped = torch.where(active, magnitude, torch.full_like(magnitude, math.inf)).topk(n_drop, largest=False).indices
    kept = active.clone()
    kept[dropped] = False
    grown = torch.where(kept, torch.full_like(magnitude, -math.inf), score.flatten()).topk(n_drop).indices
    kept[grown] = True
    layer.mask.copy_(_expanded(kept, block, grid, layer.mask) if block is not None
                     else kept.view_as(layer.mask).to(layer.mask.dtype))
    layer.rezero()
    return n_drop


def _expanded(kept_blocks: torch.Tensor, block: Block, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """A per-block 0/1 choice (flat, over a grid of blocks) as a mask of the layer's shape."""
    per_block = kept_blocks.view(*grid, 1).expand(-1, -1, block.rows * block.cols).to(like.dtype)
    return from_matrix(untile(per_block, block.rows, block.cols), like)


def erk_densities(shapes: dict[str, tuple[int, ...]], budget: int) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities: proportional to sum(shape) / prod(shape), ``budget`` non-zeros in all.

    A layer whose density would exceed 1 is made dense and the rest share what is left.
    """
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            break
        eps = (budget - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in sparse)
        over = [n for n in sparse if eps * raw[n] > 1]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


@torch.no_grad()
def init_erk(layers: dict[str, SparseWeights], generator: torch.Generator) -> None:
    """Redistribute the layers' non-zeros by ERK: new random masks, weights re-initialised for the new fan-in.

    A blocks-structured layer draws whole blocks: round(density * blocks), at least one.
    """
    budget = int(sum(int(layer.mask.sum()) for layer in layers.values()))
    densities = erk_densities({name: tuple(layer.mask.shape) for name, layer in layers.items()}, budget)
    for name, layer in layers.items():
        numel = layer.mask.numel()
        if layer.pattern == Block():
            keep = min(numel, max(1, round(densities[name] * numel)))
            order = torch.rand(numel, generator=generator).argsort()
            mask = torch.zeros(numel)
            mask[order[:keep]] = 1.0
            layer.mask.copy_(mask.view_as(layer.mask))
        else:
            block = layer.pattern
            grid = tiles(as_matrix(layer.mask), block.rows, block.cols).shape[:2]
            blocks = grid[0] * grid[1]
            kept = torch.zeros(blocks, dtype=torch.bool)
            kept[torch.rand(blocks, generator=generator).argsort()[:min(blocks, max(1, round(densities[name] * blocks)))]] = True
            layer.mask.copy_(_expanded(kept, block, grid, layer.mask))
            keep = int(layer.mask.sum())
        fan_in = layer.mask[0].numel()
        init_weights(layer.module, max(1, round(keep / numel * fan_in)), generator)
        layer.rezero()
        layer.sparsity = 1.0 - keep / numel


def dynamic_sparsity(model: nn.Module, params: Params, train_samples: int) -> DynamicSparsity | None:
    """Set up ``params.sparsity.dynamic`` on a freshly built model: ERK masks if asked, and the
    mask-update hook for ``fit`` (None for method none)."""
    dynamic = params.sparsity.dynamic
    layers = sparse_layers(model)
    if not layers and (dynamic.method != "none" or dynamic.init == "erk"):
        key, value = ("method", dynamic.method) if dynamic.method != "none" else ("init", dynamic.init)
        raise ParamsError(f"sparsity.dynamic.{key} = {value!r}: the model has no sparse layer; "
                          "give a layer model.*.weights.sparsity > 0")
    if dynamic.method != "none" or dynamic.init == "erk":
        for name, layer in layers.items():
            if isinstance(layer.pattern, NM):
                key, value = ("method", dynamic.method) if dynamic.method != "none" else ("init", dynamic.init)
                raise ParamsError(f"sparsity.dynamic.{key} = {value!r}: model.{name}.weights.structure is "
                                  f"{layer.pattern.name}, whose fixed count per group cannot move; use "
                                  "unstructured or blocks (they move whole), or sparsity.dynamic.method none")
    if dynamic.init == "erk":
        init_erk(layers, torch.Generator().manual_seed(params.seed + 1_000_003))
    if dynamic.method == "none":
        return None
    first = params.train.first_epoch_batch_size or params.train.batch_size  # the first epoch may use smaller batches
    steps = math.ceil(train_samples / first) + (params.train.epochs - 1) * math.ceil(train_samples / params.train.batch_size)
    return DynamicSparsity(layers, dynamic, steps, params.seed)
