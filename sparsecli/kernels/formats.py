"""Packing a layer's weight once into the layouts the kernels read.

A weight is float32 ``[out, in]`` with zeros where masked. Two families:

* column layouts (``ColumnBlocks``, ``ColumnCSC``, ``DenseColumns``) group the
  non-zeros by input column, so a kernel touches only the columns of *active*
  inputs: the sparse-sparse kernels use them;
* row layouts (``RowBlocks``, ``RowCSR``, ``DenseRows``) group them by output
  row, so a kernel accumulates each output in registers over a dense input:
  the sparse-dense kernels use them.

Blocks are 16x1: 16 consecutive output rows of one input column, kept or dropped
together, aligned at multiples of 16 (the last block may be partly padding).
16 float32 fill two AVX2 registers, which is what makes them fast.
Indices use the smallest unsigned type that holds them (uint16 below 65536):
less memory traffic per non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsecli.kernels.precision import channel_scale, check_precision, int8_levels, quantize

BLOCK = 16
"""Output rows per block."""

STRUCTURES = ("auto", "blocks16", "unstructured", "dense")

# A weight whose kept 16x1 blocks are at least this full is called block-structured;
# below it the padding zeros cost more than the SIMD gains.
BLOCK_FILL_THRESHOLD = 0.5
# At or above this density the index bookkeeping costs more than skipping zeros saves.
DENSE_THRESHOLD = 0.5
# For a sparse input (column layouts), an unstructured weight at least this dense runs faster as
# dense columns: one 16-lane update per 16 outputs beats one scalar scatter-add per non-zero
# (measured, 1600 -> 1000 with 200 active inputs: equal at 10% density, 1.3x at 20%, 2.3x at 40%).
COLUMN_DENSE_THRESHOLD = 0.2


def index_dtype(n: int) -> np.dtype:
    """Smallest unsigned index type for indices in ``[0, n)``."""
    return np.dtype(np.uint16) if n <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


@dataclass(frozen=True, eq=False)
class ColumnBlocks:
    """16x1 blocks grouped by input column: column ``j`` owns blocks ``col_ptr[j]:col_ptr[j+1]``."""

    n_out: int
    n_in: int
    col_ptr: np.ndarray  # uint32 [n_in + 1]
    block_row: np.ndarray  # uint16/uint32 [n_blocks], output row of the block = block_row * 16
    values: np.ndarray  # float32 [n_blocks, 16] (uint16 bf16 bits for bf16, int8 levels for int8)
    scale: np.ndarray | None = None  # float32 [n_out] per-channel scale of int8 values; None otherwise

    @property
    def n_out_padded(self) -> int:
        return -(-self.n_out // BLOCK) * BLOCK

    @property
    def nnz_stored(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True, eq=False)
class ColumnCSC:
    """Unstructured non-zeros grouped by input column (compressed sparse column)."""

    n_out: int
    n_in: int
    col_ptr: np.ndarray  # uint32 [n_in + 1]
    row: np.ndarray  # uint16/uint32 [nnz]
    values: np.ndarray  # float32 [nnz]
    scale: np.ndarray | None = None  # float32 [n_out] per-channel scale of int8 values; None otherwise

    @property
    def n_out_padded(self) -> int:
        return self.n_out

    @property
    def nnz_stored(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True, eq=False)
class DenseColumns:
    """A dense weight stored transposed, ``[in, out]``: one contiguous row per input,
    zero-padded to whole blocks of 16 so the row update is whole vectors."""

    n_out: int
    n_in: int
    weight_t: np.ndarray  # float32 [n_in, n_out_padded], C-contiguous

    @property
    def n_out_padded(self) -> int:
        return -(-self.n_out // BLOCK) * BLOCK

    @property
    def nnz_stored(self) -> int:
        return self.n_in * self.n_out

    def as_blocks(self) -> ColumnBlocks:
        """The same weight as 16x1 blocks, every block kept (a view of ``weight_t``, no copy):
        what the sparse-sparse kernels run it as (whole 16-lane vectors)."""
        nb = self.n_out_padded // BLOCK
        col_ptr = np.arange(self.n_in + 1, dtype=np.uint32) * np.uint32(nb)
        block_row = np.tile(np.arange(nb, dtype=index_dtype(nb)), self.n_in)
        return ColumnBlocks(self.n_out, self.n_in, col_ptr, block_row, self.weight_t.reshape(self.n_in * nb, BLOCK))


@dataclass(frozen=True, eq=False)
class RowBlocks:
    """16x1 blocks grouped by block row: block row ``r`` owns blocks ``row_ptr[r]:row_ptr[r+1]``."""

    n_out: int
    n_in: int
    row_ptr: np.ndarray  # uint32 [n_block_rows + 1]
    col: np.ndarray  # uint16/uint32 [n_blocks]
    values: np.ndarray  # float32 [n_blocks, 16]
    scale: np.ndarray | None = None  # float32 [n_out] per-channel scale of int8 values; None otherwise

    @property
    def n_out_padded(self) -> int:
        return -(-self.n_out // BLOCK) * BLOCK

    @property
    def nnz_stored(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True, eq=False)
class RowCSR:
    """Unstructured non-zeros grouped by output row (compressed sparse row)."""

    n_out: int
    n_in: int
    row_ptr: np.ndarray  # uint32 [n_out + 1]
    col: np.ndarray  # uint16/uint32 [nnz]
    values: np.ndarray  # float32 [nnz]
    scale: np.ndarray | None = None  # float32 [n_out] per-channel scale of int8 values; None otherwise

    @property
    def n_out_padded(self) -> int:
        return self.n_out

    @property
    def nnz_stored(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True, eq=False)
class DenseRows:
    """A dense weight as is, ``[out, in]``; computed with torch's GEMM."""

    n_out: int
    n_in: int
    weight: np.ndarray  # float32 [n_out, n_in], C-contiguous

    @property
    def n_out_padded(self) -> int:
        return self.n_out

    @property
    def nnz_stored(self) -> int:
        return int(self.weight.size)


