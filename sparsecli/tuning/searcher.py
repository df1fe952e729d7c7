"""The searcher: Optuna's multi-objective samplers through Ray Tune's ``OptunaSearch``.

``OptunaSearch`` tells Optuna a trial's *last* result as a complete evaluation whenever Ray
ends the trial, including when the scheduler stopped it after a few epochs. With
multi-fidelity that would feed Optuna low-fidelity accuracies as if they were final, and the
sampler would learn that short trainings are the best configurations. ``FidelitySearch``
tells Optuna instead:

- a trial that reached ``full_epochs``: COMPLETE, with its objective values and one Optuna
  constraint per threshold (``Trial.set_constraint``, Optuna 5), so TPE and NSGA-II rank
  infeasible trials below feasible ones and steer toward feasibility;
- a trial the scheduler stopped earlier: PRUNED, with no values (TPE counts pruned trials
  among the poor ones, as with Optuna's own pruners; NSGA-II ignores them), and constraints
  only for thresholds on settled metrics (weight sparsity: fixed masks, so exact after one
  epoch), which lets TPE rank a pruned trial that can never be feasible as infeasible;
- a trial that crashed or diverged (NaN loss): FAIL.

It also stops suggesting trials once the budget's epochs are spent; its cost ledger is saved
with the searcher, so a resumed run keeps counting.
"""

from __future__ import annotations

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.trainable import DIVERGED_KEY


def make_sampler(name: str, seed: int, startup_trials: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                          constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown searcher {name!r}")


class FidelitySearch(OptunaSearch):
    def __init__(self, space: dict, objectives: Objectives, full_epochs: int, sampler,
                 budget_epochs: float | None = None):
        super().__init__(space=space, metric=list(objectives.metrics), mode=list(objectives.modes), sampler=sampler)
        self.objectives = objectives
        self.full_epochs = full_epochs
        self.budget_epochs = budget_epochs
        self.spent: dict[str, int] = {}

    def suggest(self, trial_id: str):
        if self.budget_epochs is not None and sum(self.spent.values()) >= self.budget_epochs:
            return Searcher.FINISHED
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.spent[trial_id] = max(self.spent.get(trial_id, 0), result.get("cost_epochs", 0))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if error or not result or DIVERGED_KEY in result:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif result.get("epoch", 0) >= self.full_epochs:
            for metric, value in self.objectives.constraints(result).items():
                ot_trial.set_constraint(metric, value)
            self._ot_study.tell(ot_trial, [float(result[m]) for m in self.objectives.metrics])
        else:
            for metric, value in self.objectives.constraints(result, final=False).items():
                ot_trial.set_constraint(metric, value)  # settled metrics only: exact at any fidelity
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)
