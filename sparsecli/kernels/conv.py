"""Convolution, max-pooling and 2-d kWTA kernels for sparse CNNs (channels-last maps).

Maps are kept channels last (HWC) and flattened: unit ``(y, x, c)`` of an ``H x W x C`` map
is ``(y * W + x) * C + c``, so the 16 output channels of a 16x1 weight block are contiguous.

* **dense input** (the first conv, or one after a ReLU): the weight, viewed as
  ``[C_out, kh * kw * C_in]``, is packed into 16x1 blocks over output channels; each block
  is one (tap, input channel) and 16 output channels. The kernel keeps 16 channels x 8
  output positions of sums in registers (``conv_rows_tile8``, generated) over a zero-padded
  input map, so no bounds checks run in the loop. Where a 2x2 max-pool follows the conv, the
  8 positions are two pooling windows and only their maxima are stored
  (``conv_rows_tile8_pool2``): the map before pooling is never written.
* **sparse input** (a conv fed a kWTA layer's winners): each active input unit adds
  ``value * W[:, c, dy, dx]`` into every output position it reaches: work proportional to
  the active units, not to the map. With 16x1-block weights (16 output channels kept or
  dropped together; stride 1) only the kept blocks are added (``_conv_blocks_row``): per input
  channel and tap, a list of kept blocks, clipped per input to the taps that land inside the
  output map, so weight sparsity counts too. Otherwise, for stride 1 and 16-64 output
  channels it runs output-stationary (``conv_gather*``, generated): the active inputs are
  bucketed by pixel, and each output position sums the active inputs of its receptive field
  in registers, the weight stored as one ``C_out``-vector per (tap, input channel): with
  unstructured masks at the densities sparse CNNs use (20-50%) nearly every 16-channel block
  holds a non-zero, and a branch per block costs more than multiplying the zeros. Any other
  stride scatters.
* ``max_pool`` (kernel = stride = ``p``, floor like torch), ``relu``, and kWTA over the
  whole map (global) or across channels at each position (local, k per position); pooling
  and kWTA run in one call per layer, with the layer's own scratch.

Buffers and packed weights start at 64-byte boundaries (``aligned``): a 16-lane access that
straddles two cache lines costs up to twice as much.

``ConvSpec`` describes one conv block; ``prepare`` packs it (one public way per kind of
input, used by the engine and the one-shot ``conv2d``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sparsecli.kernels import kwinners
from sparsecli.kernels._unrolled import (conv_gather16, conv_gather32, conv_gather48, conv_gather64, conv_rows_tile8,
                                         conv_rows_tile8_pool2)
from sparsecli.kernels.codegen import CONV_TILE
from sparsecli.kernels.formats import BLOCK, ColumnBlocks, aligned, aligned_empty, index_dtype, pack_columns, pack_rows
from sparsecli.kernels.precision import as_f32

_FASTMATH = {"contract"}


@dataclass(frozen=True, eq=False)
class ConvSpec:
    """One conv block: conv (batch norm folded in), then kWTA or ReLU, and max-pooling.

    ``pool_first``: pool, then the activation (the paper's GSC network); otherwise the
    activation, then pool (sparsecli's ``ConvBlock``; the same for ReLU). ``k``: kWTA winners
    over the whole pooled/unpooled map (``local=False``) or across channels at each position
    (``local=True``); ``k=None`` and ``relu=False``: no activation.
    """

    weight: np.ndarray  # float32 [C_out, C_in, kh, kw], zeros where masked
    bias: np.ndarray | None = None
    padding: int = 0
    stride: int = 1
    pool: int = 1
    k: int | None = None
    local: bool = False
    pool_first: bool = False
    relu: bool = False

    def __post_init__(self) -> None:
        w = np.ascontiguousarray(np.asarray(self.weight, dtype=np.float32))
        if w.ndim != 4 or 0 in w.shape:
            raise ValueError(f"conv weight must be 4-D [out, in, kh, kw], got shape {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError("conv weight contains NaN or infinite values")
        object.__setattr__(self, "weight", w)
        b = np.zeros(w.shape[0], np.float32) if self.bias is None else np.ascontiguousarray(self.bias, np.float32)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
        object.__setattr__(self, "bias", b)
        for name in ("padding", "stride", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "padding" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'padding' else 1}, got {value!r}")
        if self.k is not None and self.relu:
            raise ValueError("a conv block has kWTA (k) or ReLU, not both")

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def density(self) -> float:
        return float(np.count_nonzero(self.weight)) / self.weight.size

    def conv_shape(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width of the conv alone."""
        kh, kw = self.weight.shape[2:]
        ho = (h + 2 * self.padding - kh) // self.stride + 1
        wo = (w + 2 * self.padding - kw) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"a {kh}x{kw} conv (padding {self.padding}) does not fit a {h}x{w} input")
        return ho, wo

    def out_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, H, W)`` after the whole block."""
        ho, wo = self.conv_shape(shape[1], shape[2])
        return self.c_out, ho // self.pool, wo // self.pool

    def act_units(self, shape: tuple[int, int, int]) -> int:
        """Units kWTA competes over (per position if local)."""
        c, h, w = self.out_shape(shape) if self.pool_first else (self.c_out, *self.conv_shape(shape[1], shape[2]))
        return c if self.local else c * h * w

    def dense_macs(self, shape: tuple[int, int, int]) -> int:
        ho, wo = self.conv_shape(shape[1], shape[2])
        return ho * wo * self.weight[0].size * self.c_out


# ---------------------------------------------------------------- numba kernels


@njit(cache=True)
def _pad_hwc(x, h, w, c, pad, xp):
    """Row ``x`` (flat HWC ``h x w x c``) into ``xp`` (flat HWC, ``pad`` zeros around)."""
    wp = w + 2 * pad
    xp[:] = 0.0
    for y in range(h):
        src = y * w * c
        dst = ((y + pad) * wp + pad) * c
        for i in range(w * c):
            xp[dst + i] = x[src + i]


@njit(cache=True)
def _nchw_to_hwc(x, c, h, w, out):
    """Row ``x`` flat CHW (torch's layout) into ``out`` flat HWC."""
    for ch in range(c):
        for p in range(h * w):
            out[p * c + ch] = x[ch * h * w + p]


@njit(cache=True)
def _conv_dense_row(xp, pos_base, row_ptr, col_off, values, bias, tmp, out, c_out, pool2):
    """One row's conv (``pool2``: 2x2-max-pooled as it goes) into ``out`` (flat HWC); straight
    into it when ``c_out`` is whole blocks and no tile is padding."""
    c_pad = tmp.shape[1]
    direct = c_pad == c_out and out.shape[0] >= tmp.size
    dst = out[: tmp.size].reshape(tmp.shape) if direct else tmp
    for cb in range(row_ptr.shape[0] - 1):
        if pool2:
            conv_rows_tile8_pool2(xp, pos_base, row_ptr, col_off, values, bias, dst, cb)
        else:
            conv_rows_tile8(xp, pos_base, row_ptr, col_off, values, bias, dst, cb)
    if not direct:
        n_pos = out.shape[0] // c_out
        for p in range(n_pos):
            for ch in range(c_out):
                out[p * c_out + ch] = tmp[p, ch]


@njit(cache=True)
def _conv_dense_serial(x, hwc_in, h, w, c, pad, xp, pos_base, row_ptr, col_off, values, bias, tmp, out, c_out, pool2):
    """Dense-input conv for every batch row; ``hwc_in``: ``x`` rows already HWC (else CHW)."""
    for b in range(x.shape[0]):
        if hwc_in:
            _pad_hwc(x[b], h, w, c, pad, xp[0])
        else:
            _nchw_to_hwc(x[b], c, h, w, xp[1])
            _pad_hwc(xp[1], h, w, c, pad, xp[0])
        _conv_dense_row(xp[0], pos_base, row_ptr, col_off, values, bias, tmp[0], out[b], c_out, pool2)


@njit(cache=True, parallel=True)
def _conv_dense_parallel(x, hwc_in, h, w, c, pad, xp, pos_base, row_ptr, col_off, values, bias, tmp, out, c_out,
                         pool2):
    n = x.shape[0]
    n_chunks = xp.shape[0] // 2
    size = (n + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        for b in range(ch * size, min(n, (ch + 1) * size)):
            if hwc_in:
                _pad_hwc(x[b], h, w, c, pad, xp[2 * ch])
            else:
                _nchw_to_hwc(x[b], c, h, w, xp[2 * ch + 1])
                _pad_hwc(xp[2 * ch + 1], h, w, c, pad, xp[2 * ch])
            _conv_dense_row(xp[2 * ch], pos_base, row_ptr, col_off, values, bias, tmp[ch], out[b], c_out, pool2)


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _axpy16(out, o, w, q, v):
    """``out[o:o+16] += v * w[q:q+16]`` (float32 or bf16 weights), written as 16 lines so LLVM's SLP vectorizer makes one
    vector FMA of them (a loop over a runtime channel count does not vectorize here)."""
    y0 = out[o + np.uint64(0)] + as_f32(w[q + np.uint64(0)]) * v
    y1 = out[o + np.uint64(1)] + as_f32(w[q + np.uint64(1)]) * v
    y2 = out[o + np.uint64(2)] + as_f32(w[q + np.uint64(2)]) * v
    y3 = out[o + np.uint64(3)] + as_f32(w[q + np.uint64(3)]) * v
    y4 = out[o + np.uint64(4)] + as_f32(w[q + np.uint64(4)]) * v
    y5 = out[o + np.uint64(5)] + as_f32(w[q + np.uint64(5)]) * v
    y6 = out[o + np.uint64(6)] + as_f32(w[q + np.uint64(6)]) * v
    y7 = out[o + np.uint64(7)] + as_f32(w[q + np.uint64(7)]) * v
    y8 = out[o + np.uint64(8)] + as_f32(w[q + np.uint64(8)]) * v
    y9 = out[o + np.uint64(9)] + as_f32(w[q + np.uint64(9)]) * v
    y10 = out[o + np.uint64(10)] + as_f32(w[q + np.uint64(10)]) * v
    y11 = out[o + np.uint64(11)] + as_f32(w[q + np.uint64(11)]) * v
    y12 = out[o + np.uint64(12)] + as_f32(w[q + np.uint64(12)]) * v
    y13 = out[o + np.uint64(13)] + as_f32(w[q + np.uint64(13)]) * v
    y14 = out[o + np.uint64(14)] + as_f32(w[q + np.uint64(14)]) * v
    y15 = out[o + np.uint64(15)] + as_f32(w[q + np.uint64(15)]) * v
    out[o + np.uint64(0)] = y0
    out[o + np.uint64(1)] = y1
    out[o + np.uint64(2)] = y2
    out[o + np.uint64(3)] = y3
    out[o + np.uint64(4)] = y4
    out[o + np.uint64(5)] = y5
    out[o + np.uint64(6)] = y6
    out[o + np.uint64(7)] = y7
    out[o + np.uint64(8)] = y8
    out[o + np.uint64(9)] = y9
    out[o + np.uint64(10)] = y10
    out[o + np.uint64(11)] = y11
    out[o + np.uint64(12)] = y12
    out[o + np.uint64(13)] = y13
    out[o + np.uint64(14)] = y14
    out[o + np.uint64(15)] = y15


@njit(cache=True, inline="always")
def _max4_16(x, s0, s1, s2, s3, out, o):
    """``out[o:o+16]`` = elementwise max of ``x`` at four offsets (16 lines: one vector op each)."""
    m0 = max(max(x[s0 + np.uint64(0)], x[s1 + np.uint64(0)]), max(x[s2 + np.uint64(0)], x[s3 + np.uint64(0)]))
    m1 = max(max(x[s0 + np.uint64(1)], x[s1 + np.uint64(1)]), max(x[s2 + np.uint64(1)], x[s3 + np.uint64(1)]))
    m2 = max(max(x[s0 + np.uint64(2)], x[s1 + np.uint64(2)]), max(x[s2 + np.uint64(2)], x[s3 + np.uint64(2)]))
    m3 = max(max(x[s0 + np.uint64(3)], x[s1 + np.uint64(3)]), max(x[s2 + np.uint64(3)], x[s3 + np.uint64(3)]))
    m4 = max(max(x[s0 + np.uint64(4)], x[s1 + np.uint64(4)]), max(x[s2 + np.uint64(4)], x[s3 + np.uint64(4)]))
    m5 = max(max(x[s0 + np.uint64(5)], x[s1 + np.uint64(5)]), max(x[s2 + np.uint64(5)], x[s3 + np.uint64(5)]))
    m6 = max(max(x[s0 + np.uint64(6)], x[s1 + np.uint64(6)]), max(x[s2 + np.uint64(6)], x[s3 + np.uint64(6)]))
    m7 = max(max(x[s0 + np.uint64(7)], x[s1 + np.uint64(7)]), max(x[s2 + np.uint64(7)], x[s3 + np.uint64(7)]))
    m8 = max(max(x[s0 + np.uint64(8)], x[s1 + np.uint64(8)]), max(x[s2 + np.uint64(8)], x[s3 + np.uint64(8)]))
    m9 = max(max(x[s0 + np.uint64(9)], x[s1 + np.uint64(9)]), max(x[s2 + np.uint64(9)], x[s3 + np.uint64(9)]))
    m10 = max(max(x[s0 + np.uint64(10)], x[s1 + np.uint64(10)]), max(x[s2 + np.uint64(10)], x[s3 + np.uint64(10)]))
    m11 = max(max(x[s0 + np.uint64(11)], x[s1 + np.uint64(11)]), max(x[s2 + np.uint64(11)], x[s3 + np.uint64(11)]))
    m12 = max(max(x[s0 + np.uint64(12)], x[s1 + np.uint64(12)]), max(x[s2 + np.uint64(12)], x[s3 + np.uint64(12)]))
    m13 = max(max(x[s0 + np.uint64(13)], x[s1 + np.uint64(13)]), max(x[s2 + np.uint64(13)], x[s3 + np.uint64(13)]))
    m14 = max(max(x[s0 + np.uint64(14)], x[s1 + np.uint64(14)]), max(x[s2 + np.uint64(14)], x[s3 + np.uint64(14)]))
    m15 = max(max(x[s0 + np.uint64(15)], x[s1 + np.uint64(15)]), max(x[s2 + np.uint64(15)], x[s3 + np.uint64(15)]))
    out[o + np.uint64(0)] = m0
    out[o + np.uint64(1)] = m1
    out[o + np.uint64(2)] = m2
    out[o + np.uint64(3)] = m3
    out[o + np.uint64(4)] = m4
    out[o + np.uint64(5)] = m5
    out[o + np.uint64(6)] = m6
    out[o + np.uint64(7)] = m7
    out[o + np.uint64(8)] = m8
    out[o + np.uint64(9)] = m9
    out[o + np.uint64(10)] = m10
    out[o + np.uint64(11)] = m11
    out[o + np.uint64(12)] = m12
    out[o + np.uint64(13)] = m13
    out[o + np.uint64(14)] = m14
    out[o + np.uint64(15)] = m15


@njit(cache=True, fastmath=_FASTMATH)
def _conv_sparse_row(idx, val, wc, col_nz, unit_yxc, kh, kw, pad, stride, ho, wo, c_in, c_out, bias, out):
    """``out`` (flat HWC ``ho x wo x c_out``) = bias + each active input's weight slices.

    ``unit_yxc[u]`` = (y, x, channel) of input unit ``u``: table look-ups, not divisions
    (three integer divisions per unit and two per tap cost more than the adds).
    """
    for p in range(ho * wo):
        for ch in range(c_out):
            out[p * c_out + ch] = bias[ch]
    for a in range(idx.shape[0]):
        v = val[a]
        if v == 0.0:
            continue
        yxc = unit_yxc[idx[a]]
        iy = np.int64(yxc[0]) + pad
        ix = np.int64(yxc[1]) + pad
        ci = np.int64(yxc[2])
        if stride == 1:
            dy0 = max(0, iy - ho + 1)
            dy1 = min(kh, iy + 1)
            dx0 = max(0, ix - wo + 1)
            dx1 = min(kw, ix + 1)
            for dy in range(dy0, dy1):
                row = (iy - dy) * wo
                for dx in range(dx0, dx1):
                    j = (dy * kw + dx) * c_in + ci
                    if not col_nz[j]:
                        continue
                    wj = wc[j]
                    base = (row + ix - dx) * c_out
                    if c_out % 16 == 0:
                        for c0 in range(np.uint64(0), np.uint64(c_out), np.uint64(16)):
                            _axpy16(out, np.uint64(base) + c0, wj, c0, v)
                    else:
                        for ch in range(c_out):
                            out[base + ch] += v * wj[ch]
            continue
        for dy in range(kh):
            ny = iy - dy
            if ny < 0 or ny % stride != 0 or ny // stride >= ho:
                continue
            for dx in range(kw):
                nx = ix - dx
                if nx < 0 or nx % stride != 0 or nx // stride >= wo:
                    continue
                j = (dy * kw + dx) * c_in + ci
                if not col_nz[j]:
                    continue
                wj = wc[j]
                base = ((ny // stride) * wo + nx // stride) * c_out
                for ch in range(c_out):
                    out[base + ch] += v * wj[ch]


@njit(cache=True, inline="always")
def _divmod_small(u, d, inv_d):
    """``divmod(u, d)`` for ``0 <= u < 2**31``, ``1 <= d <= 65536`` by a float64 reciprocal
    (``inv_d = 1 / d``), exact: ``(u + 0.5) / d`` lies at least ``0.5 / d`` from an integer, far
    beyond the rounding error. An integer division costs several times as much, and a look-up
    table of every unit's coordinates misses the cache on a network's first call after others
    ran (measured: the first call of the block conv 178 us with a table, 97 us computed)."""
    q = np.int64((np.float64(u) + 0.5) * inv_d)
    return q, u - q * d


@njit(cache=True, fastmath=_FASTMATH)
def _conv_blocks_row(idx, val, tap_ptr, ent_off, ent_val, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    """Sparse input, 16x1-block weights, stride 1: each active input adds the kept blocks of the
    taps that land inside the output map (clipped per input: near the border fewer taps land, and
    every block added is useful work). Input channel ``c``'s kept blocks are ordered by tap (``dy``,
    ``dx``): ``tap_ptr[(c * kh + dy) * kw + dx]`` is where tap ``(dy, dx)``'s start, so a run of
    rows ``dy0..dy1`` with every ``dx`` is one contiguous range, one branch-free loop (a clipped
    ``dx`` needs a loop per ``dy``). ``ent_off`` = the block's offset from the input's own position
    in ``out``. ``c_out`` is a multiple of 16."""
    inv_c = 1.0 / c_in
    inv_w = 1.0 / w
    for p in range(ho * wo):
        for ch in range(c_out):
            out[p * c_out + ch] = bias[ch]
    for a in range(idx.shape[0]):
        v = val[a]
        if v == 0.0:
            continue
        pix, ci = _divmod_small(np.int64(idx[a]), c_in, inv_c)
        y, x = _divmod_small(pix, w, inv_w)
        iy = y + pad
        ix = x + pad
        rb = ci * kh * kw
        dy0 = max(0, iy - ho + 1)
        dy1 = min(kh, iy + 1)
        dx0 = max(0, ix - wo + 1)
        dx1 = min(kw, ix + 1)
        if dy0 >= dy1 or dx0 >= dx1:
            continue
        base = (iy * wo + ix) * c_out
        if dx0 == 0 and dx1 == kw:
            for q in range(np.uint64(tap_ptr[rb + dy0 * kw]), np.uint64(tap_ptr[rb + dy1 * kw])):
                _axpy16(out, np.uint64(base - ent_off[q]), ent_val[q], np.uint64(0), v)
            continue
        for dy in range(dy0, dy1):
            r = rb + dy * kw
            for q in range(np.uint64(tap_ptr[r + dx0]), np.uint64(tap_ptr[r + dx1])):
                _axpy16(out, np.uint64(base - ent_off[q]), ent_val[q], np.uint64(0), v)


@njit(cache=True)
def _conv_blocks_serial(idx, val, tap_ptr, ent_off, ent_val, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    for b in range(idx.shape[0]):
        _conv_blocks_row(idx[b], val[b], tap_ptr, ent_off, ent_val, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out[b])


@njit(cache=True, parallel=True)
def _conv_blocks_parallel(idx, val, tap_ptr, ent_off, ent_val, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    for b in prange(idx.shape[0]):
        _conv_blocks_row(idx[b], val[b], tap_ptr, ent_off, ent_val, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out[b])


def _tap_blocks(cols: ColumnBlocks, kh: int, kw: int, c_in: int, c_out: int, wo: int):
    """``_conv_blocks_row``'s layout from ``pack_columns`` of the ``[C_out, kh*kw*C_in]`` weight:
    per input channel and tap, the kept blocks with their offsets in the output map."""
    ptr, offs, vals = [0], [], []
    for ci in range(c_in):
        for dy in range(kh):
            for dx in range(kw):
                j = (dy * kw + dx) * c_in + ci
                for q in range(int(cols.col_ptr[j]), int(cols.col_ptr[j + 1])):
                    offs.append((dy * wo + dx) * c_out - int(cols.block_row[q]) * BLOCK)
                    vals.append(cols.values[q])
                ptr.append(len(offs))
    values = np.stack(vals) if vals else np.zeros((0, BLOCK), cols.values.dtype)
    return np.array(ptr, np.uint32), np.array(offs, np.int64), aligned(values)


@njit(cache=True)
def _bucket(idx, val, h, w, c_in, ptr, ent_e, ent_v):
    """One row's active inputs grouped by pixel: pixel ``p`` owns entries ``ptr[p]:ptr[p+1]``;
    ``ent_e`` = the entry's column x ``c_in`` + its channel (its offset within its map row)."""
    n_pix = h * w
    inv_c = 1.0 / c_in
    inv_w = 1.0 / w
    ptr[:] = 0
    for a in range(idx.shape[0]):
        if val[a] != 0.0:
            ptr[_divmod_small(np.int64(idx[a]), c_in, inv_c)[0] + 1] += 1
    for p in range(n_pix):
        ptr[p + 1] += ptr[p]
    fill = ptr[:n_pix].copy()
    for a in range(idx.shape[0]):
        if val[a] != 0.0:
            p, ci = _divmod_small(np.int64(idx[a]), c_in, inv_c)
            ent_e[fill[p]] = _divmod_small(p, w, inv_w)[1] * c_in + ci
            ent_v[fill[p]] = val[a]
            fill[p] += 1


@njit(cache=True)
def _conv_gather_row(idx, val, wc, h, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    ptr = np.empty(h * w + 1, np.int64)
    ent_e = np.empty(idx.shape[0], np.int64)
    ent_v = np.empty(idx.shape[0], np.float32)
    _bucket(idx, val, h, w, c_in, ptr, ent_e, ent_v)
    if c_out == 64:
        conv_gather64(ptr, ent_e, ent_v, wc, bias, h, w, c_in, kh, kw, pad, ho, wo, out)
    elif c_out == 48:
        conv_gather48(ptr, ent_e, ent_v, wc, bias, h, w, c_in, kh, kw, pad, ho, wo, out)
    elif c_out == 32:
        conv_gather32(ptr, ent_e, ent_v, wc, bias, h, w, c_in, kh, kw, pad, ho, wo, out)
    else:
        conv_gather16(ptr, ent_e, ent_v, wc, bias, h, w, c_in, kh, kw, pad, ho, wo, out)


@njit(cache=True)
def _conv_gather_serial(idx, val, wc, h, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    for b in range(idx.shape[0]):
        _conv_gather_row(idx[b], val[b], wc, h, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out[b])


@njit(cache=True, parallel=True)
def _conv_gather_parallel(idx, val, wc, h, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out):
    for b in prange(idx.shape[0]):
        _conv_gather_row(idx[b], val[b], wc, h, w, c_in, kh, kw, pad, ho, wo, c_out, bias, out[b])


@njit(cache=True)
def _conv_sparse_serial(idx, val, wc, col_nz, unit_yxc, kh, kw, pad, stride, ho, wo, c_in, c_out, bias, out):
    for b in range(idx.shape[0]):
        _conv_sparse_row(idx[b], val[b], wc, col_nz, unit_yxc, kh, kw, pad, stride, ho, wo, c_in, c_out, bias, out[b])


@njit(cache=True, parallel=True)
def _conv_sparse_parallel(idx, val, wc, col_nz, unit_yxc, kh, kw, pad, stride, ho, wo, c_in, c_out, bias, out):
    for b in prange(idx.shape[0]):
        _conv_sparse_row(idx[b], val[b], wc, col_nz, unit_yxc, kh, kw, pad, stride, ho, wo, c_in, c_out, bias,
                         out[b])


@njit(cache=True)
def _max_pool_row(x, h, w, c, p, out):
    """``out`` (flat HWC ``h//p x w//p x c``) = max over ``p x p`` windows of ``x`` (flat HWC)."""
    ho = h // p
    wo = w // p
    for oy in range(ho):
        for ox in range(wo):
            o = (oy * wo + ox) * c
            s0 = ((oy * p) * w + ox * p) * c
            if p == 2:
                s1 = s0 + c
                s2 = s0 + w * c
                s3 = s2 + c
                if c % 16 == 0:
                    for c0 in range(0, c, 16):
                        _max4_16(x, np.uint64(s0 + c0), np.uint64(s1 + c0), np.uint64(s2 + c0), np.uint64(s3 + c0),
                                 out, np.uint64(o + c0))
                else:
                    for ch in range(c):
                        out[o + ch] = max(max(x[s0 + ch], x[s1 + ch]), max(x[s2 + ch], x[s3 + ch]))
                continue
            for ch in range(c):
                m = x[s0 + ch]
                for dy in range(p):
                    for dx in range(p):
                        m = max(m, x[((oy * p + dy) * w + ox * p + dx) * c + ch])
                out[o + ch] = m


@njit(cache=True)
def _max_pool(x, h, w, c, p, out):
    for b in range(x.shape[0]):
        _max_pool_row(x[b], h, w, c, p, out[b])


@njit(cache=True)
def _relu(x):
    for b in range(x.shape[0]):
        xb = x[b]
        for i in range(xb.shape[0]):
            xb[i] = max(xb[i], np.float32(0.0))


@njit(cache=True)
def _kwta_local(x, n_pos, c, k, idx_out, val_out):
    """``k`` winners across channels at each position; indices into the flat map."""
    scratch = kwinners._scratch_nb(c)
    keys, cand, ckeys, hist = scratch
    loc_i = np.empty(k, np.uint32)
    loc_v = np.empty(k, np.float32)
    for b in range(x.shape[0]):
        xb = x[b]
        for p in range(n_pos):
            kwinners.select_row(xb[p * c : (p + 1) * c], c, k, loc_i, loc_v, keys, cand, ckeys, hist)
            for t in range(k):
                idx_out[b, p * k + t] = p * c + loc_i[t]
                val_out[b, p * k + t] = loc_v[t]


@njit(cache=True)
def _pool_kwta_row(xb, h, w, c, p, k, local, pooled, idx_out, val_out, scratch, loc_i, loc_v):
    """Pool (if ``p > 1``), then kWTA over the whole map or across channels per position; one call
    per layer instead of one per op (each costs a numba dispatch and a Python wrapper)."""
    row = xb
    if p > 1:
        _max_pool_row(xb, h, w, c, p, pooled)
        row = pooled
    n = (h // p) * (w // p) * c
    keys, cand, ckeys, hist = scratch
    if not local:
        kwinners.select_row(row, n, k, idx_out, val_out, keys, cand, ckeys, hist)
        return
    for q in range(n // c):
        kwinners.select_row(row[q * c : (q + 1) * c], c, k, loc_i, loc_v, keys, cand, ckeys, hist)
        for t in range(k):
            idx_out[q * k + t] = q * c + loc_i[t]
            val_out[q * k + t] = loc_v[t]


@njit(cache=True)
def _pool_kwta_serial(x, h, w, c, p, k, local, pooled, idx_out, val_out, scratch):
    """``scratch``: the layer's own ``kwinners._scratch_nb`` arrays, kept warm between calls."""
    loc_i, loc_v = np.empty(k, np.uint32), np.empty(k, np.float32)
    for b in range(x.shape[0]):
        _pool_kwta_row(x[b], h, w, c, p, k, local, pooled[b], idx_out[b], val_out[b], scratch, loc_i, loc_v)


@njit(cache=True, parallel=True)
def _pool_kwta_parallel(x, h, w, c, p, k, local, pooled, idx_out, val_out, n_chunks):
    size = (x.shape[0] + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        scratch = kwinners._scratch_nb(pooled.shape[1])
        loc_i, loc_v = np.empty(k, np.uint32), np.empty(k, np.float32)
        for b in range(ch * size, min(x.shape[0], (ch + 1) * size)):
            _pool_kwta_row(x[b], h, w, c, p, k, local, pooled[b], idx_out[b], val_out[b], scratch, loc_i, loc_v)


@njit(cache=True)
def _winners_pool_collect(idx, val, h, w, c, p, dense, pooled, idx_out, val_out):
    """kWTA, then pool: scatter the winners into a zero map, pool it, keep the non-zeros.

    Rows with fewer non-zeros than ``idx_out``'s width are padded with value 0 (skipped).
    """
    n = h * w * c
    m = (h // p) * (w // p) * c
    for b in range(idx.shape[0]):
        dense[:n] = 0.0
        for t in range(idx.shape[1]):
            dense[idx[b, t]] = val[b, t]
        _max_pool_row(dense, h, w, c, p, pooled)
        n_kept = 0
        for i in range(m):
            if pooled[i] != 0.0:
                idx_out[b, n_kept] = i
                val_out[b, n_kept] = pooled[i]
                n_kept += 1
        for t in range(n_kept, idx_out.shape[1]):
            idx_out[b, t] = 0
            val_out[b, t] = 0.0


# ---------------------------------------------------------------- packing


def _dense_input_pack(spec: ConvSpec, shape, structure: str, precision: str = "fp32", pool2: bool = False):
    """The dense-input kernel's layout; ``pool2``: positions in fours, one 2x2 pooling window each
    (``conv_rows_tile8_pool2``), and the rows it writes are the pooled positions."""
    c_in, h, w = shape
    kh, kw = spec.weight.shape[2:]
    pad = spec.padding
    wp = w + 2 * pad
    # [C_out, kh, kw, C_in] flattened: column j = (dy * kw + dx) * C_in + ci
    w2 = np.ascontiguousarray(spec.weight.transpose(0, 2, 3, 1).reshape(spec.c_out, -1))
    packed = pack_rows(w2, "blocks16", precision)
    j = packed.col.astype(np.int64)
    dy, rest = np.divmod(j, kw * c_in)
    dx, ci = np.divmod(rest, c_in)
    col_off = ((dy * wp + dx) * c_in + ci).astype(np.uint32)
    ho, wo = spec.conv_shape(h, w)
    if pool2:
        n_rows = (ho // 2) * (wo // 2)
        n_rows_pad = -(-n_rows // (CONV_TILE // 4)) * (CONV_TILE // 4)
        py, px = np.divmod(np.arange(n_rows_pad) % n_rows, wo // 2)
        oy = (2 * py[:, None] + np.array([0, 0, 1, 1])).reshape(-1)
        ox = (2 * px[:, None] + np.array([0, 1, 0, 1])).reshape(-1)
    else:
        n_rows = ho * wo
        n_rows_pad = -(-n_rows // CONV_TILE) * CONV_TILE
        oy, ox = np.divmod(np.arange(n_rows_pad) % n_rows, wo)
    pos_base = ((oy * spec.stride * wp + ox * spec.stride) * c_in).astype(np.uint32)
    bias = np.zeros(packed.n_out_padded, np.float32)
    bias[: spec.c_out] = spec.bias
    return packed, col_off, pos_base, bias, (ho, wo), n_rows_pad


class ConvLayer:
    """A conv block packed once: ``layer(h)`` maps its input to its output.

    Input: dense rows (flat CHW for the network's input with ``chw_input``, else flat HWC)
    or, for ``sparse_input``, active ``(indices, values)`` into the flat HWC input map.
    Output: dense flat HWC rows, or the kWTA winners as ``(indices, values)``.
    """

    def __init__(self, spec: ConvSpec, shape: tuple[int, int, int], sparse_input: bool, chw_input: bool = False,
                 structure: str = "auto", parallel: bool | None = None, precision: str = "fp32"):
        if shape[0] != spec.c_in:
            raise ValueError(f"conv takes {spec.c_in} input channels, got a map with {shape[0]}")
        self.spec, self.shape, self.sparse_input, self.chw_input = spec, tuple(shape), sparse_input, chw_input
        self.parallel = parallel
        c_in, h, w = shape
        self.conv_hw = spec.conv_shape(h, w)
        self.out_shape = spec.out_shape(shape)
        kh, kw = spec.weight.shape[2:]
        self._pool2 = False
        if sparse_input:
            wc = aligned(spec.weight.transpose(2, 3, 1, 0).reshape(kh * kw * c_in, spec.c_out))
            self._wc = wc
            self._col_nz = (wc != 0).any(axis=1)
            self.packed = wc
            # 16x1 blocks over output channels: scatter only the kept blocks (weight sparsity used);
            # otherwise stride 1 and 16..64 output channels: the register-tiled gather form
            # (both find an input's coordinates with _divmod_small: widths and channels <= 65536)
            fast = spec.stride == 1 and max(w, c_in) <= 65536
            self._blocks = None
            if fast and spec.c_out % BLOCK == 0 and structure in ("auto", "blocks16"):
                cols = pack_columns(wc.T, structure, precision)
                if isinstance(cols, ColumnBlocks):
                    self.packed = cols
                    self._blocks = _tap_blocks(cols, kh, kw, c_in, spec.c_out, self.conv_hw[1])
            self._gather = self._blocks is None and fast and spec.c_out in (16, 32, 48, 64)
            if self._blocks is None and not self._gather:  # the generic scatter's coordinate table
                y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c_in), indexing="ij")
                self._unit_yxc = np.ascontiguousarray(np.stack([y, x, ch], axis=-1).reshape(-1, 3).astype(np.int32))
        else:
            # 2x2 max-pooling in the conv's registers where it comes straight after the conv (max
            # commutes with ReLU): the conv map before pooling is never written
            ho, wo = self.conv_hw
            self._pool2 = spec.pool == 2 and (spec.pool_first or spec.k is None) and min(ho, wo) >= 2
            self.packed, self._col_off, self._pos_base, self._bias_pad, _, self._n_pos_pad = _dense_input_pack(
                spec, shape, structure, precision, self._pool2)
            self._values = aligned(self.packed.values)
        ho, wo = self.conv_hw
        if spec.k is not None:
            units = spec.act_units(shape)
            self.k = kwinners.check_k(spec.k, units)
        else:
            self.k = None
        self.n_conv = int(np.prod(self.out_shape)) if self._pool2 else ho * wo * spec.c_out
        self._bufs: dict[int, dict] = {}

    def block_work_per_input(self) -> float:
        """Multiply-adds one active input costs the kept-block sparse-input conv: its channel's
        kept blocks (16 each) over the taps that land inside the output map, averaged over the
        input's positions and channels (for cost models)."""
        if self._blocks is None:
            raise ValueError("this layer does not run the kept-block sparse-input conv")
        c_in, h, w = self.shape
        kh, kw = self.spec.weight.shape[2:]
        ho, wo = self.conv_hw
        pad = self.spec.padding
        kept = np.diff(self._blocks[0].astype(np.int64)).reshape(c_in, kh, kw)
        # taps (dy, dx) landing inside for input row y / column x: 0 <= y + pad - dy < ho
        rows = np.array([[0 <= y + pad - dy < ho for dy in range(kh)] for y in range(h)], float).mean(axis=0)
        cols = np.array([[0 <= x + pad - dx < wo for dx in range(kw)] for x in range(w)], float).mean(axis=0)
        return 16.0 * float((kept.mean(axis=0) * rows[:, None] * cols[None, :]).sum())

    def _buf(self, batch: int) -> dict:
        b = self._bufs.get(batch)
        if b is None:
            c_in, h, w = self.shape
            ho, wo = self.conv_hw
            pad = self.spec.padding
            chunks = kwinners.row_chunks(batch)
            b = {"conv": aligned_empty((batch, self.n_conv))}
            if not self.sparse_input:
                n_xp = (h + 2 * pad) * (w + 2 * pad) * c_in
                b["xp"] = aligned_empty((2 * chunks, max(n_xp, h * w * c_in)))
                b["tmp"] = aligned_empty((chunks, self._n_pos_pad, self.packed.n_out_padded))
            c, hh, ww = self.out_shape
            if self.spec.pool > 1 and not self._pool2:
                b["pooled"] = aligned_empty((batch, c * hh * ww))
            b["par"] = self.parallel is not False and chunks > 1 and batch > 1
            if self.k is not None and (self.spec.pool_first or self.spec.pool == 1):  # kWTA's winners
                n = c * hh * ww
                width = self.k * (hh * ww if self.spec.local else 1)
                b["winners"] = (np.empty((batch, width), index_dtype(n)), np.empty((batch, width), np.float32))
                b["scratch"] = kwinners._scratch_nb(n)
            self._bufs[batch] = b
        return b

    def __call__(self, h, reuse: bool = False):
        spec = self.spec
        c_in, hh, ww = self.shape
        ho, wo = self.conv_hw
        if self.sparse_input:
            idx, val = h
            batch = idx.shape[0]
        else:
            batch = h.shape[0]
        buf = self._buf(batch)
        conv = buf["conv"] if reuse else aligned_empty(buf["conv"].shape)
        kh, kw = spec.weight.shape[2:]
        if self.sparse_input and self._blocks is not None:
            kernel = _conv_blocks_parallel if buf["par"] else _conv_blocks_serial
            kernel(idx, val, *self._blocks, ww, c_in, kh, kw, spec.padding, ho, wo, spec.c_out, spec.bias, conv)
        elif self.sparse_input and self._gather:
            kernel = _conv_gather_parallel if buf["par"] else _conv_gather_serial
            kernel(idx, val, self._wc, hh, ww, c_in, kh, kw, spec.padding, ho, wo, spec.c_out, spec.bias, conv)
        elif self.sparse_input:
            kernel = _conv_sparse_parallel if buf["par"] else _conv_sparse_serial
            kernel(idx, val, self._wc, self._col_nz, self._unit_yxc, kh, kw, spec.padding, spec.stride, ho, wo,
                   c_in, spec.c_out, spec.bias, conv)
        else:
            p = self.packed
            kernel = _conv_dense_parallel if buf["par"] else _conv_dense_serial
            kernel(h, not self.chw_input, hh, ww, c_in, spec.padding, buf["xp"], self._pos_base, p.row_ptr,
                   self._col_off, self._values, self._bias_pad, buf["tmp"], conv, spec.c_out, self._pool2)
            if self._pool2:  # conv holds the pooled map
                return self._activate(conv, batch, buf, reuse, self.out_shape[1:], 1)
        return self._activate(conv, batch, buf, reuse, self.conv_hw, spec.pool)

    def _activate(self, conv, batch, buf, reuse, hw, pool):
        """Pooling (``pool``) and the activation of the ``hw`` map ``conv``."""
        spec = self.spec
        ho, wo = hw
        c = spec.c_out

        def pooled(x):
            if pool == 1:
                return x
            out = buf["pooled"] if reuse else aligned_empty(buf["pooled"].shape)
            _max_pool(x, ho, wo, c, pool, out)
            return out

        if spec.k is None:
            x = pooled(conv)
            if spec.relu:
                _relu(x)
            return x
        if spec.pool_first or pool == 1:
            pooled_buf = buf["pooled"] if pool > 1 else conv
            idx, val = buf["winners"] if reuse else (np.empty_like(buf["winners"][0]), np.empty_like(buf["winners"][1]))
            if buf["par"]:
                _pool_kwta_parallel(conv, ho, wo, c, pool, self.k, spec.local, pooled_buf, idx, val,
                                    kwinners.row_chunks(batch))
            else:
                _pool_kwta_serial(conv, ho, wo, c, pool, self.k, spec.local, pooled_buf, idx, val, buf["scratch"])
            return idx, val
        idx, val = _kwta(conv, ho * wo, c, self.k, spec.local)
        m = (ho // pool) * (wo // pool) * c
        width = min(idx.shape[1], m)
        idx_out = np.empty((batch, width), index_dtype(m))
        val_out = np.empty((batch, width), np.float32)
        _winners_pool_collect(idx, val, ho, wo, c, pool, np.empty(ho * wo * c, np.float32),
                              np.empty(m, np.float32), idx_out, val_out)
        return idx_out, val_out


def _kwta(x, n_pos: int, c: int, k: int, local: bool):
    """kWTA over flat HWC rows: global (k over the map) or local (k across channels per position)."""
    if not local:
        return kwinners.k_winners(x, k)
    n = n_pos * c
    idx = np.empty((x.shape[0], n_pos * k), index_dtype(n))
    val = np.empty((x.shape[0], n_pos * k), np.float32)
    _kwta_local(x, n_pos, c, k, idx, val)
    return idx, val


def prepare(spec: ConvSpec, shape: tuple[int, int, int], sparse_input: bool = False, chw_input: bool = False,
            structure: str = "auto", parallel: bool | None = None, precision: str = "fp32") -> ConvLayer:
    """Pack a conv block for an input map of ``shape`` ``(C, H, W)``: dense or sparse input.

    ``precision="bf16"`` applies to the dense-input kernel's blocks and the sparse-input kept
    blocks (the gather kernel's per-tap channel vectors stay float32). int8 is not built for
    conv layers (its channel scale would be ignored)."""
    if precision == "int8":
        raise ValueError("precision int8 is not supported for conv layers yet; use fp32 or bf16")
    return ConvLayer(spec, shape, sparse_input, chw_input, structure, parallel, precision)


def hwc_to_chw_columns(c: int, h: int, w: int) -> np.ndarray:
    """For a flattened ``C x H x W`` map: ``perm[i]`` = the CHW (torch) column of HWC unit ``i``."""
    ch, y, x = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    chw = (ch * h * w + y * w + x).transpose(1, 2, 0).reshape(-1)
    return chw


def conv2d(x, spec: ConvSpec, shape=None) -> np.ndarray:
    """One conv block on dense NCHW input ``x`` ``[batch, C, H, W]``: float32 ``[batch, C', H', W']`` (NCHW).

    kWTA winners come back scattered into dense maps. For tests and one-off use; the engine
    keeps maps channels-last between layers.
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 4:
        raise ValueError(f"x must be [batch, C, H, W], got shape {x.shape}")
    shape = tuple(x.shape[1:])
    layer = ConvLayer(spec, shape, sparse_input=False, chw_input=True)
    out = layer(x.reshape(x.shape[0], -1))
    c, h, w = layer.out_shape
    if isinstance(out, tuple):
        out = kwinners.scatter_dense(*out, c * h * w)
    return np.ascontiguousarray(out.reshape(x.shape[0], h, w, c).transpose(0, 3, 1, 2))


def active_input_conv2d(idx, val, spec: ConvSpec, shape) -> np.ndarray:
    """The sparse-input conv alone (no activation, no pool): active units of a flat HWC map in,
    float32 ``[batch, H'*W'*C']`` (flat HWC) out."""
    plain = ConvSpec(spec.weight, spec.bias, spec.padding, spec.stride)
    return ConvLayer(plain, shape, sparse_input=True)((np.ascontiguousarray(idx), np.ascontiguousarray(val, np.float32)))


BLOCK_CHANNELS = BLOCK
