"""Reduced-precision weights: bf16 stored as its 16 bits, or int8 with a per-output-channel
scale, widened to float32 in the kernels.

At batch 1 the sparse kernels are bound by the bytes of the non-zeros they stream, so
half the bytes per weight is the point. A bf16 value is the top 16 bits of a float32
(same sign and exponent, 7 mantissa bits), so widening it is a 16-bit shift and a
bit-cast: one ``vpmovzxwd`` + ``vpslld`` per 16 weights once LLVM vectorizes.
Rounding to bf16 is round-to-nearest-even, as hardware converters do. Sums stay float32.

int8 stores ``round(w / scale)`` per output channel (``scale = max |w| / 127`` of the
channel's row, symmetric, no zero point): a quarter of float32's bytes. A kernel sums the
integers times float32 inputs (exact widening, ``vpmovsxbd`` + ``vcvtdq2ps``) and multiplies
each output by its channel's scale once at the end, before the bias (``scale`` on the packed
format; the kernels' ``finish`` step).

``as_f32(v)`` is the one place the kernels read a weight: the identity for float32
weights (compiled away), the widening for uint16 (bf16) and int8 ones, so every kernel runs
each precision from one source.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

PRECISIONS = ("fp32", "bf16", "int8")
INT8_MAX = 127


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def channel_scale(w: np.ndarray) -> np.ndarray:
    """int8 scale per output channel (row of ``w [out, in]``): ``max |w| / 127``; 1 for an all-zero row."""
    top = np.abs(np.asarray(w, np.float32)).max(axis=1)
    return np.where(top > 0, top / INT8_MAX, 1.0).astype(np.float32)


def int8_levels(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``round(w / scale)`` per row as float32 (exact integers in [-127, 127])."""
    return np.clip(np.rint(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.float32)


def quantize(values: np.ndarray, precision: str) -> np.ndarray:
    """Stored weight values for ``precision``: float32 as is, bf16 as uint16 bits, int8 from
    values already divided by their channel's scale (``int8_levels``)."""
    check_precision(precision)
    if precision == "fp32":
        return np.ascontiguousarray(values, np.float32)
    if precision == "int8":
        return np.ascontiguousarray(np.rint(values), np.int8)
    return to_bf16_bits(values)


def round_weight(w: np.ndarray, precision: str) -> np.ndarray:
    """``w [out, in]`` as the kernels see it at ``precision``, widened back to float32 (the
    reference that reduced-precision kernels are checked against)."""
    w = np.asarray(w, np.float32)
    if check_precision(precision) == "fp32":
        return w
    if precision == "bf16":
        return from_bf16_bits(to_bf16_bits(w)).reshape(w.shape)
    scale = channel_scale(w)
    return int8_levels(w, scale) * scale[:, None]


@intrinsic
def _bitcast_f32(typingctx, bits):
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def as_f32(v):
    """A stored weight as float32 (pure-Python reference; the kernels use the overload)."""
    return np.float32(v) if not isinstance(v, np.uint16) else from_bf16_bits(np.array([v]))[0]


@overload(as_f32, inline="always")
def _as_f32(v):
    if v == types.float32:
        return lambda v: v
    if v == types.uint16:
        return lambda v: _bitcast_f32(np.uint32(np.uint32(v) << np.uint32(16)))
    if v == types.int8:
        return lambda v: np.float32(v)
    return None


@njit(cache=True)
def finish_row(row, bias, scale):
    """``row = row * scale + bias`` when the weights carry a channel scale (int8; ``scale`` has
    the row's width); nothing otherwise (``scale`` empty: the bias was the sums' start)."""
    for i in range(scale.shape[0]):
        row[i] = row[i] * scale[i] + bias[i]


@njit(cache=True)
def start_row(row, bias, scale):
    """The sums' start: the bias (padding zeros), or zeros when ``finish_row`` adds it after scaling."""
    n = bias.shape[0] if scale.shape[0] == 0 else 0
    row[:n] = bias[:n]
    row[n:] = 0.0
