"""Sparse-dense kernels: sparse weights times a dense input.

Used where the input has no known sparsity (the network's first layer) and as
the "weight sparsity only" point of comparison. The weight is packed by output
row (``pack_rows``) so each output sums in registers over its non-zeros and is
stored once; threads split the outputs, which keeps them busy even at batch 1.

* 16x1 blocks: 16 outputs accumulate together, one AVX-512 FMA (two AVX2 ones) per kept
  block; from ``BLOCKS_TILE`` rows on, the input is transposed and 16 (AVX2: 4) batch rows
  share each block load.
* unstructured (CSR): one output at a time for small batches; from 16 rows on,
  the input is transposed to ``[in, batch]`` so each non-zero multiplies 16
  contiguous batch entries (the same two FMAs as a block).
* a dense weight goes to torch's GEMM.

The register-held kernels are generated (``codegen.py`` writes ``_unrolled.py``): numba has
no vector types, so 16 lanes are written as 16 scalar lines that LLVM's SLP vectorizer
(``NUMBA_SLP_VECTORIZE=1``, set by this package) turns into one AVX-512 (two AVX2) FMA; the
single-row ones keep four independent sets of accumulators, since one set would wait on
the previous FMA's result (4 cycles) at every step. Indices are unsigned (``np.uint64``) so
numba emits no negative-index wraparound code in the hot loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparsecli.kernels import kwinners
from sparsecli.kernels._unrolled import blocks_row, blocks_row_tile4, blocks_row_tile16, csr_rows_tile16
from sparsecli.kernels.cpu import simd_path
from sparsecli.kernels.precision import as_f32, finish_row
from sparsecli.kernels.formats import DenseRows, RowBlocks, RowCSR, aligned_empty, index_dtype, pack_rows, unpadded
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


# The tiled block kernel this CPU runs: a global, frozen into the compiled drivers, so only it is compiled.
_blocks_row_tiled = blocks_row_tile16 if BLOCKS_TILE == 16 else blocks_row_tile4


@njit(cache=True)
def _blocks_serial(x, row_ptr, col, values, bias, out, tile):
    for r in range(row_ptr.shape[0] - 1):
        if tile:
            _blocks_row_tiled(x, row_ptr, col, values, bias, out, r)
        else:
            blocks_row(x, row_ptr, col, values, bias, out, r)


@njit(cache=True, parallel=True)
def _blocks_parallel(x, row_ptr, col, values, bias, out, tile):
    for r in prange(row_ptr.shape[0] - 1):
        # (prange's index is unsigned: cast it so the serial driver's compiled helper is reused)
        if tile:
            _blocks_row_tiled(x, row_ptr, col, values, bias, out, np.int64(r))
        else:
            blocks_row(x, row_ptr, col, values, bias, out, np.int64(r))


_U16 = np.uint64(0xFFFF)


@njit(cache=True, fastmath=_FASTMATH)
def _csr_row(xb, row_ptr, col, col4, values, bias, ob, i0, i1):
    """Outputs ``i0 .. i1-1`` of one batch row ``xb`` into ``ob``, one dot product at a time.

    Eight independent sums, not one: each multiply-add waits ~4 cycles for the previous one
    into the same sum, so fewer sums cap the rate (four: about one non-zero per cycle). With
    uint16 column indices, ``col4`` is the same indices four to a 64-bit word, over rows
    padded to whole multiples of eight (``padded_rows``): eight non-zeros take two index loads
    instead of eight, and no row has a tail. (Unpadded rows once needed four copies of the
    words shifted by 0-3 entries; reading from four arrays by turns measured 3x slower once a
    dense pass had evicted them from the caches, 15-20% slower while they stayed in L2.)
    ``col4`` empty: plain index loads, any row length.
    """
    packed = col4.shape[0] > 0
    for ii in range(i0, i1):
        i = np.uint64(ii)  # unsigned: no negative-index wraparound code per row (measured 4% at 5% density)
        p = np.uint64(row_ptr[i])
        p1 = np.uint64(row_ptr[i + 1])
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        s4 = np.float32(0.0)
        s5 = np.float32(0.0)
        s6 = np.float32(0.0)
        s7 = np.float32(0.0)
        if packed:
            q = p >> np.uint64(2)  # word q holds col[4q .. 4q+3]; p is a multiple of 8
            while p + np.uint64(8) <= p1:
                c0 = col4[q]
                c1 = col4[q + np.uint64(1)]
                s0 += as_f32(values[p + np.uint64(0)]) * xb[(c0 >> np.uint64(0)) & _U16]
                s1 += as_f32(values[p + np.uint64(1)]) * xb[(c0 >> np.uint64(16)) & _U16]
                s2 += as_f32(values[p + np.uint64(2)]) * xb[(c0 >> np.uint64(32)) & _U16]
                s3 += as_f32(values[p + np.uint64(3)]) * xb[(c0 >> np.uint64(48)) & _U16]
                s4 += as_f32(values[p + np.uint64(4)]) * xb[(c1 >> np.uint64(0)) & _U16]
                s5 += as_f32(values[p + np.uint64(5)]) * xb[(c1 >> np.uint64(16)) & _U16]
                s6 += as_f32(values[p + np.uint64(6)]) * xb[(c1 >> np.uint64(32)) & _U16]
                s7 += as_f32(values[p + np.uint64(7)]) * xb[(c1 >> np.uint64(48)) & _U16]
                p += np.uint64(8)
                q += np.uint64(2)
        else:
            while p + np.uint64(8) <= p1:
                s0 += as_f32(values[p + np.uint64(0)]) * xb[col[p + np.uint64(0)]]
                s1 += as_f32(values[p + np.uint64(1)]) * xb[col[p + np.uint64(1)]]
                s2 += as_f32(values[p + np.uint64(2)]) * xb[col[p + np.uint64(2)]]
                s3 += as_f32(values[p + np.uint64(3)]) * xb[col[p + np.uint64(3)]]
                s4 += as_f32(values[p + np.uint64(4)]) * xb[col[p + np.uint64(4)]]
                s5 += as_f32(values[p + np.uint64(5)]) * xb[col[p + np.uint64(5)]]
                s6 += as_f32(values[p + np.uint64(6)]) * xb[col[p + np.uint64(6)]]
                s7 += as_f32(values[p + np.uint64(7)]) * xb[col[p + np.uint64(7)]]
                p += np.uint64(8)
        while p < p1:
            s0 += as_f32(values[p]) * xb[col[p]]
            p += np.uint64(1)
        ob[i] = bias[i] + (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))


@njit(cache=True)
def _csr_rows_small(x, row_ptr, col, col4, values, bias, out, i0, i1):
    """Outputs ``i0 .. i1-1`` of every batch row (small batches: the non-zeros stay cached between rows)."""
    for bb in range(x.shape[0]):
        _csr_row(x[bb], row_ptr, col, col4, values, bias, out[bb], i0, i1)


@njit(cache=True)
def _csr_serial(x, row_ptr, col, col4, values, bias, out, tiled):
    n = row_ptr.shape[0] - 1
    if tiled:
        csr_rows_tile16(x, row_ptr, col, values, bias, out, np.int64(0), n)
    else:
        _csr_rows_small(x, row_ptr, col, col4, values, bias, out, np.int64(0), n)


@njit(cache=True, parallel=True)
def _csr_parallel(x, row_ptr, col, col4, values, bias, out, tiled):
    n = row_ptr.shape[0] - 1
    n_chunks = (n + _CSR_CHUNK - 1) // _CSR_CHUNK
    for ch in prange(n_chunks):
        i0 = ch * _CSR_CHUNK
        i1 = min(n, i0 + _CSR_CHUNK)
        if tiled:
            csr_rows_tile16(x, row_ptr, col, values, bias, out, i0, i1)
        else:
            _csr_rows_small(x, row_ptr, col, col4, values, bias, out, i0, i1)


@njit(cache=True)
def _transpose(src, dst, rows, cols):
    """``dst[j, i] = src[i, j]`` for ``i < rows``, ``j < cols``, in 16 x 16 tiles (both sides stay
    in L1; whole tiles with constant bounds, which LLVM unrolls: 71 -> 45 us for 64 x 1600)."""
    s_w = np.uint64(src.shape[1])
    d_w = np.uint64(dst.shape[1])
    sf = src.reshape(-1)
    df = dst.reshape(-1)
    r_n = np.uint64(rows)
    c_n = np.uint64(cols)
    sixteen = np.uint64(16)
    for r0 in range(np.uint64(0), r_n, sixteen):
        for c0 in range(np.uint64(0), c_n, sixteen):
            if r0 + sixteen <= r_n and c0 + sixteen <= c_n:
                for c in range(sixteen):
                    for r in range(sixteen):
                        df[(c0 + c) * d_w + r0 + r] = sf[(r0 + r) * s_w + c0 + c]
            else:
                for c in range(c0, min(c_n, c0 + sixteen)):
                    for r in range(r0, min(r_n, r0 + sixteen)):
                        df[c * d_w + r] = sf[r * s_w + c]


@njit(cache=True)
def _transpose_into(x, xt):
    """``xt[:, :batch] = x.T``, zeros past the batch."""
    n_b, n_in = x.shape
    xt[:, n_b:] = 0.0
    _transpose(x, xt, n_b, n_in)


@njit(cache=True)
def _transpose_back(out_t, out):
    """``out = out_t[:, :batch].T``."""
    n_b, n_out = out.shape
    _transpose(out_t, out, n_out, n_b)


# The drivers below take ``par`` and ``kchunks`` as None for one thread, not False: numba
# prunes a branch on a None-typed argument when it compiles, so a one-thread plan never
# compiles the parallel kernels (a cold benchmark stage: 115 -> 87 s).


@njit(cache=True)
def _kwta_rows(out, n_rows, n, k, idx_out, val_out, kchunks):
    """kWTA of the first ``n_rows`` rows; ``kchunks``: None (one thread) or the parallel task count."""
    if kchunks is None:
        kwinners._k_winners_serial(out[:n_rows], n, k, idx_out, val_out)
    else:
        kwinners._k_winners_parallel(out[:n_rows], n, k, idx_out, val_out, kchunks)


@njit(cache=True)
def _finish_rows(out, n_rows, bias, scale):
    """int8 weights: each output row's sums times the channel scale, plus the bias (the
    kernels started from zeros); nothing for other precisions (``scale`` empty)."""
    if scale.shape[0] > 0:
        for r in range(n_rows):
            finish_row(out[r], bias, scale)


@njit(cache=True)
def _blocks_tiles_kwta(x, xt, row_ptr, col, values, bias, out, tile, n, k, idx_out, val_out, post_bias, scale):
    """Tiled, one thread, with kWTA: one tile of ``tile`` batch rows at a time through transpose,
    every block row, int8's scale and kWTA, in buffers of one tile (``xt [in, tile]``, ``out
    [tile, out]``). Each tile reads the weights again (from L2), but the whole batch's
    transposed input and pre-kWTA outputs (800 KB at batch 64 on the reference MLP) are never
    written: measured on a batch after another network ran, about 100 us less at batch 64."""
    n_b = x.shape[0]
    keys, cand, ckeys, hist = kwinners._scratch_nb(n)
    for b0 in range(0, n_b, tile):
        b1 = min(n_b, b0 + tile)
        _transpose_into(x[b0:b1], xt)
        _blocks_serial(xt, row_ptr, col, values, bias, out, tile)
        _finish_rows(out, b1 - b0, post_bias, scale)
        for r in range(b1 - b0):
            kwinners.select_row(out[r], n, k, idx_out[b0 + r], val_out[b0 + r], keys, cand, ckeys, hist)


@njit(cache=True)
def _blocks_forward(x, xt, row_ptr, col, values, bias, out, tile, par, n, k, idx_out, val_out, kchunks,
                    post_bias, scale):
    """One call per layer: transpose if tiled, the block kernel, int8's scale, then kWTA if ``k > 0``."""
    if tile > 0:
        _transpose_into(x, xt)
        if par is None:
            _blocks_serial(xt, row_ptr, col, values, bias, out, tile)
        else:
            _blocks_parallel(xt, row_ptr, col, values, bias, out, tile)
    elif par is None:
        _blocks_serial(x, row_ptr, col, values, bias, out, tile)
    else:
        _blocks_parallel(x, row_ptr, col, values, bias, out, tile)
    _finish_rows(out, x.shape[0], post_bias, scale)
    if k > 0:
        _kwta_rows(out, x.shape[0], n, k, idx_out, val_out, kchunks)


