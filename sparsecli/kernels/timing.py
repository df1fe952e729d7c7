"""Measuring kernels fairly: warm-up, interleaved repetitions, median and IQR.

Interleaving (A B C A B C ...) spreads slow drifts of the machine (frequency,
other processes, cache state) over every contender instead of whichever ran
last; the median and interquartile range resist the outliers a shared machine
produces. The rotation of the starting contender removes order bias.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    """Seconds per call over ``n`` measured repetitions."""

    median_s: float
    q1_s: float
    q3_s: float
    n: int
    samples_s: tuple = field(default=(), repr=False, compare=False)  # in the order taken (round by round)

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def as_dict(self) -> dict:
        return {"median_s": self.median_s, "q1_s": self.q1_s, "q3_s": self.q3_s, "iqr_s": self.iqr_s, "n": self.n}


def summarize(samples_s) -> TimingStats:
    """Median and quartiles of per-call times in seconds."""
    a = np.asarray(samples_s, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("need a non-empty 1-D sequence of timings")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return TimingStats(float(med), float(q1), float(q3), int(a.size), tuple(float(v) for v in a))


def speedup(baseline: TimingStats, other: TimingStats) -> float:
    """How many times faster ``other`` is than ``baseline``, by medians."""
    return baseline.median_s / other.median_s


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and numba alike, so a comparison is fair."""
    import numba
    import torch

    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}], got {n}")
    torch.set_num_threads(n)
    numba.set_num_threads(n)


@contextmanager
def threads_restored():
    """Put torch's and numba's thread counts back as they were when the block ends."""
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def max_threads() -> int:
    """The most threads numba may use in this process (the cores it saw at start-up)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def warm_up(fn: Callable[[], object], calls: int = 3) -> None:
    """Run ``fn`` a few times: compilation, allocation and caches settle before timing."""
    for _ in range(calls):
        fn()


def interleaved_timings(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 50,
    warmup: int = 3,
    inner: int = 1,
    min_time_s: float = 0.0,
    sample_s: float | None = None,
) -> dict[str, TimingStats]:
    """Time several zero-argument callables against each other.

    Args:
        fns: name -> callable, each doing one unit of work.
        repeats: measured rounds; each round times every callable once, in rotated order.
        warmup: untimed calls of each callable first.
        inner: calls per timed sample (the sample is their mean), for very short calls.
        min_time_s: keep adding rounds until the slowest callable has been timed this long.
        sample_s: at most as many calls per sample as make the slowest callable's sample about
            this long (at least one): ``inner`` is for very short calls, and a call that alone
            lasts ``sample_s`` needs no company (judged by each callable's last warm-up call).

    Returns:
        name -> per-call ``TimingStats``.
    """
    if not fns:
        raise ValueError("nothing to time")
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, inner >= 1, warmup >= 0; got {repeats}, {inner}, {warmup}")
    names = list(fns)
    clock = time.perf_counter
    slowest = 0.0
    for name in names:
        warm_up(fns[name], max(0, warmup - 1))
        t0 = clock()
        if warmup:
            fns[name]()
        slowest = max(slowest, clock() - t0)
    if sample_s is not None and warmup:
        inner = max(1, min(inner, round(sample_s / max(slowest, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    total = dict.fromkeys(names, 0.0)
    rounds = 0
    while rounds < repeats or max(total.values()) < min_time_s:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            t0 = clock()
            for _ in range(inner):
                fn()
            dt = clock() - t0
            samples[name].append(dt / inner)
            total[name] += dt
        rounds += 1
    return {name: summarize(samples[name]) for name in names}
