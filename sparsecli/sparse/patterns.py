"""Sparsity patterns: how a layer's weights are grouped, and whether a layer obeys its pattern.

A layer's weight is seen as a matrix [output units, fan-in]. A conv's fan-in is ordered
(kernel row, kernel column, input channel), channels innermost as in an NHWC implicit
GEMM, so N:M groups run along the input channels, as sparse tensor cores expect.

- ``Block(rows, cols)``: whole rows x cols tiles are kept or dropped; 1x1 is unstructured.
- ``NM(n, m)``: at most n non-zeros in every m consecutive inputs of an output unit.

``model.layers.N.weights.structure`` names a pattern by its ``name`` (``unstructured``,
``16x1``, ``2:4``; ``of_structure``); ``structured_mask`` draws a static mask in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsecli.params import parse_structure


@dataclass(frozen=True)
class Block:
    rows: int = 1
    cols: int = 1

    @property
    def name(self) -> str:
        return "unstructured" if (self.rows, self.cols) == (1, 1) else f"{self.rows}x{self.cols}"

    def misfit(self, shape: tuple[int, int]) -> str | None:
        """Why this block cannot tile a [units, fan-in] matrix, or None."""
        units, fan_in = shape
        if units % self.rows or fan_in % self.cols:
            return f"does not tile its {units}x{fan_in} weight matrix (units x inputs)"
        return None


@dataclass(frozen=True)
class NM:
    n: int
    m: int

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    def misfit(self, shape: tuple[int, int]) -> str | None:
        if shape[1] % self.m:
            return f"does not divide its {shape[1]} inputs per unit"
        return None


Pattern = Block | NM


def of_structure(structure: str) -> Pattern:
    """The pattern a ``weights.structure`` string names (validated by params)."""
    kind, a, b = parse_structure(structure)
    return NM(a, b) if kind == "nm" else Block(a, b)


def kept_per_row(pattern: Pattern, sparsity: float, fan_in: int) -> int:
    """Groups a static mask keeps per unit row: inputs (unstructured), blocks per block row, or n per group.

    round((1 - sparsity) * fan_in / cols) whole blocks per block row, so every unit keeps exactly
    that many times cols inputs: density is the nearest multiple of cols / fan_in to 1 - sparsity.
    """
    if isinstance(pattern, NM):
        return pattern.n
    return round((1.0 - sparsity) * fan_in / pattern.cols)


def structured_mask(pattern: Pattern, shape: tuple[int, int], sparsity: float,
                    generator: torch.Generator) -> torch.Tensor:
    """A [units, fan-in] 0/1 mask in ``pattern``: random groups, the same count in every (block) row.

    Unstructured: round((1 - sparsity) * fan_in) inputs per unit. RxC blocks: ``kept_per_row``
    whole blocks in every block row. N:M: n random inputs in every group of m. The pattern
    must fit the shape (``misfit``) and keep at least one group (checked by the caller).
    """
    units, fan_in = shape
    if isinstance(pattern, NM):
        order = torch.rand(units, fan_in // pattern.m, pattern.m, generator=generator).argsort(dim=2)
        groups = torch.zeros(units, fan_in // pattern.m, pattern.m).scatter_(2, order[..., :pattern.n], 1.0)
        return groups.reshape(units, fan_in)
    rows, cols = pattern.rows, pattern.cols
    keep = kept_per_row(pattern, sparsity, fan_in)
    order = torch.rand(units // rows, fan_in // cols, generator=generator).argsort(dim=1)
    grid = torch.zeros(units // rows, fan_in // cols).scatter_(1, order[:, :keep], 1.0)
    if (rows, cols) == (1, 1):
        return grid
    return untile(grid.unsqueeze(2).expand(-1, -1, rows * cols), rows, cols)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """[units, fan-in] view of a Linear or Conv2d weight (or mask); conv channels innermost."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)
    return t.reshape(t.shape[0], -1)


def from_matrix(mat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of as_matrix, into the shape of ``like``."""
    if like.dim() == 4:
        out, channels, height, width = like.shape
        return mat.reshape(out, height, width, channels).permute(0, 3, 1, 2).contiguous()
    return mat.reshape(like.shape)


def matrix_shape(t: torch.Tensor) -> tuple[int, int]:
    return t.shape[0], t[0].numel()


def tiles(mat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[units, fan-in] -> [units/rows, fan-in/cols, rows*cols]: one entry per block."""
    units, fan_in = mat.shape
    return mat.reshape(units // rows, rows, fan_in // cols, cols).permute(0, 2, 1, 3).reshape(
        units // rows, fan_in // cols, rows * cols)


def untile(blocks: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of tiles."""
    block_rows, block_cols, _ = blocks.shape
    return blocks.reshape(block_rows, block_cols, rows, cols).permute(0, 2, 1, 3).reshape(
        block_rows * rows, block_cols * cols)


def nm_groups(mat: torch.Tensor, m: int) -> torch.Tensor:
    """[units, fan-in] -> [units, fan-in/m, m]."""
    return mat.reshape(mat.shape[0], -1, m)


def check(pattern: Pattern, weight: torch.Tensor, mask_before: torch.Tensor, mask_after: torch.Tensor) -> tuple[int, int]:
    """(groups, groups violating the pattern) of one layer.

    N:M: a group of m inputs violates it with more than n non-zero weights. Block: a block
    violates it unless it is all zero or kept whole, i.e. its mask is what it was before
    pruning (zeros that a training mask left inside a kept block stay zeros). Unstructured:
    no constraint beyond the mask: a weight non-zero outside the mask violates it.
    """
    if isinstance(pattern, NM):
        nonzeros = (nm_groups(as_matrix(weight), pattern.m) != 0).sum(dim=2)
        return nonzeros.numel(), int((nonzeros > pattern.n).sum())
    if (pattern.rows, pattern.cols) == (1, 1):
        return weight.numel(), int(((weight != 0) & (mask_after == 0)).sum())
    after = tiles(as_matrix(mask_after), pattern.rows, pattern.cols)
    before = tiles(as_matrix(mask_before), pattern.rows, pattern.cols)
    zero = after.sum(dim=2) == 0
    whole = (after == before).all(dim=2)
    return zero.numel(), int((~(zero | whole)).sum())