@njit(cache=True)
def _csr_forward(x, xt, row_ptr, col, col4, values, bias, out_t, out, par, n, k, idx_out, val_out, kchunks,
                 post_bias, scale):
    """Like ``_blocks_forward`` for CSR: ``xt``/``out_t`` are used (tiled) when ``xt`` has rows."""
    if xt.shape[0] > 0:
        _transpose_into(x, xt)
        if par is None:
            _csr_serial(xt, row_ptr, col, col4, values, bias, out_t, True)
        else:
            _csr_parallel(xt, row_ptr, col, col4, values, bias, out_t, True)
        _transpose_back(out_t, out)
    elif par is None:
        _csr_serial(x, row_ptr, col, col4, values, bias, out, False)
    else:
        _csr_parallel(x, row_ptr, col, col4, values, bias, out, False)
    _finish_rows(out, x.shape[0], post_bias, scale)
    if k > 0:
        _kwta_rows(out, x.shape[0], n, k, idx_out, val_out, kchunks)


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
_NO_SCALE = np.empty(0, np.float32)
_NO_COL4 = np.empty(0, np.uint64)


def padded_rows(packed: RowCSR) -> tuple[RowCSR, np.ndarray]:
    """``packed`` with each row padded to a multiple of 8 entries (zero values at column 0), and
    its uint16 indices as words of four (uint64), for ``_csr_row``; wider indices: ``packed``
    as is, and an empty ``col4`` (plain index loads)."""
    if packed.col.dtype != np.uint16:
        return packed, _NO_COL4
    lengths = np.diff(packed.row_ptr.astype(np.int64))
    row_ptr = np.zeros(packed.n_out + 1, np.int64)
    row_ptr[1:] = np.cumsum(-(-lengths // 8) * 8)
    # entry j of row i moves by the growth of the rows before it
    place = np.arange(packed.col.size) + np.repeat(row_ptr[:-1] - packed.row_ptr[:-1].astype(np.int64), lengths)
    col = np.zeros(int(row_ptr[-1]), np.uint16)
    values = np.zeros(int(row_ptr[-1]), packed.values.dtype)
    col[place], values[place] = packed.col, packed.values
    rows = RowCSR(packed.n_out, packed.n_in, row_ptr.astype(np.uint32), col, values, packed.scale)
    return rows, col.view(np.uint64)


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
        # int8 weights: the kernels sum from zeros, the channel scale and the bias come after
        self.scale = _NO_SCALE if getattr(packed, "scale", None) is None else packed.scale
        kernel_bias = self.bias if self.scale is _NO_SCALE else np.zeros_like(self.bias)
        self._kernel_bias = padded_bias(kernel_bias, packed) if isinstance(packed, RowBlocks) else kernel_bias
        self._idx_dtype = index_dtype(packed.n_out)
        self._plans: dict[int, tuple] = {}
        # the kernels' copy of a CSR layout: rows padded to whole words of indices (``_csr_row``)
        self._rows, self._col4 = padded_rows(packed) if isinstance(packed, RowCSR) else (packed, _NO_COL4)
        if isinstance(packed, DenseRows):
            import torch

            self._torch = (torch.from_numpy(packed.weight), torch.from_numpy(self.bias))

    def _plan(self, batch: int) -> tuple:
        """Per batch size: the kernel's settings and its buffers (allocated once)."""
        plan = self._plans.get(batch)
        if plan is not None:
            return plan
        p = self.packed
        par = use_parallel(self.parallel, 2, p.nnz_stored * batch) or None  # None, not False: see the drivers
        kpar = self.k is not None and use_parallel(self.parallel, batch, KWTA_MACS_PER_UNIT * p.n_out * batch)
        if isinstance(p, RowBlocks):
            tile = BLOCKS_TILE if batch >= BLOCKS_TILE else 0
            # tiled with kWTA at one thread: tile by tile through everything (buffers of one tile)
            by_tile = bool(tile) and self.k is not None and not par and not kpar
            width = tile if by_tile else -(-batch // tile) * tile if tile else batch
            xt = aligned_empty((p.n_in, width) if tile else (0, 1))
            out = aligned_empty((width, p.n_out_padded))
            plan = ("blocks_by_tile" if by_tile else "blocks", tile, par, xt, out, None)
        elif isinstance(p, RowCSR):
            tiled = batch >= _CSR_TILE
            width = -(-batch // _CSR_TILE) * _CSR_TILE if tiled else 0
            xt = np.empty((p.n_in, width) if tiled else (0, 1), np.float32)
            out_t = np.empty((p.n_out, width) if tiled else (0, 1), np.float32)
            plan = ("csr", 0, par, xt, np.empty((batch, p.n_out), np.float32), out_t)
        else:
            plan = ("dense", 0, None, None, None, None)
        winners = (np.empty((batch, self.k), self._idx_dtype), np.empty((batch, self.k), np.float32)) if self.k else None
        plan = (*plan, winners, kwinners.row_chunks(batch) if kpar else None)
        self._plans[batch] = plan
        return plan

    def kernel_call(self, x, reuse: bool = False):
        """The one numba call this layer makes for ``x``: ``(kernel, args, result)``, where
        ``kernel(*args)`` writes ``result`` (the winners, or the padded output rows), or None
        for a dense layout (torch runs it). The engine binds it once per batch size to fixed
        buffers (a dispatch per layer per call costs microseconds at batch 1)."""
        batch = x.shape[0]
        kind, tile, par, xt, out, out_t, winners, kchunks = self._plan(batch)
        if kind == "dense":
            return None
        k = self.k or 0
        if not reuse and not k:
            out = np.empty_like(out)  # the result itself: fresh (with kWTA it is only scratch)
        if k:  # the winners: the plan's buffers with reuse (~0.5 us of allocations saved per call)
            idx, val = winners if reuse else (np.empty_like(winners[0]), np.empty_like(winners[1]))
        else:
            idx, val = _EMPTY_IDX[self._idx_dtype], _EMPTY_2D
        p = self.packed
        if kind == "blocks_by_tile":
            call = (_blocks_tiles_kwta, (x, xt, p.row_ptr, p.col, p.values, self._kernel_bias, out, tile, p.n_out, k,
                                         idx, val, self.bias, self.scale))
        elif kind == "blocks":
            call = (_blocks_forward, (x, xt, p.row_ptr, p.col, p.values, self._kernel_bias, out, tile, par, p.n_out, k,
                                      idx, val, kchunks, self.bias, self.scale))
        else:
            r = self._rows
            call = (_csr_forward, (x, xt, r.row_ptr, r.col, self._col4, r.values, self._kernel_bias, out_t, out, par,
                                   p.n_out, k, idx, val, kchunks, self.bias, self.scale))
        return (*call, (idx, val) if k else out)

    def __call__(self, x, reuse: bool = False):
        x = check_input(x, self.n_in)
        call = self.kernel_call(x, reuse)
        if call is None:
            return self._torch_forward(x)
        kernel, args, result = call
        kernel(*args)
        return result if self.k else unpadded(result, x.shape[0], self.n_out)

    def _torch_forward(self, x):
        import torch

        batch = x.shape[0]
        *_, winners, kchunks = self._plan(batch)
        with torch.inference_mode():
            out = torch.nn.functional.linear(torch.from_numpy(x), *self._torch).numpy()
        if not self.k:
            return out
        idx, val = np.empty_like(winners[0]), np.empty_like(winners[1])
        _kwta_rows(out, batch, self.n_out, self.k, idx, val, kchunks)
        return idx, val


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
