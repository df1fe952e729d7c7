"""The searcher: one multi-objective Optuna model per fidelity (BOHB's recipe), run by Ray Tune.

A Ray ``Searcher`` (not ``OptunaSearch``, which tells Optuna a trial's *last* result as a
complete evaluation, so a trial stopped after a few epochs would be taken for a final one).
It keeps one Optuna study per fidelity: each ASHA rung (``min_epochs * rf**k`` epochs) and
the full training (``max_epochs``). A trial reaching a rung is told to that rung's study as
a complete evaluation *at that fidelity*, with one Optuna constraint per threshold
(``create_trial(constraints=...)`` / ``Trial.set_constraint``), so TPE and NSGA-II rank
infeasible trials below feasible ones and steer toward feasibility. Below full fidelity
only thresholds on settled metrics count (weight sparsity: fixed masks, exact after one
epoch; activation sparsity under kWTA; ``Objectives.constraints(final=False)``): a short training's accuracy below the
threshold says little about the full one's.

A new configuration is sampled from the study of the highest fidelity that holds at least
``max(startup_trials, d + 1)`` evaluations, d = the number of searched keys (Falkner et al.,
2018, "BOHB": the most faithful model with enough data, N_min = d + 1; fewer points than
dimensions cannot say which of them matter); before any has, from the cheapest one's
sampler, which draws at random for its first ``startup_trials``. So every stopped trial teaches the sampler where to go next, and the full
study, the only one told full-fidelity values, takes over once enough trials finished. The
asked-for trial stays RUNNING in the study it was drawn from until it reaches that study's
fidelity (TPE's constant liar counts it as poor meanwhile, so parallel workers spread out);
stopped earlier, crashed or diverged, it ends there as FAIL, which no sampler learns from.

With ``lag`` (at least the number of workers), the answer does not depend on which running
trial happens to report first: configuration i (counting from 0) is drawn only once trials
0 ... i - lag have ended, from what those reported, told to the studies in trial order; the
later ones count as drawn but unknown, whatever they reported meanwhile. So the same params
draw the same configurations, and give the same front, in every run. ``run_search`` uses
``workers + 1``: then a free worker never waits for the trial beside it, only for a promoted
one before it to finish (on the default pipeline, one or two in the cheap phase). Without
``lag``, every result is told the moment it arrives.

Nothing here decides what is *an answer*: the front is built from full-fidelity trials
only (``analysis``). The searcher also stops suggesting once the epochs given to it are
spent (``budget_epochs``: counting what the trials will spend to reach their next fidelity:
a trial reporting at a rung was promoted, since Ray tells a searcher a result only when the
scheduler lets the trial go on; and keeping back what the second phase will take to finish
the stopped trials feasible so far, ``finish_epochs`` each, up to ``finishes`` of them: so
where few pass the settled thresholds, it samples on instead of leaving the second phase's
share unspent), ``max_trials`` configurations were sampled, or the first ``FAILED_START`` trials
all crashed before reporting anything (a broken setup, not a bad region of the space:
failed trials cost no epochs, so the budget alone would sample them forever); its state
(studies, cost ledger) is saved with the experiment, so a resumed run keeps both.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.trainable import DIVERGED_KEY

FAILED_START = 4  # the first trials all crashed before any reported a result: stop sampling


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


class PickledSearcher(Searcher):
    """A Ray searcher whose whole state is its attributes: saved with the experiment, so an
    interrupted run resumes where it was."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class FidelitySearch(PickledSearcher):
    """Optuna studies per fidelity (``fidelities``: increasing epochs, the last = full training)."""

    def __init__(self, space: dict, objectives: Objectives, fidelities: list[int], searcher: str, seed: int,
                 startup_trials: int, budget_epochs: float | None = None, max_trials: int | None = None,
                 lag: int | None = None, finishes: int = 0, finish_epochs: int = 0):
        import optuna

        super().__init__(metric=None, mode=None)
        self.space = space
        self.objectives = objectives
        self.fidelities = sorted(set(fidelities))
        self.full_epochs = self.fidelities[-1]
        self.startup_trials = startup_trials
        self.min_evaluations = max(startup_trials, len(space) + 1)  # before a study's model is used
        self.budget_epochs = budget_epochs
        self.max_trials = max_trials
        self.lag = lag
        self.finishes, self.finish_epochs = finishes, finish_epochs
        directions = ["maximize" if mode == "max" else "minimize" for mode in objectives.modes]
        self.studies = {
            f: optuna.create_study(directions=directions, sampler=make_sampler(searcher, seed + 7919 * i, startup_trials))
            for i, f in enumerate(self.fidelities)
        }
        # Ray trial id -> params, the study it was drawn from, fidelities told, results not yet told
        self.trials: dict[str, dict[str, Any]] = {}
        self.spent: dict[str, int] = {}

    reported = False  # any trial reported a result (class defaults: a searcher saved before they existed restores)
    crashed = 0  # trials that ended with an error before any trial reported
    finishes = finish_epochs = 0  # the second phase's: none

    # ------------------------------------------------------------ Ray's Searcher API

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives are our own; Ray's single metric/mode does not apply

    def suggest(self, trial_id: str):
        known = len(self.trials) - self.lag + 1 if self.lag else len(self.trials)  # trials [0, known) have ended
        if self.lag and not self._catch_up(known):
            return None  # Ray asks again at its next step
        if self.budget_epochs is not None and (self.committed(known) + self.fidelities[0] + self.reserved(known)
                                               > self.budget_epochs):
            return Searcher.FINISHED  # a new configuration could not even reach the first rung
        if self.max_trials is not None and len(self.trials) >= self.max_trials:
            return Searcher.FINISHED
        if not self.reported and self.crashed >= FAILED_START:
            return Searcher.FINISHED
        fidelity = self.model_fidelity()
        ot_trial = self.studies[fidelity].ask(self.space)
        self.trials[trial_id] = {"params": dict(ot_trial.params), "drawn_from": fidelity, "number": ot_trial.number,
                                 "told": set(), "order": len(self.trials), "waiting": []}
        return dict(ot_trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._arrive(trial_id, result, ended=False, error=False)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._arrive(trial_id, result, ended=True, error=error)

    def committed(self, known: int | None = None) -> int:
        """Epochs spent, plus those the trials will spend to reach their next fidelity; a trial
        from ``known`` on (not yet told, see ``lag``) counts as reaching the first fidelity."""
        first, total = self.fidelities[0], 0
        for trial_id, entry in self.trials.items():
            spent = self.spent.get(trial_id, 0)
            if known is not None and entry["order"] >= known:
                total += first
            elif entry.get("done"):
                total += spent
            else:  # reported at a rung only if promoted: it goes on to the next fidelity
                total += next((f for f in self.fidelities if f > spent), spent)
        return total

    def reserved(self, known: int) -> int:
        """What finishing the stopped trials feasible so far will take (at most ``finishes`` of them)."""
        pool = sum(1 for entry in self.trials.values() if entry["order"] < known and entry.get("may_finish"))
        return self.finish_epochs * min(self.finishes, pool)

    # ------------------------------------------------------------ results, in trial order

    def _arrive(self, trial_id: str, result: dict | None, ended: bool, error: bool) -> None:
        entry = self.trials.get(trial_id)
        if entry is None:
            return
        entry["waiting"].append((result, ended, error))
        entry["ended"] = entry.get("ended") or ended
        if not self.lag:
            self._tell(trial_id, entry)

    def _catch_up(self, known: int) -> bool:
        """Tell the results of trials [0, known), in trial order; False if one has not ended yet."""
        first = [(trial_id, entry) for trial_id, entry in self.trials.items() if entry["order"] < known]  # drawn in order
        if not all(entry.get("ended") for _, entry in first):
            return False
        for trial_id, entry in first:
            self._tell(trial_id, entry)
        return True

    def _tell(self, trial_id: str, entry: dict) -> None:
        from optuna.trial import TrialState

        waiting, entry["waiting"] = entry["waiting"], []
        for result, ended, error in waiting:
            if result and not error:
                self.reported = True
                self.spent[trial_id] = max(self.spent.get(trial_id, 0), result.get("cost_epochs", 0))
                self._observe(trial_id, result)
            if not ended:
                continue
            entry["done"] = True
            entry["may_finish"] = bool(result) and not error and self._may_finish(result)
            if error and not self.reported:
                self.crashed += 1
            if entry["number"] is not None:  # it never reached the fidelity it was drawn for
                self.studies[entry["drawn_from"]].tell(entry["number"], state=TrialState.FAIL)
                entry["number"] = None

    def _may_finish(self, result: dict) -> bool:
        """Stopped short of full fidelity and feasible as far as a short training tells."""
        return (DIVERGED_KEY not in result and result.get("epoch", 0) < self.full_epochs
                and all(m in result for m in self.objectives.metrics) and self.objectives.feasible(result, final=False))

    # ------------------------------------------------------------ the models

    def model_fidelity(self) -> int:
        """The highest fidelity whose study holds ``min_evaluations``; else the cheapest."""
        from optuna.trial import TrialState

        for fidelity in reversed(self.fidelities):
            done = self.studies[fidelity].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(done) >= self.min_evaluations:
                return fidelity
        return self.fidelities[0]

    def _observe(self, trial_id: str, result: dict) -> None:
        """Tell the result's fidelity study, once per fidelity, with that fidelity's constraints."""
        import optuna

        entry = self.trials.get(trial_id)
        epoch = result.get("epoch")
        if entry is None or epoch not in self.studies or epoch in entry["told"] or DIVERGED_KEY in result:
            return
        if any(m not in result for m in self.objectives.metrics):
            return
        entry["told"].add(epoch)
        values = [float(result[m]) for m in self.objectives.metrics]
        constraints = self.objectives.constraints(result, final=epoch >= self.full_epochs)
        study = self.studies[epoch]
        if entry["drawn_from"] == epoch and entry["number"] is not None:
            ot_trial = optuna.trial.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(
                study._study_id, entry["number"]))
            for metric, value in constraints.items():
                ot_trial.set_constraint(metric, value)
            study.tell(ot_trial, values)
            entry["number"] = None
        else:
            study.add_trial(optuna.trial.create_trial(params=entry["params"], distributions=self.space,
                                                      values=values, constraints=constraints))