ColumnFormat = ColumnBlocks | ColumnCSC | DenseColumns
RowFormat = RowBlocks | RowCSR | DenseRows


def aligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` starting at a 64-byte boundary: a 16-lane vector load or store that
    straddles two cache lines costs about twice one that does not (measured: 1.3-1.5x on the
    sparse-input conv), and numpy and numba allocate at 16 or 32 bytes."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised array starting at a 64-byte boundary (see ``aligned``)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + n].view(dtype).reshape(shape)


def unpadded(out: np.ndarray, batch: int, n_out: int) -> np.ndarray:
    """A kernel's output rows without the layout's padding (rows past ``batch``, columns past ``n_out``)."""
    if out.shape == (batch, n_out):
        return out
    return np.ascontiguousarray(out[:batch, :n_out])


def as_weight(weight) -> np.ndarray:
    """Validate a weight and return it as C-contiguous float32 ``[out, in]``."""
    w = np.ascontiguousarray(np.asarray(weight, dtype=np.float32))
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {w.shape}")
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"weight must have at least one row and one column, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight contains NaN or infinite values")
    return w


def _blocks_view(w: np.ndarray) -> np.ndarray:
    """The weight padded to whole blocks, as ``[block_rows, 16, in]``."""
    n_out, n_in = w.shape
    n_br = -(-n_out // BLOCK)
    if n_br * BLOCK != n_out:
        w = np.concatenate([w, np.zeros((n_br * BLOCK - n_out, n_in), np.float32)])
    return w.reshape(n_br, BLOCK, n_in)


def block_fill(weight) -> float:
    """Fraction of the real (non-padding) entries of the kept 16x1 blocks that are non-zero.

    1.0 for a weight pruned in whole 16x1 blocks; about ``density / (1 - sparsity**16)``
    for an unstructured one. 0.0 for an all-zero weight.
    """
    w = as_weight(weight)
    kept = (_blocks_view(w) != 0).any(axis=1)  # [block_rows, in]
    rows_in_block = np.minimum(BLOCK, w.shape[0] - BLOCK * np.arange(kept.shape[0]))
    capacity = int((kept * rows_in_block[:, None]).sum())
    return 0.0 if capacity == 0 else float(np.count_nonzero(w)) / capacity


def detect_structure(weight) -> str:
    """Pick the layout family for a weight: ``dense``, ``blocks16`` or ``unstructured``."""
    w = as_weight(weight)
    density = np.count_nonzero(w) / w.size
    if density >= DENSE_THRESHOLD:
        return "dense"
    if density > 0 and block_fill(w) >= BLOCK_FILL_THRESHOLD:
        return "blocks16"
    return "unstructured"


def _resolve(weight, structure: str) -> tuple[np.ndarray, str]:
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    w = as_weight(weight)
    return w, detect_structure(w) if structure == "auto" else structure


def _stored(w: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """What the values are taken from (``w``, or its int8 levels) and the int8 channel scale."""
    if check_precision(precision) != "int8":
        return w, None
    scale = channel_scale(w)
    return int8_levels(w, scale), scale


def _ptr(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Group offsets as uint32: unsigned, so the kernels' loops need no negative-index checks."""
    ptr = np.zeros(n_groups + 1, np.int64)
    np.cumsum(np.bincount(group, minlength=n_groups), out=ptr[1:])
    if ptr[-1] > np.iinfo(np.uint32).max:
        raise ValueError("too many non-zeros for uint32 offsets")
    return ptr.astype(np.uint32)


def pack_columns(weight, structure: str = "auto", precision: str = "fp32") -> ColumnFormat:
    """Pack a weight for the sparse-sparse kernels (input-column major); ``auto`` takes dense
    columns for an unstructured float32 weight of density ``COLUMN_DENSE_THRESHOLD`` or more.

    ``precision="bf16"`` stores the non-zeros of blocks16/unstructured layouts as bf16 bits,
    ``"int8"`` as int8 levels with a per-output-channel ``scale`` (``precision.py``); a dense
    layout stays float32. Which entries are kept is decided on the float32 weight.
    """
    auto = structure == "auto"
    w, structure = _resolve(weight, structure)
    if auto and precision == "fp32" and structure == "unstructured" \
            and np.count_nonzero(w) >= COLUMN_DENSE_THRESHOLD * w.size:
        structure = "dense"
    src, scale = _stored(w, precision) if structure != "dense" else (w, None)
    n_out, n_in = w.shape
    if structure == "dense":
        weight_t = aligned_empty((n_in, -(-n_out // BLOCK) * BLOCK))
        weight_t[:, n_out:] = 0.0
        weight_t[:, :n_out] = w.T
        return DenseColumns(n_out, n_in, weight_t)
    if structure == "blocks16":
        blocks = _blocks_view(w)
        j, r = np.nonzero((blocks != 0).any(axis=1).T)  # sorted by column, then block row
        return ColumnBlocks(
            n_out,
            n_in,
            _ptr(j, n_in),
            r.astype(index_dtype(blocks.shape[0])),
            aligned(quantize(_blocks_view(src)[r, :, j], precision)),
            scale,
        )
    j, i = np.nonzero(w.T)  # sorted by column, then row
    return ColumnCSC(n_out, n_in, _ptr(j, n_in), i.astype(index_dtype(n_out)), quantize(src[i, j], precision), scale)


def pack_rows(weight, structure: str = "auto", precision: str = "fp32") -> RowFormat:
    """Pack a weight for the sparse-dense kernels (output-row major); ``precision`` as for
    ``pack_columns`` (a dense layout stays float32: torch's GEMM computes it)."""
    w, structure = _resolve(weight, structure)
    src, scale = _stored(w, precision) if structure != "dense" else (w, None)
    n_out, n_in = w.shape
    if structure == "dense":
        return DenseRows(n_out, n_in, w)
    if structure == "blocks16":
        blocks = _blocks_view(w)
        r, j = np.nonzero((blocks != 0).any(axis=1))  # sorted by block row, then column
        return RowBlocks(
            n_out,
            n_in,
            _ptr(r, blocks.shape[0]),
            j.astype(index_dtype(n_in)),
            aligned(quantize(_blocks_view(src)[r, :, j], precision)),
            scale,
        )
    i, j = np.nonzero(w)  # sorted by row, then column
    return RowCSR(n_out, n_in, _ptr(i, n_out), j.astype(index_dtype(n_in)), quantize(src[i, j], precision), scale)
