"""Multi-objective ASHA on epochs, with thresholds and a cost budget.

Asynchronous successive halving (Li et al., 2020): rungs at ``min_epochs * rf**k`` epochs
below ``max_epochs``. When a trial reaches a rung, it is ranked among every result recorded
at that rung so far (itself included) and continues only if it is among the best
``max(1, n // rf)``. Ray's own ASHA ranks by one metric; here the rank is NSGA-II's
constrained order (``pareto.constrained_order``): trials meeting every threshold first, by
non-domination rank then crowding distance, then the rest by smallest violation. So the
cheap rungs keep a spread of trade-offs rather than only the most accurate trials. Only
thresholds a short training can already judge count at a rung (``Objectives.constraints``
with ``final=False``): a sparse network below the accuracy threshold after 4 epochs may
well pass it after 40, but one below the weight-sparsity threshold never will.

With ``lag`` (as the searcher's), a trial is ranked among the rung
results of the trials drawn at least ``lag`` before it (and itself), not of whichever happened
to arrive first: the searcher draws a trial only once those have ended, so their results are
all in, and two workers promote the same trials in every run.

The budget (``tune.budget.full_trainings``, in epochs here) stops every running trial once
the epochs spent by all trials reach it. Ray saves searchers and callbacks with an
experiment but not schedulers, so on resume the rungs and the spent epochs are rebuilt from
each restored trial's persisted results.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.air.constants import EXPR_RESULT_FILE
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sparsecli.tuning.monitor import creation_number
from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.pareto import constrained_order
from sparsecli.tuning.trainable import DIVERGED_KEY


def rungs(min_epochs: int, max_epochs: int, reduction_factor: int) -> list[int]:
    """The epochs at which a trial is judged: min_epochs * rf**k, below max_epochs."""
    out, epoch = [], min_epochs
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= reduction_factor
    return out


def promote(entries: dict[str, dict], trial_id: str, objectives: Objectives, reduction_factor: int,
            strict: bool = False) -> bool:
    """Whether ``trial_id`` is among the best ``n // rf`` of the n results at a rung (``entries``,
    in the order the trials were drawn, so that ties fall the same way in every run).

    Not strict, at least the best one continues (so the first trial at a rung always does,
    as in Ray's ASHA); strict, a rung needs ``rf`` results before any continues.
    """
    ids = list(entries)
    order = constrained_order([objectives.vector(entries[i]) for i in ids],
                              [objectives.violation(entries[i], final=False) for i in ids])
    keep = len(ids) // reduction_factor if strict else max(1, len(ids) // reduction_factor)
    return ids.index(trial_id) in order[:keep]


class ParetoASHA(FIFOScheduler):
    def __init__(self, objectives: Objectives, min_epochs: int, max_epochs: int, reduction_factor: int,
                 budget_epochs: float | None = None, strict: bool = False, lag: int | None = None):
        super().__init__()
        self.objectives = objectives
        self.strict = strict
        self.lag = lag
        self.order: dict[str, int] = {}  # trial id -> when it was drawn
        self.milestones = rungs(min_epochs, max_epochs, reduction_factor)
        self.max_epochs = max_epochs
        self.reduction_factor = reduction_factor
        self.budget_epochs = budget_epochs
        self.recorded: dict[int, dict[str, dict]] = {m: {} for m in self.milestones}
        self.spent: dict[str, int] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # objectives are our own; Ray's single metric/mode does not apply

    def on_trial_add(self, tune_controller, trial) -> None:
        self.order[trial.trial_id] = creation_number(trial)
        if (trial.last_result or {}).get("epoch"):  # a trial restored from an interrupted run
            for result in _persisted_results(trial):
                self._record(trial.trial_id, result)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        promoted = self._record(trial.trial_id, result)
        if self.budget_epochs is not None:
            # the other running trials are already spending an epoch each; one more of this one must fit too
            others = sum(t.status == "RUNNING" and t is not trial for t in tune_controller.get_live_trials())
            if sum(self.spent.values()) + others + 1 > self.budget_epochs:
                return TrialScheduler.STOP
        if result.get("epoch", 0) >= self.max_epochs or not promoted:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def _record(self, trial_id: str, result: dict) -> bool:
        """Book the result's cost and rung entry; False if the trial is not promoted at this rung."""
        if "cost_epochs" in result:
            self.spent[trial_id] = max(self.spent.get(trial_id, 0), result["cost_epochs"])
        epoch = result.get("epoch")
        if epoch not in self.recorded or trial_id in self.recorded[epoch] or DIVERGED_KEY in result:
            return True
        self.recorded[epoch][trial_id] = {m: result[m] for m in self.objectives.names}
        own = self.order[trial_id]
        ranked = sorted((self.order[i], i) for i in self.recorded[epoch])
        entries = {i: self.recorded[epoch][i] for rank, i in ranked
                   if i == trial_id or not self.lag or rank <= own - self.lag}
        return promote(entries, trial_id, self.objectives, self.reduction_factor, self.strict)

    def debug_string(self) -> str:
        return f"ParetoASHA: rungs {self.milestones}, {sum(len(r) for r in self.recorded.values())} rung results"


def _persisted_results(trial) -> list[dict]:
    path = Path(trial.path) / EXPR_RESULT_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
