"""Calibrate a CPU target (`cpu-local`) by a short microbenchmark on this machine.

Only the fields the target file lists under `calibrated:` are replaced; the rest
keep their file values. What is measured and how it maps to the roofline model
(cost_cpu.py):

    processor, cores, isa,                   detected from the OS (/proc/cpuinfo model
    simd_width_bits, clock_ghz               name and flags, sched affinity, cpufreq max)
    memory_bandwidth_gbps   bytes of a large fp32 GEMV (matrix > typical L3) / time
    memory_efficiency       1.0, since the bandwidth above is already achieved, not peak
    efficiency.dense        fp32 GEMM flop/s / peak_flops
    efficiency.sparse_dense CSR gather kernel (y = sum w * x[col]) flop/s / peak_flops
    efficiency.sparse_sparse CSC kernel over active input columns only, flop/s / peak_flops
    layer_overhead_us       time of a tiny GEMV (per-call overhead)

Each timing is the best of `repeats` runs after one warm-up run. The kernels are
NumPy (with whatever BLAS it links), so the factors describe NumPy-level kernels on
this machine; a faster kernel library needs its own calibration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparsecli.targets.schema import CpuTarget

_GEMM = (1024, 1024, 256)  # m, k, n
_GEMV = (4096, 4096)  # 64 MiB of fp32
_SPARSE = (4096, 4096, 0.05, 0.1)  # rows, cols, weight density, input density
_ISA_FLAGS = {"avx512f", "avx512_vnni", "avx512_bf16", "avx2", "fma", "avx", "sse4_2", "asimd", "sve"}


def calibrate(target: CpuTarget, repeats: int = 5, seed: int = 0) -> CpuTarget:
    """A copy of `target` whose `calibrated` fields are measured here (about a second)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    detected = _detect(target)
    probe = target.model_copy(update=detected)
    peak = probe.peak_flops("fp32")
    started = time.perf_counter()

    m, k, n = _GEMM
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    gemm_flops = 2 * m * k * n / _best(lambda: a @ b, repeats)

    rows, cols = _GEMV
    w, x = rng.standard_normal((rows, cols), dtype=np.float32), rng.standard_normal(cols, dtype=np.float32)
    gemv_bytes_per_s = (w.nbytes + x.nbytes + rows * 4) / _best(lambda: w @ x, repeats)

    spmv_flops, spss_flops = _sparse_rates(rng, repeats)

    tiny_w, tiny_x = np.ones((8, 8), dtype=np.float32), np.ones(8, dtype=np.float32)
    overhead_s = _best(lambda: tiny_w @ tiny_x, max(repeats, 50))

    measured = {
        "gemm_gflops": gemm_flops / 1e9,
        "gemv_gbps": gemv_bytes_per_s / 1e9,
        "sparse_dense_gflops": spmv_flops / 1e9,
        "sparse_sparse_gflops": spss_flops / 1e9,
        "call_overhead_us": overhead_s * 1e6,
        "peak_gflops_nominal": peak / 1e9,
        "seconds": time.perf_counter() - started,
        "numpy": np.__version__,
    }
    values = {
        **detected,
        "memory_bandwidth_gbps": gemv_bytes_per_s / 1e9,
        "memory_efficiency": 1.0,
        "layer_overhead_us": overhead_s * 1e6,
        "efficiency.dense": _fraction(gemm_flops / peak),
        "efficiency.sparse_dense": _fraction(spmv_flops / peak),
        "efficiency.sparse_sparse": _fraction(spss_flops / peak),
    }
    update = {f: values[f] for f in target.calibrated if "." not in f}
    efficiency = {f.split(".", 1)[1]: values[f] for f in target.calibrated if f.startswith("efficiency.")}
    if efficiency:
        update["efficiency"] = target.efficiency.model_copy(update=efficiency)
    calibrated = CpuTarget.model_validate({**target.model_dump(), **_dump(update)})
    calibrated._source = target._source
    calibrated._measured = measured
    return calibrated


def _sparse_rates(rng: np.random.Generator, repeats: int) -> tuple[float, float]:
    """flop/s of a CSR gather (sparse-dense) and an active-column CSC kernel (sparse-sparse)."""
    rows, cols, weight_density, input_density = _SPARSE
    row_idx, col_idx = np.nonzero(rng.random((rows, cols), dtype=np.float32) < weight_density)
    values = rng.standard_normal(row_idx.size, dtype=np.float32)
    x = rng.standard_normal(cols, dtype=np.float32)
    dense_time = _best(lambda: np.bincount(row_idx, weights=values * x[col_idx], minlength=rows), repeats)

    order = np.argsort(col_idx, kind="stable")  # CSC: non-zeros grouped by input column
    csc_rows, csc_values = row_idx[order], values[order]
    col_ptr = np.concatenate(([0], np.cumsum(np.bincount(col_idx, minlength=cols))))
    active = np.sort(rng.choice(cols, int(cols * input_density), replace=False))
    x_sparse = np.zeros(cols, dtype=np.float32)
    x_sparse[active] = x[active]

    def sparse_sparse() -> np.ndarray:
        idx = np.flatnonzero(x_sparse)
        starts, lengths = col_ptr[idx], col_ptr[idx + 1] - col_ptr[idx]
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        positions = offsets + np.arange(lengths.sum())
        contrib = csc_values[positions] * np.repeat(x_sparse[idx], lengths)
        return np.bincount(csc_rows[positions], weights=contrib, minlength=rows)

    touched = int((col_ptr[active + 1] - col_ptr[active]).sum())
    sparse_time = _best(sparse_sparse, repeats)
    return 2 * row_idx.size / dense_time, 2 * touched / sparse_time


def _detect(target: CpuTarget) -> dict:
    """Hardware facts from the OS, for the fields listed as calibrated."""
    found: dict = {}
    try:
        found["cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        found["cores"] = os.cpu_count() or target.cores
    flags = _cpu_flags()
    if flags:
        found["isa"] = sorted(flags & _ISA_FLAGS)
        found["simd_width_bits"] = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    model = _cpu_model()
    if model:
        found["processor"] = model
    clock = _max_clock_ghz()
    if clock:
        found["clock_ghz"] = clock
    return {k: v for k, v in found.items() if k in target.calibrated}


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def _max_clock_ghz() -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        mhz = [float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz")]
        return max(mhz) / 1e3 if mhz else None
    except (OSError, ValueError):
        return None


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def _fraction(value: float) -> float:
    """Clamp a measured efficiency into the schema's (0, 1] range."""
    return min(1.0, max(value, 1e-6))


def _dump(update: dict) -> dict:
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in update.items()}
