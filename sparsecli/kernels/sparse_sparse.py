"""Sparse-sparse kernels: sparse weights times sparse activations.

Each input row arrives as its active units only, ``(indices, values)`` of fixed
width ``[batch, k]`` (what ``k_winners`` emits; pad with value 0 for rows with
fewer). The weight is packed by input column (``pack_columns``), so the work is
"for each active input, add its column's non-zeros into the output": it scales
with weight density x activation density, not with the layer size.

Batch rows are independent; with ``parallel`` they are split over numba's
threads, each row through the same per-row helper. The fused ``..._kwta``
variant selects the k winners of each output row right after computing it, so
the next layer gets indices and values without a dense round trip. From
``COLUMNS_MIN_BATCH`` rows on, blocks and dense layouts run column-batched instead:
the batch's active units are regrouped by input column (``invert_active``) and each
column's blocks are loaded once and added into every row that uses them.

The 16-wide block update is written out as 16 scalar lines on purpose: numba
has no vector types, and LLVM's SLP vectorizer (``NUMBA_SLP_VECTORIZE=1``, set
by this package) turns them into two AVX2 FMAs.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload

from sparsecli.kernels._unrolled import columns_blocks
from sparsecli.kernels.formats import (ColumnBlocks, ColumnCSC, DenseColumns, aligned_empty, index_dtype, pack_columns,
                                       unpadded)
from sparsecli.kernels.precision import as_f32, finish_row, start_row
from sparsecli.kernels.kwinners import _scratch_nb, check_k, row_chunks, select_row

_FASTMATH = {"contract"}  # allow FMA; sums keep their order

# Below this much work per call (in multiply-adds), waking threads costs more than it
# saves: numba's workqueue layer takes ~25 us to start a parallel region on this class
# of machine, about the time of 10^6 multiply-adds in these kernels.
PARALLEL_MIN_MACS = 1_000_000
# From this batch size on, blocks and dense layouts run column-batched (``columns_blocks``);
# below it, the per-row kernels measured faster (batch 8: 10-20% on the reference MLP).
COLUMNS_MIN_BATCH = 16


@njit(cache=True, fastmath=_FASTMATH)
def accumulate_blocks(out, idx, val, col_ptr, block_row, values):
    """``out += W[:, idx] @ val`` for 16x1 blocks; one 16-wide update per kept block.

    The block's 16 sums go through locals before the stores: without that, LLVM
    cannot rule out that ``out`` aliases ``values`` and will not vectorize.
    """
    for a in range(idx.shape[0]):
        xv = val[a]
        if xv == 0.0:
            continue
        j = idx[a]
        for p in range(col_ptr[j], col_ptr[j + 1]):
            o = np.intp(block_row[p]) * 16
            w = values[p]
            y0 = out[o + 0] + as_f32(w[0]) * xv
            y1 = out[o + 1] + as_f32(w[1]) * xv
            y2 = out[o + 2] + as_f32(w[2]) * xv
            y3 = out[o + 3] + as_f32(w[3]) * xv
            y4 = out[o + 4] + as_f32(w[4]) * xv
            y5 = out[o + 5] + as_f32(w[5]) * xv
            y6 = out[o + 6] + as_f32(w[6]) * xv
            y7 = out[o + 7] + as_f32(w[7]) * xv
            y8 = out[o + 8] + as_f32(w[8]) * xv
            y9 = out[o + 9] + as_f32(w[9]) * xv
            y10 = out[o + 10] + as_f32(w[10]) * xv
            y11 = out[o + 11] + as_f32(w[11]) * xv
            y12 = out[o + 12] + as_f32(w[12]) * xv
            y13 = out[o + 13] + as_f32(w[13]) * xv
            y14 = out[o + 14] + as_f32(w[14]) * xv
            y15 = out[o + 15] + as_f32(w[15]) * xv
            out[o + 0] = y0
            out[o + 1] = y1
            out[o + 2] = y2
            out[o + 3] = y3
            out[o + 4] = y4
            out[o + 5] = y5
            out[o + 6] = y6
            out[o + 7] = y7
            out[o + 8] = y8
            out[o + 9] = y9
            out[o + 10] = y10
            out[o + 11] = y11
            out[o + 12] = y12
            out[o + 13] = y13
            out[o + 14] = y14
            out[o + 15] = y15


@njit(cache=True, fastmath=_FASTMATH)
def accumulate_csc(out, idx, val, col_ptr, row, values):
    """``out += W[:, idx] @ val`` for unstructured non-zeros (one scatter-add each)."""
    for a in range(idx.shape[0]):
        xv = val[a]
        if xv == 0.0:
            continue
        j = idx[a]
        for p in range(col_ptr[j], col_ptr[j + 1]):
            out[row[p]] += as_f32(values[p]) * xv


def accumulate(out, idx, val, a, b, c):
    """Dispatch on the packed format (blocks: 2-D values; CSC: 1-D; a dense layer comes as
    blocks, ``DenseColumns.as_blocks``)."""
    if c.ndim == 2:
        accumulate_blocks(out, idx, val, a, b, c)
    else:
        accumulate_csc(out, idx, val, a, b, c)


@overload(accumulate)
def _accumulate_overload(out, idx, val, a, b, c):
    if c.ndim == 2:
        return lambda out, idx, val, a, b, c: accumulate_blocks(out, idx, val, a, b, c)
    return lambda out, idx, val, a, b, c: accumulate_csc(out, idx, val, a, b, c)


@njit(cache=True)
def invert_active(idx, val, ptr, ent_row, ent_val):
    """Regroup a batch's active units by input column: column ``j``'s entries are
    ``ptr[j]:ptr[j+1]`` of ``ent_row`` (the batch row) and ``ent_val``; zero values dropped.

    A counting sort, rows ascending within a column: O(batch x k + n_in).
    """
    ptr[:] = 0
    for r in range(idx.shape[0]):
        for a in range(idx.shape[1]):
            if val[r, a] != 0.0:
                ptr[np.intp(idx[r, a]) + 1] += 1
    for j in range(1, ptr.shape[0]):
        ptr[j] += ptr[j - 1]
    for r in range(idx.shape[0]):
        for a in range(idx.shape[1]):
            v = val[r, a]
            if v != 0.0:
                j = np.intp(idx[r, a])
                t = ptr[j]
                ent_row[t] = r
                ent_val[t] = v
                ptr[j] = t + 1
    for j in range(ptr.shape[0] - 1, 0, -1):  # ptr[j] now holds column j's end: shift back
        ptr[j] = ptr[j - 1]
    ptr[0] = 0


@njit(cache=True)
def _linear_serial(idx, val, a, b, c, bias, scale, out):
    for r in range(out.shape[0]):
        start_row(out[r], bias, scale)
        accumulate(out[r], idx[r], val[r], a, b, c)
        finish_row(out[r], bias, scale)


@njit(cache=True, parallel=True)
def _linear_parallel(idx, val, a, b, c, bias, scale, out):
    for r in prange(out.shape[0]):
        start_row(out[r], bias, scale)
        accumulate(out[r], idx[r], val[r], a, b, c)
        finish_row(out[r], bias, scale)


@njit(cache=True)
def _linear_kwta_serial(idx, val, a, b, c, bias, scale, width, n, k, idx_out, val_out):
    row = np.empty(width, np.float32)
    keys, cand, ckeys, hist = _scratch_nb(n)
    for r in range(idx.shape[0]):
        start_row(row, bias, scale)
        accumulate(row, idx[r], val[r], a, b, c)
        finish_row(row, bias, scale)
        select_row(row, n, k, idx_out[r], val_out[r], keys, cand, ckeys, hist)


@njit(cache=True, parallel=True)
def _linear_kwta_parallel(idx, val, a, b, c, bias, scale, width, n, k, idx_out, val_out, n_chunks):
    size = (idx.shape[0] + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        row = np.empty(width, np.float32)
        keys, cand, ckeys, hist = _scratch_nb(n)
        for r in range(ch * size, min(idx.shape[0], (ch + 1) * size)):
            start_row(row, bias, scale)
            accumulate(row, idx[r], val[r], a, b, c)
            finish_row(row, bias, scale)
            select_row(row, n, k, idx_out[r], val_out[r], keys, cand, ckeys, hist)


@njit(cache=True)
def _columns_rows(idx, val, a, b, c, bias, scale, out, ptr, ent_row, ent_val):
    """Rows ``out[:]`` (C-contiguous ``[rows, width]``) of ``idx``/``val`` by the column-batched kernels."""
    for r in range(out.shape[0]):
        start_row(out[r], bias, scale)
    invert_active(idx, val, ptr, ent_row, ent_val)
    columns_blocks(out.reshape(-1), out.shape[1], ptr, ent_row, ent_val, a, b, c)
    for r in range(out.shape[0]):
        finish_row(out[r], bias, scale)


@njit(cache=True)
def _columns_serial(idx, val, a, b, c, bias, scale, out, ptr, ent_row, ent_val, n, k, idx_out, val_out):
    """Column-batched linear map of the whole batch, then kWTA per row if ``k > 0``."""
    _columns_rows(idx, val, a, b, c, bias, scale, out, ptr, ent_row, ent_val)
    if k > 0:
        keys, cand, ckeys, hist = _scratch_nb(n)
        for r in range(out.shape[0]):
            select_row(out[r], n, k, idx_out[r], val_out[r], keys, cand, ckeys, hist)


@njit(cache=True, parallel=True)
def _columns_parallel(idx, val, a, b, c, bias, scale, out, n_in, n, k, idx_out, val_out, n_chunks):
    """``_columns_serial`` on contiguous chunks of rows, one per thread, each with its own scratch."""
    size = (idx.shape[0] + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        r0 = ch * size
        r1 = min(idx.shape[0], r0 + size)
        if r0 >= r1:
            continue
        ptr = np.empty(n_in + 1, np.uint32)
        ent_row = np.empty((r1 - r0) * idx.shape[1], np.uint32)
        ent_val = np.empty((r1 - r0) * idx.shape[1], np.float32)
        _columns_serial(idx[r0:r1], val[r0:r1], a, b, c, bias, scale, out[r0:r1], ptr, ent_row, ent_val, n, k,
                        idx_out[r0:r1], val_out[r0:r1])


_NO_SCALE = np.empty(0, np.float32)


def format_arrays(packed):
    """The three arrays a packed column format hands to the kernels."""
    if isinstance(packed, ColumnBlocks):
        return packed.col_ptr, packed.block_row, packed.values
    if isinstance(packed, ColumnCSC):
        return packed.col_ptr, packed.row, packed.values
    if isinstance(packed, DenseColumns):  # every block kept: the blocks kernels, whole vectors
        return format_arrays(packed.as_blocks())
    raise ValueError(f"expected a column format from pack_columns, got {type(packed).__name__}")


def check_bias(bias, n_out):
    """Validate a bias and return it as float32 ``[n_out]``; zeros for None.

    The kernels always get an array: one compiled variant instead of two.
    """
    if bias is None:
        return np.zeros(n_out, np.float32)
    b = np.ascontiguousarray(np.asarray(bias, dtype=np.float32))
    if b.shape != (n_out,):
        raise ValueError(f"bias must have shape ({n_out},), got {b.shape}")
    return b


def check_active(idx, val, n_in):
    """Validate active ``(indices, values)`` for an input of ``n_in`` units; C-contiguous copies if needed."""
    if not isinstance(idx, np.ndarray):
        idx = np.asarray(idx)
    if not isinstance(val, np.ndarray):
        val = np.asarray(val)
    if idx.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"indices and values must both be [batch, k], got {idx.shape} and {val.shape}")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got {idx.dtype}")
    if val.dtype != np.float32:
        raise ValueError(f"values must be float32, got {val.dtype}")
    if idx.size and ((idx.dtype.kind == "i" and int(idx.min()) < 0) or int(idx.max()) >= n_in):
        raise ValueError(f"indices must lie in [0, {n_in})")
    if not idx.flags.c_contiguous:
        idx = np.ascontiguousarray(idx)
    if not val.flags.c_contiguous:
        val = np.ascontiguousarray(val)
    return idx, val


def expected_macs(packed, batch: int, active: int) -> float:
    """Multiply-adds a call does: stored non-zeros per input column x active inputs x rows."""
    return packed.nnz_stored / packed.n_in * active * batch


def use_parallel(parallel, batch: int, macs: float) -> bool:
    """Resolve ``parallel=None``: threads only when numba may use several and the
    call has enough work (``macs``, split over ``batch`` parts) to pay for waking them."""
    if parallel is None:
        return batch > 1 and macs >= PARALLEL_MIN_MACS and numba.get_num_threads() > 1
    return bool(parallel)


def active_from_dense(x: np.ndarray):
    """The non-zero entries of each row of a dense ``x``, as ``(indices, values)`` ``[batch, width]``.

    ``width`` is the largest non-zero count of any row; shorter rows are padded
    with index 0 and value 0, which the kernels skip.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [batch, in], got shape {x.shape}")
    mask = x != 0
    width = max(1, int(mask.sum(axis=1).max(initial=0)))
    idx = np.zeros((x.shape[0], width), index_dtype(x.shape[1]))
    val = np.zeros((x.shape[0], width), np.float32)
    for r in range(x.shape[0]):
        (nz,) = np.nonzero(mask[r])
        idx[r, : nz.size] = nz
        val[r, : nz.size] = x[r, nz]
    return idx, val


