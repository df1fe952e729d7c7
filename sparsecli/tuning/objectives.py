"""What a trial reports, and how a result is judged against the objectives and thresholds.

A trial result is a plain dict of metric name -> value (what the trainable passes to
``tune.report``). Objectives come from ``tune.objectives``: ``{metric, mode, threshold}``.
Everything here works in *maximisation form*: a ``min`` objective is negated, so "larger
is better" holds for every coordinate, and the same Pareto code serves all objectives.

The metrics themselves (names, ranges, which are settled after one epoch) are listed once,
in ``sparsecli.tune_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecli.params import TuneObjective
from sparsecli.tune_metrics import METRICS

ALWAYS_SETTLED = frozenset(name for name, metric in METRICS.items() if metric.settled)


@dataclass(frozen=True)
class Objectives:
    """The objectives of one tuning run (picklable: Ray ships it to the searcher and scheduler)."""

    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    settled: frozenset[str] = ALWAYS_SETTLED  # final after one epoch for this model (``tune_metrics.settled``)

    @classmethod
    def from_params(cls, objectives: list[TuneObjective], settled: frozenset[str] = ALWAYS_SETTLED) -> Objectives:
        return cls(tuple(o.metric for o in objectives), tuple(o.mode for o in objectives),
                   tuple(o.threshold for o in objectives), settled)

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
        for metric, mode, threshold in zip(self.metrics, self.modes, self.thresholds):
            if threshold is None or not (final or metric in self.settled):
                continue
            gap = threshold - float(result[metric]) if mode == "max" else float(result[metric]) - threshold
            out[metric] = gap / max(abs(threshold), 1e-12)
        return out

    def violation(self, result: dict, final: bool = True) -> float:
        """Total relative shortfall below the thresholds; 0 for a feasible result."""
        return sum(max(0.0, v) for v in self.constraints(result, final).values())

    def feasible(self, result: dict, final: bool = True) -> bool:
        return all(v <= 0 for v in self.constraints(result, final).values())

    def reference(self) -> tuple[float, ...]:
        """The hypervolume reference point, in maximisation form: each threshold, else the metric's worst value.

        With thresholds as the reference, the hypervolume measures how far the front goes
        beyond what was asked. A ``min`` objective without threshold has no natural worst
        value: ``missing_reference`` finds it before the search starts.
        """
        ref = []
        for metric, mode, threshold in zip(self.metrics, self.modes, self.thresholds):
            if threshold is None and mode == "min":
                raise ValueError(f"{metric}: a min objective needs a threshold")
            value = threshold if threshold is not None else METRICS[metric].worst
            ref.append(value if mode == "max" else -value)
        return tuple(ref)

    def missing_reference(self) -> int | None:
        """The index of a ``min`` objective without threshold (no hypervolume reference), if any."""
        for i, (mode, threshold) in enumerate(zip(self.modes, self.thresholds)):
            if mode == "min" and threshold is None:
                return i
        return None
