"""From the trials of a run to its answer: the feasible Pareto front, its hypervolume, the pick.

Only full-fidelity results (``max_epochs`` reached, in either phase) are answers; the front
is the non-dominated subset of those meeting every threshold. The hypervolume is measured
from the reference point of ``Objectives.reference`` (the thresholds; the metric's worst
value where an objective has none), in the objectives' own units.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sparsecli.errors import SparsecliError
from sparsecli.tuning.pareto import hypervolume, non_dominated
from sparsecli.tuning.search import Plan, TrialRecord
from sparsecli.tuning.select import select


@dataclass
class Analysis:
    full: list[TrialRecord]
    feasible: list[TrialRecord]
    front: list[TrialRecord]
    selected: TrialRecord
    hypervolume: float
    reference: dict[str, float]


def analyse(records: list[TrialRecord], plan: Plan, rule: str, where: str) -> Analysis:
    """Raises SparsecliError, naming the closest trial, when no full-fidelity trial is feasible."""
    objectives = plan.objectives
    full = [r for r in records if r.status == "full"]
    feasible = [r for r in full if objectives.feasible(r.result)]
    if not feasible:
        raise SparsecliError(_none_feasible(records, full, plan, where))
    vectors = [objectives.vector(r.result) for r in feasible]
    front = [feasible[i] for i in non_dominated(vectors)]
    selected = front[select([r.result for r in front], objectives, rule)]
    reference = objectives.reference(vectors)
    return Analysis(
        full=full, feasible=feasible, front=front, selected=selected,
        hypervolume=hypervolume([objectives.vector(r.result) for r in front], reference),
        reference={m: abs(v) if mode == "min" else v
                   for m, mode, v in zip(objectives.metrics, objectives.modes, reference)},
    )


def summary(records: list[TrialRecord], analysis: Analysis, plan: Plan, rule: str, elapsed: float) -> dict:
    """The run's metrics (``tune/summary.json``)."""
    cost = sum(r.cost_epochs for r in records)
    by_epochs = Counter(r.epochs for r in records if r.status != "failed")
    return {
        "searcher": plan.searcher,
        "select": rule,
        "configurations": sum(r.phase == "search" for r in records),
        "trials": len(records),
        "retrained": sum(r.phase == "retrain" for r in records),
        "failed": sum(r.status == "failed" for r in records),
        "trials_by_epochs": {str(e): by_epochs[e] for e in sorted(by_epochs)},
        "full_fidelity": len(analysis.full),
        "feasible": len(analysis.feasible),
        "front_size": len(analysis.front),
        "hypervolume": analysis.hypervolume,
        "hypervolume_reference": analysis.reference,
        "cost_epochs": cost,
        "cost_full_trainings": cost / plan.full_epochs,
        "trial_seconds": sum(float(r.result.get("wall_seconds", 0.0)) for r in records),
        "elapsed_seconds": elapsed,
        "selected_trial": analysis.selected.name,
        "selected": {m: analysis.selected.result[m] for m in plan.objectives.names},
    }


def _none_feasible(records: list[TrialRecord], full: list[TrialRecord], plan: Plan, where: str) -> str:
    objectives = plan.objectives
    fix = "widen tune.space, relax a threshold or raise tune.budget"
    failed = sum(r.status == "failed" for r in records)
    judged = [r for r in records if r.status != "failed" and all(n in r.result for n in objectives.names)]
    for name in objectives.requirements:
        if judged and not any(float(r.result[name]) >= 1 for r in judged):
            target = name.split(":", 1)[-1]
            return (f"tune: constraint {name} (tune.objectives): the network of none of the {len(judged)} trials fits "
                    f"on {target} (resources and on-chip memory, as hardware-map predicts); pick a larger target, "
                    f"or a smaller or sparser network in model/tune.space")
    if not full:
        return f"tune: no trial reached max_epochs ({plan.full_epochs}); {failed} of {len(records)} failed; {fix} (trials in {where})"
    closest = min(full, key=lambda r: (objectives.violation(r.result), r.name))
    gaps = ", ".join(
        [f"{m} {closest.result[m]:.4f} {'<' if mode == 'max' else '>'} {t}"
         for m, mode, t in zip(objectives.metrics, objectives.modes, objectives.thresholds)
         if t is not None and objectives.constraints(closest.result)[m] > 0]
        + [f"{name} = 0 (does not fit)" for name in objectives.requirements if float(closest.result[name]) < 1]
    )
    return f"tune: none of the {len(full)} full-fidelity trials meets every threshold (closest: {closest.name}, {gaps}); {fix}"
