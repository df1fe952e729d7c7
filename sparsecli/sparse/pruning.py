"""Pruning: choose which weights of ``SparseWeights`` layers stay, by magnitude, block norm or N:M.

Every method only clears mask entries (new mask = old mask AND keep), so a weight that a
training mask or an earlier pruning step removed never comes back, and a pruned model is
a checkpoint of the usual format: the masks are buffers in its state_dict.

Magnitude pruning ranks groups (single weights, or blocks by their L2 norm) and keeps
the largest until the kept non-zeros reach ``round((1 - sparsity) * weights)``. Ranking
the groups of one layer is layerwise pruning; ranking those of several layers together
is global pruning (one threshold across them).

A layer trained with a structure (``model.*.weights.structure``, kept on the layer as
``SparseWeights.pattern``) keeps it: ``layer_pattern`` prunes a blocks layer in whole blocks
of its own shape (or coarser aligned ones) and refuses patterns that would cut its blocks;
an N:M layer stays N:M under any method, since pruning only clears entries (at most n per group).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.params import PruneParams
from sparsecli.sparse.patterns import NM, Block, Pattern, as_matrix, from_matrix, matrix_shape, nm_groups, tiles, untile
from sparsecli.sparse.stats import weight_layers
from sparsecli.sparse.weights import SparseWeights


@torch.no_grad()
def apply_mask(layer: SparseWeights, keep: torch.Tensor) -> None:
    """AND ``keep`` into the layer's mask and zero the weights it drops."""
    layer.mask.mul_(keep.to(layer.mask.dtype))
    layer.rezero()
    layer.sparsity = 1.0 - float(layer.mask.mean())  # shown by repr


