"""Reduced-precision weights: bf16 stored as its 16 bits, widened to float32 in the kernels.

At batch 1 the sparse kernels are bound by the bytes of the non-zeros they stream, so
half the bytes per weight is the point. A bf16 value is the top 16 bits of a float32
(same sign and exponent, 7 mantissa bits), so widening it is a 16-bit shift and a
bit-cast: one ``vpmovzxwd`` + ``vpslld`` per 16 weights once LLVM vectorizes.
Rounding to bf16 is round-to-nearest-even, as hardware converters do. Sums stay float32.

``as_f32(v)`` is the one place the kernels read a weight: the identity for float32
weights (compiled away), the widening for uint16 (bf16) ones, so every kernel runs
either precision from one source.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

PRECISIONS = ("fp32", "bf16")


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def quantize(values: np.ndarray, precision: str) -> np.ndarray:
    """Stored weight values for ``precision``: float32 as is, bf16 as uint16 bits."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return np.ascontiguousarray(values, np.float32) if precision == "fp32" else to_bf16_bits(values)


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
    return None
