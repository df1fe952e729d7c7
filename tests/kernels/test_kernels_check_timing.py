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
