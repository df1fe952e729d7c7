"""A quick timing of the model's dense torch forward on this machine.

It stands beside the `cpu-local` prediction as its `measured` counterpart until the
benchmark stage measures every kernel properly: the full model (batch norm and kWTA
included) in eval mode, one input batch per batch size (test samples, repeated if the
split is smaller), a few warm-up runs, then the median of `repeats` timed runs, on
`threads` intra-op threads (1 by default: on a shared machine, a tiny network timed
with several threads mostly measures thread wake-ups).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

WARMUP = 3


def time_forward(
    model: nn.Module, x: torch.Tensor, batch_sizes: Sequence[int], repeats: int, threads: int = 1
) -> dict[str, dict]:
    """{str(batch): {"median_s", "min_s", "repeats", "threads"}} for a dense forward of `model`."""
    import torch

    model.eval()
    results = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = _time(model, x, batch_sizes, repeats)
    finally:
        torch.set_num_threads(previous)
    return results


def _time(model: nn.Module, x: torch.Tensor, batch_sizes: Sequence[int], repeats: int) -> dict[str, dict]:
    import torch

    results = {}
    with torch.no_grad():
        for batch in batch_sizes:
            reps = -(-batch // len(x))
            inputs = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].contiguous()
            for _ in range(WARMUP):
                model(inputs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(inputs)
                times.append(time.perf_counter() - start)
            results[str(batch)] = {
                "median_s": statistics.median(times),
                "min_s": min(times),
                "repeats": repeats,
                "threads": torch.get_num_threads(),
            }
    return results