class SparseInputLayer:
    """A layer fed the active units of a sparse input, packed once by input column.

    ``layer(idx, val)`` maps active ``(indices, values)`` ``[batch, n_active]`` to float32
    ``[batch, out]``, or with ``k`` to the winners ``(indices, values)`` ``[batch, k]`` (linear
    map and kWTA fused per row). ``reuse=True``: the dense result lives in a buffer kept per
    batch size, overwritten by the next call.
    """

    def __init__(self, packed, bias=None, k: int | None = None, parallel: bool | None = None,
                 active: int | None = None):
        self.packed = packed
        self._arrays = format_arrays(packed)
        self.n_in, self.n_out = packed.n_in, packed.n_out
        self.bias = check_bias(bias, packed.n_out)
        # int8 weights' channel scale (applied after the sums); empty: none
        self.scale = _NO_SCALE if getattr(packed, "scale", None) is None else packed.scale
        self.k = None if k is None else check_k(k, packed.n_out)
        self.parallel = parallel
        self.active = active  # expected active inputs per row (for the threads decision); None: from the call
        self._idx_dtype = index_dtype(packed.n_out)
        self._plans: dict[tuple[int, int], tuple] = {}

    def _plan(self, batch: int, n_active: int) -> tuple:
        """Per (batch, active width): threads or not, row or column-batched kernel, and buffers."""
        plan = self._plans.get((batch, n_active))
        if plan is None:
            macs = expected_macs(self.packed, batch, self.active or n_active)
            columns = batch >= COLUMNS_MIN_BATCH and not isinstance(self.packed, ColumnCSC)
            if self.k:
                winners = (np.empty((batch, self.k), self._idx_dtype), np.empty((batch, self.k), np.float32))
            else:
                winners = (np.empty((0, 1), self._idx_dtype), np.empty((0, 1), np.float32))
            scratch = (np.empty(self.n_in + 1, np.uint32), np.empty(batch * n_active, np.uint32),
                       np.empty(batch * n_active, np.float32)) if columns else None
            plan = (use_parallel(self.parallel, batch, macs), aligned_empty((batch, self.packed.n_out_padded)),
                    winners, scratch)
            self._plans[(batch, n_active)] = plan
        return plan

    def kernel_call(self, idx, val, reuse: bool = False):
        """The one numba call this layer makes for checked ``(idx, val)``: ``(kernel, args,
        result)``, where ``kernel(*args)`` writes ``result`` (the winners, or the padded output
        rows); see ``sparse_dense.DenseInputLayer.kernel_call``."""
        batch = idx.shape[0]
        par, out, winners, scratch = self._plan(batch, idx.shape[1])
        p = self.packed
        k = self.k or 0
        if not reuse and not k:
            out = np.empty_like(out)  # the result itself: fresh (with kWTA it is only scratch)
        # the winners: the plan's buffers with reuse, overwritten by the next call
        idx_out, val_out = winners if reuse or not k else (np.empty_like(winners[0]), np.empty_like(winners[1]))
        head = (idx, val, *self._arrays, self.bias, self.scale)
        if scratch is not None and par:
            call = (_columns_parallel, (*head, out, self.n_in, p.n_out, k, idx_out, val_out, row_chunks(batch)))
        elif scratch is not None:
            call = (_columns_serial, (*head, out, *scratch, p.n_out, k, idx_out, val_out))
        elif not k:
            call = (_linear_parallel if par else _linear_serial, (*head, out))
        elif par:
            call = (_linear_kwta_parallel, (*head, p.n_out_padded, p.n_out, k, idx_out, val_out, row_chunks(batch)))
        else:
            call = (_linear_kwta_serial, (*head, p.n_out_padded, p.n_out, k, idx_out, val_out))
        return (*call, (idx_out, val_out) if k else out)

    def __call__(self, idx, val, reuse: bool = False, checked: bool = False):
        if not checked:
            idx, val = check_active(idx, val, self.n_in)
        kernel, args, result = self.kernel_call(idx, val, reuse)
        kernel(*args)
        return result if self.k else unpadded(result, idx.shape[0], self.n_out)


