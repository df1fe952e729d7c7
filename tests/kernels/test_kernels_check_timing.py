"""The agreement check and the timing helpers."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecli.kernels import check_against_dense, interleaved_timings, summarize
from sparsecli.kernels.timing import speedup


def test_check_accepts_rounding_and_rejects_errors():
    ref = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], np.float32)
    assert check_against_dense(ref + 1e-6, ref).ok
    bad = ref.copy()
    bad[1, 2] = 1.0  # changes the row's argmax
    check = check_against_dense(bad, ref)
    assert not check.ok and check.argmax_agreement == 0.5
    assert "MISMATCH" in str(check)
    assert not check_against_dense(ref * np.nan, ref).ok
    with pytest.raises(ValueError, match="shape"):
        check_against_dense(ref[:1], ref)


def test_check_counts_argmax_ties_within_tolerance_as_agreeing():
    ref = np.array([[1.0, 1.0 + 1e-7, 0.0]])
    out = np.array([[1.0 + 2e-7, 1.0, 0.0]])
    assert check_against_dense(out, ref).ok


def test_interleaved_timings_and_summary():
    calls = []
    stats = interleaved_timings({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=5, warmup=1)
    assert set(stats) == {"a", "b"} and stats["a"].n == 5
    assert calls.count("a") == 6 and calls[2:4] in (["a", "b"], ["b", "a"])
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median_s == 3.0 and s.iqr_s == pytest.approx(2.0)
    assert speedup(s, summarize([1.5])) == 2.0
    with pytest.raises(ValueError):
        interleaved_timings({})


def test_interleaved_timings_takes_one_call_per_sample_where_one_call_is_long_enough():
    import time

    calls = []

    def slow():  # 20 ms a call
        calls.append("slow")
        time.sleep(0.02)

    interleaved_timings({"slow": slow, "fast": lambda: None}, repeats=3, warmup=1, inner=4, sample_s=0.01)
    assert calls.count("slow") == 1 + 3  # the warm-up, then one call per sample
    calls.clear()
    interleaved_timings({"slow": slow, "fast": lambda: None}, repeats=3, warmup=1, inner=4, sample_s=0.2)
    assert calls.count("slow") == 1 + 3 * 4  # a 20-ms call is short against 0.2 s: inner stands


def test_bench_network_reports_reduced_precision_beside_torch_on_the_same_rounded_weights():
    """A bf16 or int8 row: the kernels' argmax agreement and dense torch's on the same rounded weights, both
    against fp32 torch; an fp32 row passes its check and has no rounded figure."""
    from sparsecli.kernels.engine import LayerSpec
    from sparsecli.kernels.measure import Network, bench_network

    rng = np.random.default_rng(9)
    w1 = (rng.standard_normal((48, 40)) * (rng.random((48, 40)) < 0.3)).astype(np.float32)
    w2 = rng.standard_normal((6, 48)).astype(np.float32)
    net = Network("mlp", "tiny", [LayerSpec(w1, None, 8), LayerSpec(w2)], [], (40,))
    x = rng.standard_normal((4, 40)).astype(np.float32)
    ax = rng.standard_normal((64, 40)).astype(np.float32)
    failures = []
    fp32 = bench_network(net, x, 1, 3, 1, failures, ax)
    assert not failures and fp32["argmax_agreement"] == 1.0 and "argmax_agreement_torch_rounded" not in fp32
    for precision in ("bf16", "int8"):
        row = bench_network(net, x, 1, 3, 1, failures, ax, precision)
        assert 0.0 <= row["argmax_agreement_torch_rounded"] <= 1.0 and row["times"]["sparse-sparse"] is not None
        assert abs(row["argmax_agreement"] - row["argmax_agreement_torch_rounded"]) <= 0.05, precision


def test_kernels_ask_for_full_width_vectors_on_avx512_unless_the_user_set_the_cpu():
    """LLVM tunes Intel's AVX-512 CPUs to 256-bit vectors; the package asks for 512 where the
    host has AVX-512, and leaves a user's own CPU setting alone."""
    import os
    import subprocess
    import sys

    from llvmlite import binding

    show = "import os, sparsecli.kernels; print(os.environ.get('NUMBA_CPU_FEATURES'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    chosen = subprocess.run([sys.executable, "-c", show], env=clean, capture_output=True, text=True).stdout.strip()
    if binding.get_host_cpu_features().get("avx512f"):
        assert chosen.endswith(",-prefer-256-bit") and "+avx512f" in chosen.split(",")
    else:
        assert chosen == "None"
    own = subprocess.run([sys.executable, "-c", show], env={**clean, "NUMBA_CPU_FEATURES": "+avx2"},
                         capture_output=True, text=True).stdout.strip()
    assert own == "+avx2"


def test_compiling_beside_runs_in_a_second_process_and_waits_for_it(tmp_path):
    """The benchmark stage compiles the reference CNNs' kernels there while it compiles the others."""
    import os

    from sparsecli.kernels.measure import compiling_beside
    from sparsecli.kernels.timing import max_threads

    if max_threads() < 2:
        pytest.skip("one CPU: nothing runs beside")
    marker = tmp_path / "pid"
    # the second process writes its pid: a spawned one (not this one), finished when the block ends
    code = f"import os, pathlib; pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))"
    with compiling_beside(exec, code):
        pass
    assert marker.read_text() != str(os.getpid())
    with compiling_beside((tmp_path / "missing").unlink):  # its error is not the caller's: compiled again there
        pass