@torch.no_grad()
def magnitude_prune(layers: Sequence[SparseWeights], sparsity: float, block: Block = Block()) -> None:
    """Keep the largest groups of ``layers``, ranked together, so that a ``sparsity`` fraction is zero.

    Groups are blocks of ``block`` (1x1: single weights), scored by the L2 norm of their
    unmasked weights; the largest are kept while the non-zeros kept stay within budget.
    """
    scores, counts = [], []
    for layer in layers:
        mask = as_matrix(layer.mask)
        weight = as_matrix(layer.module.weight) * mask
        scores.append(tiles(weight, block.rows, block.cols).norm(dim=2).flatten())
        counts.append(tiles(mask, block.rows, block.cols).sum(dim=2).flatten())
    total = sum(layer.mask.numel() for layer in layers)
    kept = keep_largest(torch.cat(scores), torch.cat(counts), round((1.0 - sparsity) * total))
    for layer, part in zip(layers, kept.split([len(s) for s in scores])):
        units, fan_in = matrix_shape(layer.mask)
        grid = part.view(units // block.rows, fan_in // block.cols, 1).expand(-1, -1, block.rows * block.cols)
        apply_mask(layer, from_matrix(untile(grid.float(), block.rows, block.cols), layer.mask))


def keep_largest(scores: torch.Tensor, counts: torch.Tensor, budget: int) -> torch.Tensor:
    """Which groups to keep: the highest-scoring ones whose non-zeros add up to at most ``budget``."""
    order = torch.sort(scores, descending=True, stable=True).indices
    kept_sorted = counts[order].cumsum(0) <= budget
    kept = torch.zeros_like(kept_sorted)
    kept[order] = kept_sorted
    return kept


@torch.no_grad()
def nm_prune(layer: SparseWeights, n: int, m: int) -> None:
    """In every m consecutive inputs of each unit keep the n largest unmasked weights."""
    mask = as_matrix(layer.mask)
    score = torch.where(mask > 0, as_matrix(layer.module.weight).abs(), torch.full_like(mask, -1.0))
    winners = nm_groups(score, m).topk(n, dim=2).indices
    keep = torch.zeros_like(nm_groups(mask, m)).scatter_(2, winners, 1.0)
    apply_mask(layer, from_matrix(keep.reshape(mask.shape), layer.mask))


@dataclass
class PruningPlan:
    """Which layers a ``prune`` section touches, their targets, and how they are grouped.

    ``prune(sparsity_of)`` prunes each target through ``sparsity_of`` (identity for one-shot
    pruning, a schedule for GMP): layerwise each layer alone, global the layers without an
    override together against ``global_target``.
    """

    pattern: Pattern  # the method's (prune.json's "pattern")
    layers: dict[str, SparseWeights]
    targets: dict[str, float]  # final sparsity of each layer pruned alone
    joint: list[str] = field(default_factory=list)  # layers ranked together (global scope)
    global_target: float = 0.0
    patterns: dict[str, Pattern] = field(default_factory=dict)  # per layer: the method's, or its trained blocks

    def pattern_of_layer(self, name: str) -> Pattern:
        return self.patterns.get(name, self.pattern)

    def prune(self, sparsity_of: Callable[[float], float] = lambda s: s) -> None:
        if isinstance(self.pattern, NM):
            for layer in self.layers.values():
                nm_prune(layer, self.pattern.n, self.pattern.m)
            return
        for name, target in self.targets.items():
            magnitude_prune([self.layers[name]], sparsity_of(target), self.pattern_of_layer(name))
        if self.joint:
            magnitude_prune([self.layers[n] for n in self.joint], sparsity_of(self.global_target),
                            self.pattern_of_layer(self.joint[0]))

    def final_targets(self) -> dict[str, float]:
        """Each layer's requested sparsity (joint layers: the global target they share)."""
        return {name: self.targets.get(name, self.global_target) for name in self.layers}


def pattern_of(prune: PruneParams) -> Pattern:
    if prune.method == "nm":
        return NM(prune.n, prune.m)
    if prune.method == "block":
        return Block(*prune.block_shape)
    return Block()


def selected_layers(model: nn.Module, prune: PruneParams) -> dict[str, SparseWeights]:
    """The layers ``prune`` applies to (all but the excluded); unknown names are a ParamsError."""
    layers = weight_layers(model)
    known = ", ".join(layers)
    for i, name in enumerate(prune.exclude):
        if name not in layers:
            raise ParamsError(f"prune.exclude.{i} = {name!r}: no such layer; the model's layers are {known}")
    for i, override in enumerate(prune.overrides):
        if override.name not in layers:
            raise ParamsError(f"prune.overrides.{i}.name = {override.name!r}: no such layer; the model's layers are {known}")
    chosen = {name: layer for name, layer in layers.items() if name not in prune.exclude}
    if not chosen and prune.method != "none":
        raise ParamsError(f"prune.exclude: every layer is excluded ({known}); nothing to prune")
    return chosen


def make_plan(model: nn.Module, prune: PruneParams) -> PruningPlan:
    """The plan for ``prune`` on ``model``; a pattern that does not fit a layer is a ParamsError."""
    layers = selected_layers(model, prune)
    pattern = pattern_of(prune)
    key = {"nm": "prune.m", "block": "prune.block"}.get(prune.method)
    for name, layer in layers.items():
        problem = pattern.misfit(matrix_shape(layer.mask))
        if problem:
            value = prune.m if prune.method == "nm" else repr(prune.block)
            raise ParamsError(f"{key} = {value}: {pattern.name} {problem} in layer {name}; "
                              f"choose one that fits or add {name} to prune.exclude")
    patterns = {name: layer_pattern(pattern, layer.pattern, prune, name) for name, layer in layers.items()}
    overrides = {o.name: o.sparsity for o in prune.overrides}
    if prune.scope == "global":
        joint = [name for name in layers if name not in overrides]
        shapes = {patterns[name] for name in joint}
        if len(shapes) > 1:
            shown = ", ".join(f"{name} {patterns[name].name}" for name in joint)
            raise ParamsError(f"prune.scope = 'global': the layers keep different structures ({shown}), whose "
                              "groups cannot be ranked together; use prune.scope layerwise")
        return PruningPlan(pattern, layers, overrides, joint, prune.sparsity, patterns)
    targets = {name: overrides.get(name, prune.sparsity) for name in layers}
    return PruningPlan(pattern, layers, targets, patterns=patterns)


def layer_pattern(method: Pattern, trained: Pattern, prune: PruneParams, name: str) -> Pattern:
    """The pattern a layer is pruned in: the method's, unless that would break the layer's trained blocks.

    A blocks layer is pruned in its own blocks (magnitude, gmp) or in ``prune.block`` blocks
    that are unions of them (each side a multiple, aligned as tiles are); anything else is a
    ParamsError. Unstructured and N:M layers take the method's pattern (clearing entries
    keeps at most n per group).
    """
    if not isinstance(trained, Block) or trained == Block():
        return method
    fix = (f"use prune.method magnitude or gmp (they keep {trained.name} blocks), prune.block {trained.name} "
           f"or a multiple of it, or add {name} to prune.exclude")
    if isinstance(method, NM):
        raise ParamsError(f"prune.method = 'nm': layer {name} was trained in {trained.name} blocks "
                          f"(weights.structure), which {method.name} pruning would cut; {fix}")
    if method == Block():
        return trained
    if method.rows % trained.rows or method.cols % trained.cols:
        raise ParamsError(f"prune.block = {prune.block!r}: layer {name} was trained in {trained.name} blocks "
                          f"(weights.structure), which {method.name} blocks would cut; {fix}")
    return method