def prepare(weight, bias=None, k: int | None = None, structure: str = "auto", parallel: bool | None = None,
            active: int | None = None, precision: str = "fp32") -> SparseInputLayer:
    """Pack a float32 ``[out, in]`` weight for sparse inputs (``pack_columns``; ``precision``
    fp32, bf16 or int8), kWTA fused if ``k``."""
    return SparseInputLayer(pack_columns(weight, structure, precision), bias, k, parallel, active)


def sparse_sparse_linear(idx, val, packed, bias=None, parallel: bool | None = None) -> np.ndarray:
    """``x @ W.T + b`` for a sparse ``x`` given as active ``(indices, values)``.

    Args:
        idx, val: ``[batch, k]`` active input indices (any integer type) and float32 values.
        packed: ``pack_columns(weight)``, or a weight array (packed on every call: slow).
        bias: float32 ``[out]`` or None.
        parallel: split rows over threads; default when the batch is big enough to pay.

    Returns:
        float32 ``[batch, out]``.
    """
    if isinstance(packed, np.ndarray):
        packed = pack_columns(packed)
    return SparseInputLayer(packed, bias, None, parallel)(idx, val)


def sparse_sparse_linear_kwta(idx, val, packed, k: int, bias=None, parallel: bool | None = None):
    """``k_winners(x @ W.T + b, k)`` in one pass per row: active ``(indices, values)`` in and out."""
    if isinstance(packed, np.ndarray):
        packed = pack_columns(packed)
    return SparseInputLayer(packed, bias, k, parallel)(idx, val)
