"""CPU inference kernels for sparse networks: dense, sparse-dense, sparse-sparse, k-winners.

Importing this package is cheap: it imports neither numba nor torch and compiles
nothing (only llvmlite's binding, about 30 ms, to read the CPU's features). Names are
resolved lazily from submodules on first access, and numba kernels compile on their
first call (``cache=True`` keeps them on disk).

The numba environment defaults below must be in place before numba compiles
anything, so they are set here, the one module every kernel import passes
through; an explicit setting by the user always wins.
"""

from __future__ import annotations

import importlib
import os
import sys

# SLP vectorization turns the unrolled 16-wide block updates into AVX2 FMAs;
# numba leaves it off by default. The workqueue threading layer avoids a second
# OpenMP runtime fighting torch's for the same cores.
_NUMBA_DEFAULTS = {
    "NUMBA_SLP_VECTORIZE": "1",
    "NUMBA_THREADING_LAYER": "workqueue",
}
for _name, _value in _NUMBA_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def _full_width_vectors() -> None:
    """LLVM tunes Intel's AVX-512 CPUs (Skylake-X to Sapphire Rapids) to prefer 256-bit vectors,
    so the 16-lane block updates became pairs of 8-lane FMAs; ask for the full width (measured
    on an Intel Xeon: the reference MLP's first layer at batch 64, 361 -> 229 us). A no-op on AMD
    (Zen 4 and 5 prefer 512 already) and where AVX-512 is absent; a user's CPU setting wins."""
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_full_width_vectors()
if "numba" in sys.modules:  # numba came first: have it re-read the environment (before anything compiles)
    sys.modules["numba"].core.config.reload_config()

_EXPORTS = {
    # formats
    "BLOCK": "formats",
    "ColumnBlocks": "formats",
    "ColumnCSC": "formats",
    "DenseColumns": "formats",
    "RowBlocks": "formats",
    "RowCSR": "formats",
    "DenseRows": "formats",
    "block_fill": "formats",
    "detect_structure": "formats",
    "pack_columns": "formats",
    "pack_rows": "formats",
    # kernels
    "dense_linear": "dense",
    "sparse_dense_linear": "sparse_dense",
    "sparse_sparse_linear": "sparse_sparse",
    "active_from_dense": "sparse_sparse",
    "k_winners": "kwinners",
    "kwta_dense_torch": "kwinners",
    "scatter_dense": "kwinners",
    "sparse_sparse_linear_kwta": "sparse_sparse",
    # engine
    "LayerSpec": "engine",
    "SparseEngine": "engine",
    "DenseEngine": "engine",
    # checks and timing
    "KernelCheck": "check",
    "check_against_dense": "check",
    "TimingStats": "timing",
    "interleaved_timings": "timing",
    "summarize": "timing",
    "set_threads": "timing",
    "warm_up": "timing",
    "speedup": "timing",
    "max_threads": "timing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
