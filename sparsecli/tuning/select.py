"""Picking the one Pareto point that ``train`` will use (``tune.select``).

- ``max_accuracy``: the most accurate front point (ties: the sparser in weights).
- ``max_sparsity``: the front point with the highest weight sparsity (ties: the more accurate).
- ``min_latency``: the front point with the lowest value of the first latency objective
  (``latency_us`` or ``cpu_latency_us``; ties: the more accurate): "the fastest network that
  meets every threshold".
- ``knee``: the balanced compromise. Each objective is normalised from the hypervolume
  reference point (its threshold, or the metric's worst value; 0) to the front's best value
  (1), so a coordinate measures the share of what was gained *above the threshold* that a
  point keeps; the point nearest the ideal point (all 1s), by Euclidean distance, wins
  (ties: the earlier trial). A one-point front is its own knee. Normalising over the front's
  own range instead (min-max) would put every point of a two-point front at distance 1 from
  the ideal: a tie, whatever the trade-off. Where the reference is not below the front's
  worst value (a min objective's worst case, say), that worst value is the 0.

Every rule is deterministic for a given front, so ``best_params.yaml`` follows from
``pareto.csv`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sparsecli.tune_metrics import LATENCIES
from sparsecli.tuning.objectives import Objectives

RULES = ("max_accuracy", "max_sparsity", "min_latency", "knee")


def select(results: Sequence[dict], objectives: Objectives, rule: str) -> int:
    """Index into ``results`` (the front's results, in trial order) of the chosen point."""
    if not results:
        raise ValueError("cannot select from an empty front")
    if rule == "max_accuracy":
        return max(range(len(results)), key=lambda i: (results[i]["accuracy"], results[i]["weight_sparsity"], -i))
    if rule == "max_sparsity":
        return max(range(len(results)), key=lambda i: (results[i]["weight_sparsity"], results[i]["accuracy"], -i))
    if rule == "min_latency":
        name = next(m for i, m in enumerate(objectives.metrics) if objectives.kind(i) in LATENCIES)
        return min(range(len(results)), key=lambda i: (results[i][name], -results[i]["accuracy"], i))
    if rule == "knee":
        points = [objectives.vector(r) for r in results]
        return knee(points, objectives.reference(points))
    raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")


def knee(points: Sequence[Sequence[float]], reference: Sequence[float] | None = None) -> int:
    """The point nearest the ideal, each objective scaled from ``reference`` (0) to the front's best (1).

    Points are in maximisation form; without a reference, the front's worst value is the 0
    (min-max normalisation).
    """
    dims = range(len(points[0]))
    worst = [min(p[k] for p in points) for k in dims]
    lo = worst if reference is None else [min(reference[k], worst[k]) for k in dims]
    hi = [max(p[k] for p in points) for k in dims]

    def distance(p) -> float:
        gaps = [(1.0 - (p[k] - lo[k]) / (hi[k] - lo[k])) if hi[k] > lo[k] else 0.0 for k in dims]
        return math.sqrt(sum(g * g for g in gaps))

    return min(range(len(points)), key=lambda i: (distance(points[i]), i))
