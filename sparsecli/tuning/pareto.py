"""Pareto dominance, the non-dominated front, hypervolume and NSGA-II ordering.

Points are tuples in *maximisation form* (see ``objectives.Objectives.vector``). Fronts in a
tuning run hold tens of points in 2-4 objectives, so exact, simple algorithms are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates (duplicates all stay)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Volume of the region dominated by ``points`` and dominating ``reference``.

    Points not strictly better than the reference in every objective add nothing. Exact,
    by slicing along the last objective (O(n^d); fine for a tuning front).
    """
    inside = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference))]
    return _slice_volume(inside, tuple(reference))


def _slice_volume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in points) - reference[0]
    ordered = sorted(points, key=lambda p: p[-1], reverse=True)
    volume = 0.0
    for i, point in enumerate(ordered):
        floor = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        height = point[-1] - floor
        if height > 0:
            volume += height * _slice_volume([p[:-1] for p in ordered[: i + 1]], reference[:-1])
    return volume


def nondomination_ranks(points: Sequence[Point]) -> list[int]:
    """0 for the front, 1 for the front once the first is removed, and so on."""
    ranks = [-1] * len(points)
    remaining = list(range(len(points)))
    rank = 0
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)]
        for i in front:
            ranks[i] = rank
        remaining = [i for i in remaining if ranks[i] < 0]
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance: boundary points are infinitely far, others sum normalised gaps."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        lo, hi = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if hi == lo:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distance[here] += (points[after][k] - points[before][k]) / (hi - lo)
    return distance


def constrained_order(points: Sequence[Point], violations: Sequence[float]) -> list[int]:
    """Indices best first, as NSGA-II's constrained selection (Deb et al., 2002) ranks them.

    Feasible points (violation 0) come first, by non-domination rank and then by crowding
    distance (more isolated first); infeasible ones follow, smallest violation first.
    """
    feasible = [i for i, v in enumerate(violations) if v <= 0]
    infeasible = sorted((i for i, v in enumerate(violations) if v > 0), key=lambda i: (violations[i], i))
    sub = [points[i] for i in feasible]
    ranks = nondomination_ranks(sub)
    crowding = [0.0] * len(sub)
    for rank in set(ranks):
        members = [j for j, r in enumerate(ranks) if r == rank]
        for j, d in zip(members, crowding_distances([sub[j] for j in members])):
            crowding[j] = d
    order = sorted(range(len(sub)), key=lambda j: (ranks[j], -crowding[j], feasible[j]))
    return [feasible[j] for j in order] + infeasible
