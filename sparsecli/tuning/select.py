"""Picking the one Pareto point that ``train`` will use (``tune.select``).

- ``max_accuracy``: the most accurate front point (ties: the sparser in weights).
- ``max_sparsity``: the front point with the highest weight sparsity (ties: the more accurate).
- ``knee``: the balanced compromise. Each objective is min-max normalised over the front
  (1 = the front's best value, 0 = its worst); the point nearest the ideal point (all 1s),
  by Euclidean distance, wins (ties: the earlier trial). A one-point front is its own knee.

Every rule is deterministic for a given front, so ``best_params.yaml`` follows from
``pareto.csv`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sparsecli.tuning.objectives import Objectives

RULES = ("max_accuracy", "max_sparsity", "knee")


def select(results: Sequence[dict], objectives: Objectives, rule: str) -> int:
    """Index into ``results`` (the front's results, in trial order) of the chosen point."""
    if not results:
        raise ValueError("cannot select from an empty front")
    if rule == "max_accuracy":
        return max(range(len(results)), key=lambda i: (results[i]["accuracy"], results[i]["weight_sparsity"], -i))
    if rule == "max_sparsity":
        return max(range(len(results)), key=lambda i: (results[i]["weight_sparsity"], results[i]["accuracy"], -i))
    if rule == "knee":
        return knee([objectives.vector(r) for r in results])
    raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")


def knee(points: Sequence[Sequence[float]]) -> int:
    """The point nearest the ideal after min-max normalising each objective (maximisation form)."""
    dims = range(len(points[0]))
    lo = [min(p[k] for p in points) for k in dims]
    hi = [max(p[k] for p in points) for k in dims]

    def distance(p) -> float:
        gaps = [(1.0 - (p[k] - lo[k]) / (hi[k] - lo[k])) if hi[k] > lo[k] else 0.0 for k in dims]
        return math.sqrt(sum(g * g for g in gaps))

    return min(range(len(points)), key=lambda i: (distance(points[i]), i))
