"""Sparse-dense kernels: sparse weights times a dense input.

Used where the input has no known sparsity (the network's first layer) and as
the "weight sparsity only" point of comparison. The weight is packed by output
row (``pack_rows``) so each output sums in registers over its non-zeros and is
stored once; threads split the outputs, which keeps them busy even at batch 1.

* 16x1 blocks: 16 outputs accumulate together, one AVX-512 FMA (two AVX2 ones) per kept
  block; from ``BLOCKS_TILE`` rows on, the input is transposed and 16 (AVX2: 4) batch rows
  share each block load (the 16-row kernel is generated: ``codegen.py``).
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

from sparsecli.kernels import kwinners
from sparsecli.kernels._unrolled import blocks_row_tile16
from sparsecli.kernels.cpu import simd_path
from sparsecli.kernels.precision import as_f32
from sparsecli.kernels.formats import DenseRows, RowBlocks, RowCSR, index_dtype, pack_rows
from sparsecli.kernels.sparse_sparse import check_bias, use_parallel

# Output rows per parallel task for CSR.
_CSR_CHUNK = 64
# From this batch size on, blocks work on the transposed input in tiles of rows: 16 rows x
# 16 outputs fill 16 of AVX-512's 32 registers; AVX2 has 16 registers of half the width,
# where 4 rows (8 registers) is the most that does not spill.
BLOCKS_TILE = 16 if simd_path() == "avx512" else 4
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
            a0 += as_f32(v0[0]) * s0
            a1 += as_f32(v0[1]) * s0
            a2 += as_f32(v0[2]) * s0
            a3 += as_f32(v0[3]) * s0
            a4 += as_f32(v0[4]) * s0
            a5 += as_f32(v0[5]) * s0
            a6 += as_f32(v0[6]) * s0
            a7 += as_f32(v0[7]) * s0
            a8 += as_f32(v0[8]) * s0
            a9 += as_f32(v0[9]) * s0
            a10 += as_f32(v0[10]) * s0
            a11 += as_f32(v0[11]) * s0
            a12 += as_f32(v0[12]) * s0
            a13 += as_f32(v0[13]) * s0
            a14 += as_f32(v0[14]) * s0
            a15 += as_f32(v0[15]) * s0
            s1 = xb[col[p + np.uint64(1)]]
            v1 = values[p + np.uint64(1)]
            b0 += as_f32(v1[0]) * s1
            b1 += as_f32(v1[1]) * s1
            b2 += as_f32(v1[2]) * s1
            b3 += as_f32(v1[3]) * s1
            b4 += as_f32(v1[4]) * s1
            b5 += as_f32(v1[5]) * s1
            b6 += as_f32(v1[6]) * s1
            b7 += as_f32(v1[7]) * s1
            b8 += as_f32(v1[8]) * s1
            b9 += as_f32(v1[9]) * s1
            b10 += as_f32(v1[10]) * s1
            b11 += as_f32(v1[11]) * s1
            b12 += as_f32(v1[12]) * s1
            b13 += as_f32(v1[13]) * s1
            b14 += as_f32(v1[14]) * s1
            b15 += as_f32(v1[15]) * s1
            s2 = xb[col[p + np.uint64(2)]]
            v2 = values[p + np.uint64(2)]
            c0 += as_f32(v2[0]) * s2
            c1 += as_f32(v2[1]) * s2
            c2 += as_f32(v2[2]) * s2
            c3 += as_f32(v2[3]) * s2
            c4 += as_f32(v2[4]) * s2
            c5 += as_f32(v2[5]) * s2
            c6 += as_f32(v2[6]) * s2
            c7 += as_f32(v2[7]) * s2
            c8 += as_f32(v2[8]) * s2
            c9 += as_f32(v2[9]) * s2
            c10 += as_f32(v2[10]) * s2
            c11 += as_f32(v2[11]) * s2
            c12 += as_f32(v2[12]) * s2
            c13 += as_f32(v2[13]) * s2
            c14 += as_f32(v2[14]) * s2
            c15 += as_f32(v2[15]) * s2
            s3 = xb[col[p + np.uint64(3)]]
            v3 = values[p + np.uint64(3)]
            d0 += as_f32(v3[0]) * s3
            d1 += as_f32(v3[1]) * s3
            d2 += as_f32(v3[2]) * s3
            d3 += as_f32(v3[3]) * s3
            d4 += as_f32(v3[4]) * s3
            d5 += as_f32(v3[5]) * s3
            d6 += as_f32(v3[6]) * s3
            d7 += as_f32(v3[7]) * s3
            d8 += as_f32(v3[8]) * s3
            d9 += as_f32(v3[9]) * s3
            d10 += as_f32(v3[10]) * s3
            d11 += as_f32(v3[11]) * s3
            d12 += as_f32(v3[12]) * s3
            d13 += as_f32(v3[13]) * s3
            d14 += as_f32(v3[14]) * s3
            d15 += as_f32(v3[15]) * s3
            p += np.uint64(4)
        while p < p1:
            s0 = xb[col[p]]
            v0 = values[p]
            a0 += as_f32(v0[0]) * s0
            a1 += as_f32(v0[1]) * s0
            a2 += as_f32(v0[2]) * s0
            a3 += as_f32(v0[3]) * s0
            a4 += as_f32(v0[4]) * s0
            a5 += as_f32(v0[5]) * s0
            a6 += as_f32(v0[6]) * s0
            a7 += as_f32(v0[7]) * s0
            a8 += as_f32(v0[8]) * s0
            a9 += as_f32(v0[9]) * s0
            a10 += as_f32(v0[10]) * s0
            a11 += as_f32(v0[11]) * s0
            a12 += as_f32(v0[12]) * s0
            a13 += as_f32(v0[13]) * s0
            a14 += as_f32(v0[14]) * s0
            a15 += as_f32(v0[15]) * s0
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
            a0 += as_f32(w[0]) * s0
            a1 += as_f32(w[1]) * s0
            a2 += as_f32(w[2]) * s0
            a3 += as_f32(w[3]) * s0
            a4 += as_f32(w[4]) * s0
            a5 += as_f32(w[5]) * s0
            a6 += as_f32(w[6]) * s0
            a7 += as_f32(w[7]) * s0
            a8 += as_f32(w[8]) * s0
            a9 += as_f32(w[9]) * s0
            a10 += as_f32(w[10]) * s0
            a11 += as_f32(w[11]) * s0
            a12 += as_f32(w[12]) * s0
            a13 += as_f32(w[13]) * s0
            a14 += as_f32(w[14]) * s0
            a15 += as_f32(w[15]) * s0
            b0 += as_f32(w[0]) * s1
            b1 += as_f32(w[1]) * s1
            b2 += as_f32(w[2]) * s1
            b3 += as_f32(w[3]) * s1
            b4 += as_f32(w[4]) * s1
            b5 += as_f32(w[5]) * s1
            b6 += as_f32(w[6]) * s1
            b7 += as_f32(w[7]) * s1
            b8 += as_f32(w[8]) * s1
            b9 += as_f32(w[9]) * s1
            b10 += as_f32(w[10]) * s1
            b11 += as_f32(w[11]) * s1
            b12 += as_f32(w[12]) * s1
            b13 += as_f32(w[13]) * s1
            b14 += as_f32(w[14]) * s1
            b15 += as_f32(w[15]) * s1
            c0 += as_f32(w[0]) * s2
            c1 += as_f32(w[1]) * s2
            c2 += as_f32(w[2]) * s2
            c3 += as_f32(w[3]) * s2
            c4 += as_f32(w[4]) * s2
            c5 += as_f32(w[5]) * s2
            c6 += as_f32(w[6]) * s2
            c7 += as_f32(w[7]) * s2
            c8 += as_f32(w[8]) * s2
            c9 += as_f32(w[9]) * s2
            c10 += as_f32(w[10]) * s2
            c11 += as_f32(w[11]) * s2
            c12 += as_f32(w[12]) * s2
            c13 += as_f32(w[13]) * s2
            c14 += as_f32(w[14]) * s2
            c15 += as_f32(w[15]) * s2
            d0 += as_f32(w[0]) * s3
            d1 += as_f32(w[1]) * s3
            d2 += as_f32(w[2]) * s3
            d3 += as_f32(w[3]) * s3
            d4 += as_f32(w[4]) * s3
            d5 += as_f32(w[5]) * s3
            d6 += as_f32(w[6]) * s3
            d7 += as_f32(w[7]) * s3
            d8 += as_f32(w[8]) * s3
            d9 += as_f32(w[9]) * s3
            d10 += as_f32(w[10]) * s3
            d11 += as_f32(w[11]) * s3
            d12 += as_f32(w[12]) * s3
            d13 += as_f32(w[13]) * s3
            d14 += as_f32(w[14]) * s3
            d15 += as_f32(w[15]) * s3
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
def _blocks_serial(x, row_ptr, col, values, bias, out, tile):
    for r in range(row_ptr.shape[0] - 1):
        if tile == 16:
            blocks_row_tile16(x, row_ptr, col, values, bias, out, r)
        elif tile == 4:
            _blocks_row_tiled(x, row_ptr, col, values, bias, out, r)
        else:
            _blocks_row(x, row_ptr, col, values, bias, out, r)


@njit(cache=True, parallel=True)
def _blocks_parallel(x, row_ptr, col, values, bias, out, tile):
    for r in prange(row_ptr.shape[0] - 1):
        # (prange's index is unsigned: cast it so the serial driver's compiled helper is reused)
        if tile == 16:
            blocks_row_tile16(x, row_ptr, col, values, bias, out, np.int64(r))
        elif tile == 4:
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
                s0 += as_f32(values[p]) * xb[col[p]]
                s1 += as_f32(values[p + 1]) * xb[col[p + 1]]
                s2 += as_f32(values[p + 2]) * xb[col[p + 2]]
                s3 += as_f32(values[p + 3]) * xb[col[p + 3]]
                p += 4
            while p < p1:
                s0 += as_f32(values[p]) * xb[col[p]]
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
                s0 = as_f32(values[p])
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
                s1 = as_f32(values[p + np.uint64(1)])
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
                s2 = as_f32(values[p + np.uint64(2)])
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
                s3 = as_f32(values[p + np.uint64(3)])
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
                s0 = as_f32(values[p])
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


@njit(cache=True)
def _transpose_into(x, xt):
    """``xt[:, :batch] = x.T``, zeros past the batch; in tiles, so both sides stay in cache."""
    n_b, n_in = x.shape
    xt[:, n_b:] = 0.0
    for i0 in range(0, n_in, 64):
        i1 = min(n_in, i0 + 64)
        for b in range(n_b):
            xb = x[b]
            for i in range(i0, i1):
                xt[i, b] = xb[i]


@njit(cache=True)
def _transpose_back(out_t, out):
    """``out = out_t[:, :batch].T``."""
    n_b, n_out = out.shape
    for i0 in range(0, n_out, 64):
        i1 = min(n_out, i0 + 64)
        for b in range(n_b):
            ob = out[b]
            for i in range(i0, i1):
                ob[i] = out_t[i, b]


@njit(cache=True)
def _kwta_rows(out, n_rows, n, k, idx_out, val_out, kpar, n_chunks):
    if kpar:
        kwinners._k_winners_parallel(out[:n_rows], n, k, idx_out, val_out, n_chunks)
    else:
        kwinners._k_winners_serial(out[:n_rows], n, k, idx_out, val_out)


@njit(cache=True)
def _blocks_forward(x, xt, row_ptr, col, values, bias, out, tile, par, n, k, idx_out, val_out, kpar, n_chunks):
    """One call per layer: transpose if tiled, the block kernel, then kWTA if ``k > 0``."""
    if tile > 0:
        _transpose_into(x, xt)
        if par:
            _blocks_parallel(xt, row_ptr, col, values, bias, out, tile)
        else:
            _blocks_serial(xt, row_ptr, col, values, bias, out, tile)
    elif par:
        _blocks_parallel(x, row_ptr, col, values, bias, out, tile)
    else:
        _blocks_serial(x, row_ptr, col, values, bias, out, tile)
    if k > 0:
        _kwta_rows(out, x.shape[0], n, k, idx_out, val_out, kpar, n_chunks)


@njit(cache=True)
def _csr_forward(x, xt, row_ptr, col, values, bias, out_t, out, par, n, k, idx_out, val_out, kpar, n_chunks):
    """Like ``_blocks_forward`` for CSR: ``xt``/``out_t`` are used (tiled) when ``xt`` has rows."""
    if xt.shape[0] > 0:
        _transpose_into(x, xt)
        if par:
            _csr_parallel(xt, row_ptr, col, values, bias, out_t, True)
        else:
            _csr_serial(xt, row_ptr, col, values, bias, out_t, True)
        _transpose_back(out_t, out)
    elif par:
        _csr_parallel(x, row_ptr, col, values, bias, out, False)
    else:
        _csr_serial(x, row_ptr, col, values, bias, out, False)
    if k > 0:
        _kwta_rows(out, x.shape[0], n, k, idx_out, val_out, kpar, n_chunks)


def check_input(x, n_in: int) -> np.ndarray:
    """Validate a dense input and return it as C-contiguous float32 ``[batch, n_in]``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must be [batch, {n_in}], got shape {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got {x.dtype}")
    return np.ascontiguousarray(x)


def padded_bias(bias, packed) -> np.ndarray:
    """The bias as float32, zero-padded to the format's padded output width."""
    bias = check_bias(bias, packed.n_out)
    if packed.n_out_padded == packed.n_out:
        return bias
    return np.concatenate([bias, np.zeros(packed.n_out_padded - packed.n_out, np.float32)])


# What selecting winners costs per unit of a row, in multiply-adds of a sparse kernel
# (about 1.5 us per 1500-unit row): for deciding when threads pay.
KWTA_MACS_PER_UNIT = 20.0
_EMPTY_IDX = {np.dtype(np.uint16): np.empty((0, 1), np.uint16), np.dtype(np.uint32): np.empty((0, 1), np.uint32)}
_EMPTY_2D = np.empty((0, 1), np.float32)


class DenseInputLayer:
    """A layer fed a dense input, packed once by output row, optionally followed by kWTA.

    ``layer(x)`` maps float32 ``[batch, in]`` to float32 ``[batch, out]``, or with ``k``
    to the winners ``(indices, values)`` ``[batch, k]``: one numba call per batch
    (transpose, kernel and kWTA fused). With ``reuse=True`` the results live in buffers
    kept per batch size and are overwritten by the next call (what the engine uses
    between layers); otherwise every call returns fresh arrays.
    """

    def __init__(self, packed, bias=None, k: int | None = None, parallel: bool | None = None):
        if not isinstance(packed, (RowBlocks, RowCSR, DenseRows)):
            raise ValueError(f"expected a row format from pack_rows, got {type(packed).__name__}")
        self.packed = packed
        self.n_in, self.n_out = packed.n_in, packed.n_out
        self.k = None if k is None else kwinners.check_k(k, packed.n_out)
        self.parallel = parallel
        self.bias = check_bias(bias, packed.n_out)
        self._bias_padded = padded_bias(bias, packed) if isinstance(packed, RowBlocks) else self.bias
        self._idx_dtype = index_dtype(packed.n_out)
        self._plans: dict[int, tuple] = {}
        if isinstance(packed, DenseRows):
            import torch

            self._torch = (torch.from_numpy(packed.weight), torch.from_numpy(self.bias))

    def _plan(self, batch: int) -> tuple:
        """Per batch size: the kernel's settings and its buffers (allocated once)."""
        plan = self._plans.get(batch)
        if plan is not None:
            return plan
        p = self.packed
        par = use_parallel(self.parallel, 2, p.nnz_stored * batch)
        kpar = self.k is not None and use_parallel(self.parallel, batch, KWTA_MACS_PER_UNIT * p.n_out * batch)
        if isinstance(p, RowBlocks):
            tile = BLOCKS_TILE if batch >= BLOCKS_TILE else 0
            width = -(-batch // tile) * tile if tile else batch
            xt = np.empty((p.n_in, width) if tile else (0, 1), np.float32)
            out = np.empty((width, p.n_out_padded), np.float32)
            plan = ("blocks", tile, par, kpar, xt, out, None)
        elif isinstance(p, RowCSR):
            tiled = batch >= _CSR_TILE
            width = -(-batch // _CSR_TILE) * _CSR_TILE if tiled else 0
            xt = np.empty((p.n_in, width) if tiled else (0, 1), np.float32)
            out_t = np.empty((p.n_out, width) if tiled else (0, 1), np.float32)
            plan = ("csr", 0, par, kpar, xt, np.empty((batch, p.n_out), np.float32), out_t)
        else:
            plan = ("dense", 0, False, kpar, None, None, None)
        winners = (np.empty((batch, self.k), self._idx_dtype), np.empty((batch, self.k), np.float32)) if self.k else None
        plan = (*plan, winners, kwinners.row_chunks(batch))
        self._plans[batch] = plan
        return plan

    def __call__(self, x, reuse: bool = False):
        x = check_input(x, self.n_in)
        batch = x.shape[0]
        kind, tile, par, kpar, xt, out, out_t, winners, chunks = self._plan(batch)
        k = self.k or 0
        if not reuse and not k and kind != "dense":
            out = np.empty_like(out)  # the result itself: fresh (with kWTA it is only scratch)
        if k:  # the winners: the plan's buffers with reuse (~0.5 us of allocations saved per call)
            idx, val = winners if reuse else (np.empty_like(winners[0]), np.empty_like(winners[1]))
        else:
            idx, val = _EMPTY_IDX[self._idx_dtype], _EMPTY_2D
        p = self.packed
        if kind == "blocks":
            _blocks_forward(x, xt, p.row_ptr, p.col, p.values, self._bias_padded, out, tile, par, p.n_out, k, idx,
                            val, kpar, chunks)
        elif kind == "csr":
            _csr_forward(x, xt, p.row_ptr, p.col, p.values, self.bias, out_t, out, par, p.n_out, k, idx, val,
                         kpar, chunks)
        else:
            import torch

            with torch.inference_mode():
                out = torch.nn.functional.linear(torch.from_numpy(x), *self._torch).numpy()
            if k:
                _kwta_rows(out, batch, p.n_out, k, idx, val, kpar, chunks)
        if k:
            return idx, val
        if out.shape == (batch, p.n_out):
            return out
        return np.ascontiguousarray(out[:batch, : p.n_out])


def prepare(weight, bias=None, k: int | None = None, structure: str = "auto",
            parallel: bool | None = None, precision: str = "fp32") -> DenseInputLayer:
    """Pack a float32 ``[out, in]`` weight for dense inputs (``pack_rows``), kWTA after it if ``k``."""
    return DenseInputLayer(pack_rows(weight, structure, precision), bias, k, parallel)


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
    return DenseInputLayer(packed, bias, None, parallel)(x)
