"""What a trial reports, and how a result is judged against the objectives and thresholds.

A trial result is a plain dict of metric name -> value (what the trainable passes to
``tune.report``). Objectives come from ``tune.objectives``: ``{metric, mode, threshold}``
(hardware metrics also name a target), each read from the result under its ``name``.
Everything here works in *maximisation form*: a ``min`` objective is negated, so "larger
is better" holds for every coordinate, and the same Pareto code serves all objectives.
Constraint-only objectives (``fits``) are not coordinates: they only make a result
infeasible (``requirements``).

The metrics themselves (names, ranges, which are settled after one epoch) are listed once,
in ``sparsecli.tune_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sparsecli.params import TuneObjective
from sparsecli.tune_metrics import ALL, CONSTRAINTS

ALWAYS_SETTLED = frozenset(name for name, metric in ALL.items() if metric.settled is True)


@dataclass(frozen=True)
class Objectives:
    """The objectives of one tuning run (picklable: Ray ships it to the searcher and scheduler)."""

    metrics: tuple[str, ...]  # the coordinates' names (result keys, CSV columns)
    modes: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    settled: tuple[bool, ...] = ()  # per coordinate: final at any epoch (default: as tune_metrics says)
    requirements: tuple[str, ...] = ()  # constraint-only results (fits): feasible when 1
    requirements_settled: tuple[bool, ...] = ()
    worst: tuple[float, ...] = ()  # per coordinate: the reference of a max objective without threshold
    nadir: tuple[bool, ...] = ()  # per coordinate: a min hardware objective without threshold, referenced at the worst point
    kinds: tuple[str, ...] = ()  # per coordinate: its metric (tune_metrics), where the name differs

    @classmethod
    def from_params(cls, objectives: list[TuneObjective], settled_metrics: frozenset[str] = ALWAYS_SETTLED) -> Objectives:
        """``settled_metrics``: the metrics final after one epoch for this model (``tune_metrics.settled``).
        A hardware metric is settled where its activation densities are: always for dense and
        sparse-dense execution (shapes and weight densities only), for sparse-sparse when the
        activation sparsity is (kWTA in every hidden layer)."""
        def settled(o: TuneObjective) -> bool:
            flag = ALL[o.metric].settled
            if flag == "activations":
                return "activation_sparsity" in settled_metrics or o.execution != "sparse-sparse"
            return flag is True or o.metric in settled_metrics

        coords = [o for o in objectives if o.metric not in CONSTRAINTS]
        required = [o for o in objectives if o.metric in CONSTRAINTS]
        return cls(tuple(o.name for o in coords), tuple(o.mode for o in coords), tuple(o.threshold for o in coords),
                   tuple(settled(o) for o in coords), tuple(o.name for o in required),
                   tuple(settled(o) for o in required), tuple(ALL[o.metric].worst for o in coords),
                   tuple(o.hardware and o.mode == "min" and o.threshold is None for o in coords),
                   tuple(o.metric for o in coords))

    @property
    def names(self) -> tuple[str, ...]:
        """Every result key the objectives read: the coordinates, then the requirements."""
        return self.metrics + self.requirements

    def kind(self, index: int) -> str:
        return self.kinds[index] if self.kinds else self.metrics[index]

    def is_settled(self, index: int) -> bool:
        """Whether coordinate ``index`` is final at any epoch."""
        if self.settled:
            return self.settled[index]
        return ALL[self.metrics[index]].settled is True

    def signs(self) -> tuple[float, ...]:
        return tuple(1.0 if mode == "max" else -1.0 for mode in self.modes)

    def vector(self, result: dict) -> tuple[float, ...]:
        """The objective values in maximisation form."""
        return tuple(sign * float(result[m]) for sign, m in zip(self.signs(), self.metrics))

    def constraints(self, result: dict, final: bool = True) -> dict[str, float]:
        """Optuna's convention: one value per threshold, feasible when <= 0.

        Relative to the threshold (``(threshold - value) / |threshold|`` for ``max``), so
        metrics of different scales (accuracy, MAC reduction) weigh alike in a violation sum.
        With ``final=False`` (a result short of full fidelity) only thresholds on settled
        metrics count: a short training's accuracy below the threshold says little about the
        full one's, while weight sparsity below it stays below it.
        """
        out = {}
        for i, (metric, mode, threshold) in enumerate(zip(self.metrics, self.modes, self.thresholds)):
            if threshold is None or not (final or self.is_settled(i)):
                continue
            gap = threshold - float(result[metric]) if mode == "max" else float(result[metric]) - threshold
            out[metric] = min(gap / max(abs(threshold), 1e-12), 1e12)  # a design that does not fit has inf latency
        for name, settled in zip(self.requirements, self.requirements_settled):
            if final or settled:
                out[name] = 0.0 if float(result[name]) >= 1 else 1.0
        return out

    def violation(self, result: dict, final: bool = True) -> float:
        """Total relative shortfall below the thresholds; 0 for a feasible result."""
        return sum(max(0.0, v) for v in self.constraints(result, final).values())

    def feasible(self, result: dict, final: bool = True) -> bool:
        return all(v <= 0 for v in self.constraints(result, final).values())

    def reference(self, points: Sequence[Sequence[float]] = ()) -> tuple[float, ...]:
        """The hypervolume reference point, in maximisation form: each threshold, else the metric's worst value.

        With thresholds as the reference, the hypervolume measures how far the front goes
        beyond what was asked. A ``min`` objective without threshold has no natural worst
        value: on a hardware metric (a latency, an energy) the reference is the worst of
        ``points`` (the nadir of the points judged, maximisation form; finite ones), so the
        hypervolume is relative to the run; on a model metric ``missing_reference`` rejects
        it before the search starts.
        """
        ref = []
        for i, (metric, mode, threshold) in enumerate(zip(self.metrics, self.modes, self.thresholds)):
            if threshold is None and mode == "min":
                finite = [p[i] for p in points if math.isfinite(p[i])]
                if not (self.nadir and self.nadir[i]) or not finite:
                    raise ValueError(f"{metric}: a min objective needs a threshold (or, on a hardware metric, points)")
                ref.append(min(finite))
                continue
            worst = self.worst[i] if self.worst else ALL[metric].worst
            value = threshold if threshold is not None else worst
            ref.append(value if mode == "max" else -value)
        return tuple(ref)

    def missing_reference(self) -> int | None:
        """The index of a ``min`` objective without threshold (no hypervolume reference), if any."""
        for i, (mode, threshold) in enumerate(zip(self.modes, self.thresholds)):
            if mode == "min" and threshold is None and not (self.nadir and self.nadir[i]):
                return i
        return None
