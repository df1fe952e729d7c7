"""What the compiled kernels target, and the machine they run on.

numba compiles for the host CPU by default (AVX-512 where it has it). The AVX2
path is the same code compiled for Haswell: set ``AVX2_ENV`` in a process's
environment before numba starts (``bench_kernels.py`` runs its avx2 rows in a
subprocess). ``NUMBA_CPU_NAME`` alone is not enough: numba keeps the host's
feature string unless ``NUMBA_CPU_FEATURES`` replaces it, so both are set.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

AVX2_ENV = {
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,"
    "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave",
}
PATHS = ("avx512", "avx2", "generic")


def target_features() -> str:
    """The LLVM feature string numba compiles with (``+avx512f,...``)."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    if config.CPU_NAME not in (None, "host"):
        return ""  # a named CPU without a feature string: the name's own features
    return get_host_cpu_features()


def simd_path() -> str:
    """``avx512``, ``avx2`` or ``generic``: the widest vector ISA the compiled kernels use."""
    from numba.core import config

    features = set(target_features().split(","))
    name = (config.CPU_NAME or "host").lower()
    if "+avx512f" in features or (not features - {""} and name in ("skylake-avx512", "icelake-server", "znver4", "znver5",
                                                                      "sapphirerapids")):
        return "avx512"
    if "+avx2" in features or (not features - {""} and name in ("haswell", "broadwell", "skylake", "znver2", "znver3")):
        return "avx2"
    return "generic"


def cpu_info() -> dict:
    """The CPU's model name, cores and SIMD flags (from /proc/cpuinfo where there is one)."""
    flags, model = [], None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    for line in cpuinfo:
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4"))]
        elif line.startswith("model name") and model is None:
            model = line.split(":", 1)[1].strip()
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "simd_flags": flags}


def machine() -> dict:
    """``cpu_info()`` with the SIMD path the kernels run, the library versions and the load average."""
    import numba
    import torch

    return {**cpu_info(), "path": simd_path(), "torch": torch.__version__, "numba": numba.__version__,
            "load_average": os.getloadavg()[0]}
