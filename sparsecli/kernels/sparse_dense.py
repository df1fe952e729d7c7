"""Sparse-dense kernels: sparse weights times a dense input.

Used where the input has no known sparsity (the network's first layer) and as
the "weight sparsity only" point of comparison. The weight is packed by output
row (``pack_rows``) so each output sums in registers over its non-zeros and is
stored once; threads split the outputs, which keeps them busy even at batch 1.

* 16x1 blocks: 16 outputs accumulate together, two AVX2 FMAs per kept block.
* unstructured (CSR): one output at a time for small batches; from 16 rows on,
  the input is transposed to ``[in, batch]`` so each non-zero multiplies 16
  contiguous batch entries (the same two FMAs as a block).
* a dense weight goes to torch's GEMM.

The inner loops keep four independent sets of accumulators: one set would
wait on the previous FMA's result (4 cycles) at every step. The 16 lanes are
written out as 16 scalar lines on purpose: numba has no vector types, and
LLVM's SLP vectorizer (``NUMBA_SLP_VECTORIZE=1``, set by this package) turns
such straight-line code into AVX2 FMAs. Indices are unsigned (``np.uint64``)
so numba emits no negative-index wraparound code in the hot loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparsecli.kernels.formats import DenseRows, RowBlocks, RowCSR, pack_rows
from sparsecli.kernels.sparse_sparse import check_bias, use_parallel

# Output rows per parallel task for CSR.
_CSR_CHUNK = 64
# From this batch size on, blocks work on the transposed input four rows at a time.
_BLOCKS_TILE = 4
# From this batch size on, CSR works on the transposed input in tiles of 16 rows.
_CSR_TILE = 16

_FASTMATH = {"contract"}  # allow FMA; no reassociation beyond the explicit accumulator split


@njit(cache=True, fastmath=_FASTMATH)
def _blocks_row(x, row_ptr, col, values, bias, out, r):
    """Outputs ``16r .. 16r+15`` of each batch row in turn; ``bias`` is padded to whole blocks."""
    o = np.uint64(r) * np.uint64(16)
    p0 = np.uint64(row_ptr[r])
    p1 = np.uint64(row_ptr[r + 1])
    for bb in range(x.shape[0]):
        xb = x[bb]
        a0 = bias[o + np.uint64(0)]
        a1 = bias[o + np.uint64(1)]
        a2 = bias[o + np.uint64(2)]
        a3 = bias[o + np.uint64(3)]
        a4 = bias[o + np.uint64(4)]
        a5 = bias[o + np.uint64(5)]
        a6 = bias[o + np.uint64(6)]
        a7 = bias[o + np.uint64(7)]
        a8 = bias[o + np.uint64(8)]
        a9 = bias[o + np.uint64(9)]
        a10 = bias[o + np.uint64(10)]
        a11 = bias[o + np.uint64(11)]
        a12 = bias[o + np.uint64(12)]
        a13 = bias[o + np.uint64(13)]
        a14 = bias[o + np.uint64(14)]
        a15 = bias[o + np.uint64(15)]
        b0 = np.float32(0.0)
        b1 = np.float32(0.0)
        b2 = np.float32(0.0)
        b3 = np.float32(0.0)
        b4 = np.float32(0.0)
        b5 = np.float32(0.0)
        b6 = np.float32(0.0)
        b7 = np.float32(0.0)
        b8 = np.float32(0.0)
        b9 = np.float32(0.0)
        b10 = np.float32(0.0)
        b11 = np.float32(0.0)
        b12 = np.float32(0.0)
        b13 = np.float32(0.0)
        b14 = np.float32(0.0)
        b15 = np.float32(0.0)
        c0 = np.float32(0.0)
        c1 = np.float32(0.0)
        c2 = np.float32(0.0)
        c3 = np.float32(0.0)
        c4 = np.float32(0.0)
        c5 = np.float32(0.0)
        c6 = np.float32(0.0)
        c7 = np.float32(0.0)
        c8 = np.float32(0.0)
        c9 = np.float32(0.0)
        c10 = np.float32(0.0)
        c11 = np.float32(0.0)
        c12 = np.float32(0.0)
        c13 = np.float32(0.0)
        c14 = np.float32(0.0)
        c15 = np.float32(0.0)
        d0 = np.float32(0.0)
        d1 = np.float32(0.0)
        d2 = np.float32(0.0)
        d3 = np.float32(0.0)
        d4 = np.float32(0.0)
        d5 = np.float32(0.0)
        d6 = np.float32(0.0)
        d7 = np.float32(0.0)
        d8 = np.float32(0.0)
        d9 = np.float32(0.0)
        d10 = np.float32(0.0)
        d11 = np.float32(0.0)
        d12 = np.float32(0.0)
        d13 = np.float32(0.0)
        d14 = np.float32(0.0)
        d15 = np.float32(0.0)
        p = p0
        while p + np.uint64(4) <= p1:
            s0 = xb[col[p]]
            v0 = values[p]
            a0 += v0[0] * s0
            a1 += v0[1] * s0
            a2 += v0[2] * s0
            a3 += v0[3] * s0
            a4 += v0[4] * s0
            a5 += v0[5] * s0
            a6 += v0[6] * s0
            a7 += v0[7] * s0
            a8 += v0[8] * s0
            a9 += v0[9] * s0
            a10 += v0[10] * s0
            a11 += v0[11] * s0
            a12 += v0[12] * s0
            a13 += v0[13] * s0
            a14 += v0[14] * s0
            a15 += v0[15] * s0
            s1 = xb[col[p + np.uint64(1)]]
            v1 = values[p + np.uint64(1)]
            b0 += v1[0] * s1
            b1 += v1[1] * s1
            b2 += v1[2] * s1
            b3 += v1[3] * s1
            b4 += v1[4] * s1
            b5 += v1[5] * s1
            b6 += v1[6] * s1
            b7 += v1[7] * s1
            b8 += v1[8] * s1
            b9 += v1[9] * s1
            b10 += v1[10] * s1
            b11 += v1[11] * s1
            b12 += v1[12] * s1
            b13 += v1[13] * s1
            b14 += v1[14] * s1
            b15 += v1[15] * s1
            s2 = xb[col[p + np.uint64(2)]]
            v2 = values[p + np.uint64(2)]
            c0 += v2[0] * s2
            c1 += v2[1] * s2
            c2 += v2[2] * s2
            c3 += v2[3] * s2
            c4 += v2[4] * s2
            c5 += v2[5] * s2
            c6 += v2[6] * s2
            c7 += v2[7] * s2
            c8 += v2[8] * s2
            c9 += v2[9] * s2
            c10 += v2[10] * s2
            c11 += v2[11] * s2
            c12 += v2[12] * s2
            c13 += v2[13] * s2
            c14 += v2[14] * s2
            c15 += v2[15] * s2
            s3 = xb[col[p + np.uint64(3)]]
            v3 = values[p + np.uint64(3)]
            d0 += v3[0] * s3
            d1 += v3[1] * s3
            d2 += v3[2] * s3
            d3 += v3[3] * s3
            d4 += v3[4] * s3
            d5 += v3[5] * s3
            d6 += v3[6] * s3
            d7 += v3[7] * s3
            d8 += v3[8] * s3
            d9 += v3[9] * s3
            d10 += v3[10] * s3
            d11 += v3[11] * s3
            d12 += v3[12] * s3
            d13 += v3[13] * s3
            d14 += v3[14] * s3
            d15 += v3[15] * s3
            p += np.uint64(4)
        while p < p1:
            s0 = xb[col[p]]
            v0 = values[p]
            a0 += v0[0] * s0
            a1 += v0[1] * s0
            a2 += v0[2] * s0
            a3 += v0[3] * s0
            a4 += v0[4] * s0
            a5 += v0[5] * s0
            a6 += v0[6] * s0
            a7 += v0[7] * s0
            a8 += v0[8] * s0
            a9 += v0[9] * s0
            a10 += v0[10] * s0
            a11 += v0[11] * s0
            a12 += v0[12] * s0
            a13 += v0[13] * s0
            a14 += v0[14] * s0
            a15 += v0[15] * s0
            p += np.uint64(1)
        ob = out[bb]
        ob[o + np.uint64(0)] = (a0 + b0) + (c0 + d0)
        ob[o + np.uint64(1)] = (a1 + b1) + (c1 + d1)
        ob[o + np.uint64(2)] = (a2 + b2) + (c2 + d2)
        ob[o + np.uint64(3)] = (a3 + b3) + (c3 + d3)
        ob[o + np.uint64(4)] = (a4 + b4) + (c4 + d4)
        ob[o + np.uint64(5)] = (a5 + b5) + (c5 + d5)
        ob[o + np.uint64(6)] = (a6 + b6) + (c6 + d6)
        ob[o + np.uint64(7)] = (a7 + b7) + (c7 + d7)
        ob[o + np.uint64(8)] = (a8 + b8) + (c8 + d8)
        ob[o + np.uint64(9)] = (a9 + b9) + (c9 + d9)
        ob[o + np.uint64(10)] = (a10 + b10) + (c10 + d10)
        ob[o + np.uint64(11)] = (a11 + b11) + (c11 + d11)
        ob[o + np.uint64(12)] = (a12 + b12) + (c12 + d12)
        ob[o + np.uint64(13)] = (a13 + b13) + (c13 + d13)
        ob[o + np.uint64(14)] = (a14 + b14) + (c14 + d14)
        ob[o + np.uint64(15)] = (a15 + b15) + (c15 + d15)


@njit(cache=True, fastmath=_FASTMATH)
def _blocks_row_tiled(xt, row_ptr, col, values, bias, out, r):
    """Like ``_blocks_row`` for four batch rows at once from ``xt [in, batch]`` (batch a multiple of 4).

    Each weight block is loaded once for four rows (whose inputs share a cache
    line of ``xt``), and the rows' accumulators are independent, so the FMAs
    never wait on each other. Four rows x 16 outputs fill 8 of AVX2's 16 vector
    registers; more would spill on machines without AVX-512.
    """
    o = np.uint64(r) * np.uint64(16)
    p0 = row_ptr[r]
    p1 = row_ptr[r + 1]
    for bt in range(np.uint64(0), np.uint64(xt.shape[1]), np.uint64(4)):
        a0 = bias[o + np.uint64(0)]
        a1 = bias[o + np.uint64(1)]
        a2 = bias[o + np.uint64(2)]
        a3 = bias[o + np.uint64(3)]
        a4 = bias[o + np.uint64(4)]
        a5 = bias[o + np.uint64(5)]
        a6 = bias[o + np.uint64(6)]
        a7 = bias[o + np.uint64(7)]
        a8 = bias[o + np.uint64(8)]
        a9 = bias[o + np.uint64(9)]
        a10 = bias[o + np.uint64(10)]
        a11 = bias[o + np.uint64(11)]
        a12 = bias[o + np.uint64(12)]
        a13 = bias[o + np.uint64(13)]
        a14 = bias[o + np.uint64(14)]
        a15 = bias[o + np.uint64(15)]
        b0 = bias[o + np.uint64(0)]
        b1 = bias[o + np.uint64(1)]
        b2 = bias[o + np.uint64(2)]
        b3 = bias[o + np.uint64(3)]
        b4 = bias[o + np.uint64(4)]
        b5 = bias[o + np.uint64(5)]
        b6 = bias[o + np.uint64(6)]
        b7 = bias[o + np.uint64(7)]
        b8 = bias[o + np.uint64(8)]
        b9 = bias[o + np.uint64(9)]
        b10 = bias[o + np.uint64(10)]
        b11 = bias[o + np.uint64(11)]
        b12 = bias[o + np.uint64(12)]
        b13 = bias[o + np.uint64(13)]
        b14 = bias[o + np.uint64(14)]
        b15 = bias[o + np.uint64(15)]
        c0 = bias[o + np.uint64(0)]
        c1 = bias[o + np.uint64(1)]
        c2 = bias[o + np.uint64(2)]
        c3 = bias[o + np.uint64(3)]
        c4 = bias[o + np.uint64(4)]
        c5 = bias[o + np.uint64(5)]
        c6 = bias[o + np.uint64(6)]
        c7 = bias[o + np.uint64(7)]
        c8 = bias[o + np.uint64(8)]
        c9 = bias[o + np.uint64(9)]
        c10 = bias[o + np.uint64(10)]
        c11 = bias[o + np.uint64(11)]
        c12 = bias[o + np.uint64(12)]
        c13 = bias[o + np.uint64(13)]
        c14 = bias[o + np.uint64(14)]
        c15 = bias[o + np.uint64(15)]
        d0 = bias[o + np.uint64(0)]
        d1 = bias[o + np.uint64(1)]
        d2 = bias[o + np.uint64(2)]
        d3 = bias[o + np.uint64(3)]
        d4 = bias[o + np.uint64(4)]
        d5 = bias[o + np.uint64(5)]
        d6 = bias[o + np.uint64(6)]
        d7 = bias[o + np.uint64(7)]
        d8 = bias[o + np.uint64(8)]
        d9 = bias[o + np.uint64(9)]
        d10 = bias[o + np.uint64(10)]
        d11 = bias[o + np.uint64(11)]
        d12 = bias[o + np.uint64(12)]
        d13 = bias[o + np.uint64(13)]
        d14 = bias[o + np.uint64(14)]
        d15 = bias[o + np.uint64(15)]
        for p in range(p0, p1):
            w = values[p]
            xr = xt[col[p]]
            s0 = xr[bt + np.uint64(0)]
            s1 = xr[bt + np.uint64(1)]
            s2 = xr[bt + np.uint64(2)]
            s3 = xr[bt + np.uint64(3)]
            a0 += w[0] * s0
            a1 += w[1] * s0
            a2 += w[2] * s0
            a3 += w[3] * s0
            a4 += w[4] * s0
            a5 += w[5] * s0
            a6 += w[6] * s0
            a7 += w[7] * s0
            a8 += w[8] * s0
            a9 += w[9] * s0
            a10 += w[10] * s0
            a11 += w[11] * s0
            a12 += w[12] * s0
            a13 += w[13] * s0
            a14 += w[14] * s0
            a15 += w[15] * s0
            b0 += w[0] * s1
            b1 += w[1] * s1
            b2 += w[2] * s1
            b3 += w[3] * s1
            b4 += w[4] * s1
            b5 += w[5] * s1
            b6 += w[6] * s1
            b7 += w[7] * s1
            b8 += w[8] * s1
            b9 += w[9] * s1
            b10 += w[10] * s1
            b11 += w[11] * s1
            b12 += w[12] * s1
            b13 += w[13] * s1
            b14 += w[14] * s1
            b15 += w[15] * s1
            c0 += w[0] * s2
            c1 += w[1] * s2
            c2 += w[2] * s2
            c3 += w[3] * s2
            c4 += w[4] * s2
            c5 += w[5] * s2
            c6 += w[6] * s2
            c7 += w[7] * s2
            c8 += w[8] * s2
            c9 += w[9] * s2
            c10 += w[10] * s2
            c11 += w[11] * s2
            c12 += w[12] * s2
            c13 += w[13] * s2
            c14 += w[14] * s2
            c15 += w[15] * s2
            d0 += w[0] * s3
            d1 += w[1] * s3
            d2 += w[2] * s3
            d3 += w[3] * s3
            d4 += w[4] * s3
            d5 += w[5] * s3
            d6 += w[6] * s3
            d7 += w[7] * s3
            d8 += w[8] * s3
            d9 += w[9] * s3
            d10 += w[10] * s3
            d11 += w[11] * s3
            d12 += w[12] * s3
            d13 += w[13] * s3
            d14 += w[14] * s3
            d15 += w[15] * s3
        ob = out[bt + np.uint64(0)]
        ob[o + np.uint64(0)] = a0
        ob[o + np.uint64(1)] = a1
        ob[o + np.uint64(2)] = a2
        ob[o + np.uint64(3)] = a3
        ob[o + np.uint64(4)] = a4
        ob[o + np.uint64(5)] = a5
        ob[o + np.uint64(6)] = a6
        ob[o + np.uint64(7)] = a7
        ob[o + np.uint64(8)] = a8
        ob[o + np.uint64(9)] = a9
        ob[o + np.uint64(10)] = a10
        ob[o + np.uint64(11)] = a11
        ob[o + np.uint64(12)] = a12
        ob[o + np.uint64(13)] = a13
        ob[o + np.uint64(14)] = a14
        ob[o + np.uint64(15)] = a15
        ob = out[bt + np.uint64(1)]
        ob[o + np.uint64(0)] = b0
        ob[o + np.uint64(1)] = b1
        ob[o + np.uint64(2)] = b2
        ob[o + np.uint64(3)] = b3
        ob[o + np.uint64(4)] = b4
        ob[o + np.uint64(5)] = b5
        ob[o + np.uint64(6)] = b6
        ob[o + np.uint64(7)] = b7
        ob[o + np.uint64(8)] = b8
        ob[o + np.uint64(9)] = b9
        ob[o + np.uint64(10)] = b10
        ob[o + np.uint64(11)] = b11
        ob[o + np.uint64(12)] = b12
        ob[o + np.uint64(13)] = b13
        ob[o + np.uint64(14)] = b14
        ob[o + np.uint64(15)] = b15
        ob = out[bt + np.uint64(2)]
        ob[o + np.uint64(0)] = c0
        ob[o + np.uint64(1)] = c1
        ob[o + np.uint64(2)] = c2
        ob[o + np.uint64(3)] = c3
        ob[o + np.uint64(4)] = c4
        ob[o + np.uint64(5)] = c5
        ob[o + np.uint64(6)] = c6
        ob[o + np.uint64(7)] = c7
        ob[o + np.uint64(8)] = c8
        ob[o + np.uint64(9)] = c9
        ob[o + np.uint64(10)] = c10
        ob[o + np.uint64(11)] = c11
        ob[o + np.uint64(12)] = c12
        ob[o + np.uint64(13)] = c13
        ob[o + np.uint64(14)] = c14
        ob[o + np.uint64(15)] = c15
        ob = out[bt + np.uint64(3)]
        ob[o + np.uint64(0)] = d0
        ob[o + np.uint64(1)] = d1
        ob[o + np.uint64(2)] = d2
        ob[o + np.uint64(3)] = d3
        ob[o + np.uint64(4)] = d4
        ob[o + np.uint64(5)] = d5
        ob[o + np.uint64(6)] = d6
        ob[o + np.uint64(7)] = d7
        ob[o + np.uint64(8)] = d8
        ob[o + np.uint64(9)] = d9
        ob[o + np.uint64(10)] = d10
        ob[o + np.uint64(11)] = d11
        ob[o + np.uint64(12)] = d12
        ob[o + np.uint64(13)] = d13
        ob[o + np.uint64(14)] = d14
        ob[o + np.uint64(15)] = d15


@njit(cache=True)
def _blocks_serial(x, row_ptr, col, values, bias, out, tiled):
    for r in range(row_ptr.shape[0] - 1):
        if tiled:
            _blocks_row_tiled(x, row_ptr, col, values, bias, out, r)
        else:
            _blocks_row(x, row_ptr, col, values, bias, out, r)


@njit(cache=True, parallel=True)
def _blocks_parallel(x, row_ptr, col, values, bias, out, tiled):
    for r in prange(row_ptr.shape[0] - 1):
        # (prange's index is unsigned: cast it so the serial driver's compiled helper is reused)
        if tiled:
            _blocks_row_tiled(x, row_ptr, col, values, bias, out, np.int64(r))
        else:
            _blocks_row(x, row_ptr, col, values, bias, out, np.int64(r))


@njit(cache=True, fastmath=_FASTMATH)
def _csr_rows_small(x, row_ptr, col, values, bias, out, i0, i1):
    """Outputs ``i0 .. i1-1`` of every batch row, one dot product at a time."""
    for i in range(i0, i1):
        p0 = row_ptr[i]
        p1 = row_ptr[i + 1]
        for bb in range(x.shape[0]):
            xb = x[bb]
            s0 = bias[i]
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            p = p0
            while p + 4 <= p1:
                s0 += values[p] * xb[col[p]]
                s1 += values[p + 1] * xb[col[p + 1]]
                s2 += values[p + 2] * xb[col[p + 2]]
                s3 += values[p + 3] * xb[col[p + 3]]
                p += 4
            while p < p1:
                s0 += values[p] * xb[col[p]]
                p += 1
            out[bb, i] = (s0 + s1) + (s2 + s3)


@njit(cache=True, fastmath=_FASTMATH)
def _csr_rows_tiled(xt, row_ptr, col, values, bias, out_t, i0, i1):
    """Outputs ``i0 .. i1-1`` for a transposed input ``xt [in, batch]`` (batch a multiple of 16)."""
    for i in range(i0, i1):
        p0 = np.uint64(row_ptr[i])
        p1 = np.uint64(row_ptr[i + 1])
        bias_i = bias[i]
        ob = out_t[i]
        for o in range(np.uint64(0), np.uint64(xt.shape[1]), np.uint64(16)):
            a0 = bias_i
            a1 = bias_i
            a2 = bias_i
            a3 = bias_i
            a4 = bias_i
            a5 = bias_i
            a6 = bias_i
            a7 = bias_i
            a8 = bias_i
            a9 = bias_i
            a10 = bias_i
            a11 = bias_i
            a12 = bias_i
            a13 = bias_i
            a14 = bias_i
            a15 = bias_i
            b0 = np.float32(0.0)
            b1 = np.float32(0.0)
            b2 = np.float32(0.0)
            b3 = np.float32(0.0)
            b4 = np.float32(0.0)
            b5 = np.float32(0.0)
            b6 = np.float32(0.0)
            b7 = np.float32(0.0)
            b8 = np.float32(0.0)
            b9 = np.float32(0.0)
            b10 = np.float32(0.0)
            b11 = np.float32(0.0)
            b12 = np.float32(0.0)
            b13 = np.float32(0.0)
            b14 = np.float32(0.0)
            b15 = np.float32(0.0)
            c0 = np.float32(0.0)
            c1 = np.float32(0.0)
            c2 = np.float32(0.0)
            c3 = np.float32(0.0)
            c4 = np.float32(0.0)
            c5 = np.float32(0.0)
            c6 = np.float32(0.0)
            c7 = np.float32(0.0)
            c8 = np.float32(0.0)
            c9 = np.float32(0.0)
            c10 = np.float32(0.0)
            c11 = np.float32(0.0)
            c12 = np.float32(0.0)
            c13 = np.float32(0.0)
            c14 = np.float32(0.0)
            c15 = np.float32(0.0)
            d0 = np.float32(0.0)
            d1 = np.float32(0.0)
            d2 = np.float32(0.0)
            d3 = np.float32(0.0)
            d4 = np.float32(0.0)
            d5 = np.float32(0.0)
            d6 = np.float32(0.0)
            d7 = np.float32(0.0)
            d8 = np.float32(0.0)
            d9 = np.float32(0.0)
            d10 = np.float32(0.0)
            d11 = np.float32(0.0)
            d12 = np.float32(0.0)
            d13 = np.float32(0.0)
            d14 = np.float32(0.0)
            d15 = np.float32(0.0)
            p = p0
            while p + np.uint64(4) <= p1:
                s0 = values[p]
                v0 = xt[col[p]]
                a0 += v0[o + np.uint64(0)] * s0
                a1 += v0[o + np.uint64(1)] * s0
                a2 += v0[o + np.uint64(2)] * s0
                a3 += v0[o + np.uint64(3)] * s0
                a4 += v0[o + np.uint64(4)] * s0
                a5 += v0[o + np.uint64(5)] * s0
                a6 += v0[o + np.uint64(6)] * s0
                a7 += v0[o + np.uint64(7)] * s0
                a8 += v0[o + np.uint64(8)] * s0
                a9 += v0[o + np.uint64(9)] * s0
                a10 += v0[o + np.uint64(10)] * s0
                a11 += v0[o + np.uint64(11)] * s0
                a12 += v0[o + np.uint64(12)] * s0
                a13 += v0[o + np.uint64(13)] * s0
                a14 += v0[o + np.uint64(14)] * s0
                a15 += v0[o + np.uint64(15)] * s0
                s1 = values[p + np.uint64(1)]
                v1 = xt[col[p + np.uint64(1)]]
                b0 += v1[o + np.uint64(0)] * s1
                b1 += v1[o + np.uint64(1)] * s1
                b2 += v1[o + np.uint64(2)] * s1
                b3 += v1[o + np.uint64(3)] * s1
                b4 += v1[o + np.uint64(4)] * s1
                b5 += v1[o + np.uint64(5)] * s1
                b6 += v1[o + np.uint64(6)] * s1
                b7 += v1[o + np.uint64(7)] * s1
                b8 += v1[o + np.uint64(8)] * s1
                b9 += v1[o + np.uint64(9)] * s1
                b10 += v1[o + np.uint64(10)] * s1
                b11 += v1[o + np.uint64(11)] * s1
                b12 += v1[o + np.uint64(12)] * s1
                b13 += v1[o + np.uint64(13)] * s1
                b14 += v1[o + np.uint64(14)] * s1
                b15 += v1[o + np.uint64(15)] * s1
                s2 = values[p + np.uint64(2)]
                v2 = xt[col[p + np.uint64(2)]]
                c0 += v2[o + np.uint64(0)] * s2
                c1 += v2[o + np.uint64(1)] * s2
                c2 += v2[o + np.uint64(2)] * s2
                c3 += v2[o + np.uint64(3)] * s2
                c4 += v2[o + np.uint64(4)] * s2
                c5 += v2[o + np.uint64(5)] * s2
                c6 += v2[o + np.uint64(6)] * s2
                c7 += v2[o + np.uint64(7)] * s2
                c8 += v2[o + np.uint64(8)] * s2
                c9 += v2[o + np.uint64(9)] * s2
                c10 += v2[o + np.uint64(10)] * s2
                c11 += v2[o + np.uint64(11)] * s2
                c12 += v2[o + np.uint64(12)] * s2
                c13 += v2[o + np.uint64(13)] * s2
                c14 += v2[o + np.uint64(14)] * s2
                c15 += v2[o + np.uint64(15)] * s2
                s3 = values[p + np.uint64(3)]
                v3 = xt[col[p + np.uint64(3)]]
                d0 += v3[o + np.uint64(0)] * s3
                d1 += v3[o + np.uint64(1)] * s3
                d2 += v3[o + np.uint64(2)] * s3
                d3 += v3[o + np.uint64(3)] * s3
                d4 += v3[o + np.uint64(4)] * s3
                d5 += v3[o + np.uint64(5)] * s3
                d6 += v3[o + np.uint64(6)] * s3
                d7 += v3[o + np.uint64(7)] * s3
                d8 += v3[o + np.uint64(8)] * s3
                d9 += v3[o + np.uint64(9)] * s3
                d10 += v3[o + np.uint64(10)] * s3
                d11 += v3[o + np.uint64(11)] * s3
                d12 += v3[o + np.uint64(12)] * s3
                d13 += v3[o + np.uint64(13)] * s3
                d14 += v3[o + np.uint64(14)] * s3
                d15 += v3[o + np.uint64(15)] * s3
                p += np.uint64(4)
            while p < p1:
                s0 = values[p]
                v0 = xt[col[p]]
                a0 += v0[o + np.uint64(0)] * s0
                a1 += v0[o + np.uint64(1)] * s0
                a2 += v0[o + np.uint64(2)] * s0
                a3 += v0[o + np.uint64(3)] * s0
                a4 += v0[o + np.uint64(4)] * s0
                a5 += v0[o + np.uint64(5)] * s0
                a6 += v0[o + np.uint64(6)] * s0
                a7 += v0[o + np.uint64(7)] * s0
                a8 += v0[o + np.uint64(8)] * s0
                a9 += v0[o + np.uint64(9)] * s0
                a10 += v0[o + np.uint64(10)] * s0
                a11 += v0[o + np.uint64(11)] * s0
                a12 += v0[o + np.uint64(12)] * s0
                a13 += v0[o + np.uint64(13)] * s0
                a14 += v0[o + np.uint64(14)] * s0
                a15 += v0[o + np.uint64(15)] * s0
                p += np.uint64(1)
            ob[o + np.uint64(0)] = (a0 + b0) + (c0 + d0)
            ob[o + np.uint64(1)] = (a1 + b1) + (c1 + d1)
            ob[o + np.uint64(2)] = (a2 + b2) + (c2 + d2)
            ob[o + np.uint64(3)] = (a3 + b3) + (c3 + d3)
            ob[o + np.uint64(4)] = (a4 + b4) + (c4 + d4)
            ob[o + np.uint64(5)] = (a5 + b5) + (c5 + d5)
            ob[o + np.uint64(6)] = (a6 + b6) + (c6 + d6)
            ob[o + np.uint64(7)] = (a7 + b7) + (c7 + d7)
            ob[o + np.uint64(8)] = (a8 + b8) + (c8 + d8)
            ob[o + np.uint64(9)] = (a9 + b9) + (c9 + d9)
            ob[o + np.uint64(10)] = (a10 + b10) + (c10 + d10)
            ob[o + np.uint64(11)] = (a11 + b11) + (c11 + d11)
            ob[o + np.uint64(12)] = (a12 + b12) + (c12 + d12)
            ob[o + np.uint64(13)] = (a13 + b13) + (c13 + d13)
            ob[o + np.uint64(14)] = (a14 + b14) + (c14 + d14)
            ob[o + np.uint64(15)] = (a15 + b15) + (c15 + d15)


@njit(cache=True)
def _csr_serial(x, row_ptr, col, values, bias, out, tiled):
    n = row_ptr.shape[0] - 1
    if tiled:
        _csr_rows_tiled(x, row_ptr, col, values, bias, out, np.int64(0), n)
    else:
        _csr_rows_small(x, row_ptr, col, values, bias, out, np.int64(0), n)


@njit(cache=True, parallel=True)
def _csr_parallel(x, row_ptr, col, values, bias, out, tiled):
    n = row_ptr.shape[0] - 1
    n_chunks = (n + _CSR_CHUNK - 1) // _CSR_CHUNK
    for ch in prange(n_chunks):
        i0 = ch * _CSR_CHUNK
        i1 = min(n, i0 + _CSR_CHUNK)
        if tiled:
            _csr_rows_tiled(x, row_ptr, col, values, bias, out, i0, i1)
        else:
            _csr_rows_small(x, row_ptr, col, values, bias, out, i0, i1)


def check_input(x, n_in: int) -> np.ndarray:
    """Validate a dense input and return it as C-contiguous float32 ``[batch, n_in]``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must be [batch, {n_in}], got shape {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got {x.dtype}")
    return np.ascontiguousarray(x)


def transpose_padded(x: np.ndarray, width: int) -> np.ndarray:
    """``x.T`` as C-contiguous ``[in, width]``, zero columns past the batch."""
    xt = np.zeros((x.shape[1], width), np.float32)
    xt[:, : x.shape[0]] = x.T
    return xt


def padded_bias(bias, packed) -> np.ndarray | None:
    """The bias as float32, zero-padded to the format's padded output width."""
    bias = check_bias(bias, packed.n_out)
    if bias is None or packed.n_out_padded == packed.n_out:
        return bias
    return np.concatenate([bias, np.zeros(packed.n_out_padded - packed.n_out, np.float32)])


def sparse_dense_linear(x, packed, bias=None, parallel: bool | None = None) -> np.ndarray:
    """``x @ W.T + b`` for a dense ``x`` and a weight packed by ``pack_rows``.

    Args:
        x: float32 ``[batch, in]``.
        packed: ``pack_rows(weight)``, or a weight array (packed on every call: slow).
        bias: float32 ``[out]`` or None.
        parallel: split outputs over threads; default when the work is big enough to pay.

    Returns:
        float32 ``[batch, out]``.
    """
    if isinstance(packed, np.ndarray):
        packed = pack_rows(packed)
    x = check_input(x, packed.n_in)
    n_batch = x.shape[0]
    # Outputs are split over threads, so even batch 1 can use them.
    parallel = use_parallel(parallel, 2, packed.nnz_stored * n_batch)
    if isinstance(packed, RowBlocks):
        bias = padded_bias(bias, packed)
        kernel = _blocks_parallel if parallel else _blocks_serial
        if n_batch < _BLOCKS_TILE:
            out = np.empty((n_batch, packed.n_out_padded), np.float32)
            kernel(x, packed.row_ptr, packed.col, packed.values, bias, out, False)
            return np.ascontiguousarray(out[:, : packed.n_out])
        width = -(-n_batch // _BLOCKS_TILE) * _BLOCKS_TILE
        xt = transpose_padded(x, width)
        out = np.empty((width, packed.n_out_padded), np.float32)
        kernel(xt, packed.row_ptr, packed.col, packed.values, bias, out, True)
        return np.ascontiguousarray(out[:n_batch, : packed.n_out])
    if isinstance(packed, RowCSR):
        bias = check_bias(bias, packed.n_out)
        kernel = _csr_parallel if parallel else _csr_serial
        if n_batch < _CSR_TILE:
            out = np.empty((n_batch, packed.n_out), np.float32)
            kernel(x, packed.row_ptr, packed.col, packed.values, bias, out, False)
            return out
        width = -(-n_batch // _CSR_TILE) * _CSR_TILE
        xt = transpose_padded(x, width)
        out_t = np.empty((packed.n_out, width), np.float32)
        kernel(xt, packed.row_ptr, packed.col, packed.values, bias, out_t, True)
        return np.ascontiguousarray(out_t[:, :n_batch].T)
    if isinstance(packed, DenseRows):
        from sparsecli.kernels.dense import dense_linear

        return dense_linear(x, packed.weight, check_bias(bias, packed.n_out))
    raise ValueError(f"expected a row format from pack_rows, got {type(packed).__name__}")
