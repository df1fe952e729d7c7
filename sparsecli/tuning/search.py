"""Running a tuning run on Ray Tune: the cheap phase, then the second phase; together they spend the budget.

Phase 1 ("search"): configurations sampled by ``FidelitySearch`` (one Optuna model per
fidelity, so every rung result informs the next sample), scheduled by ``ParetoASHA`` from
``min_epochs`` to ``max_epochs``. It samples ``tune.budget.trials`` configurations, or with
``trials: null`` as many as ``tune.budget.search_fraction`` of the budget
(``tune.budget.full_trainings`` x ``max_epochs`` epochs) pays for, more while few of its
stopped trials are worth finishing (the searcher keeps back only what finishing those will
take, so the budget is spent either way). Phase 2 ("retrain",
optional): the stopped trials whose last result is feasible as far as a short training can
tell (the thresholds on settled metrics, see ``Objectives.constraints``) are finished at
``max_epochs``, continuing from their checkpoints, one at a time by expected hypervolume
gain over the front known at full length by then (``finish.FinishSearch``), as many as the
rest of the budget pays for; without a budget, those no other trial beat at their epoch
(``second_phase_candidates``). Only results at ``max_epochs`` are final; everything else is
a cost.

Both phases decide from their trials' results in the order the trials were drawn, with a lag of
``workers + 1`` (see ``FidelitySearch``), so the same params and workers give the same trials and
the same front in every run, however the workers' results interleave.

Each phase is one Ray experiment under the storage folder, so an interrupted run is
restored with ``Tuner.restore``: finished trials keep their results, unfinished ones
continue from their last epoch checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsecli.errors import SparsecliError
from sparsecli.params import Params
from sparsecli.progress import Progress
from sparsecli.tune_metrics import NAMES, settled
from sparsecli.tuning.hardware import HardwareObjective
from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.pareto import hypervolume, nondomination_ranks

HISTORY_KEYS = ("epoch", *NAMES, "train_loss", "train_accuracy", "val_loss", "lr", "cost_epochs", "wall_seconds")


@dataclass
class TrialRecord:
    """One Ray trial as the outputs need it."""

    name: str
    phase: str  # "search" or "retrain"
    values: dict[str, Any]  # the sampled params keys
    status: str  # "full" (reached max_epochs), "stopped" (by the scheduler or the budget), "failed"
    result: dict = field(default_factory=dict)  # the last reported metrics
    history: list[dict] = field(default_factory=list)
    error: str | None = None
    from_trial: str | None = None  # phase 2: the cheap trial it finished
    checkpoint: str | None = None

    @property
    def epochs(self) -> int:
        return int(self.result.get("epoch", 0))

    @property
    def cost_epochs(self) -> int:
        return int(self.result.get("cost_epochs", 0))


@dataclass(frozen=True)
class Plan:
    """A tuning run's settings, resolved from the params."""

    objectives: Objectives
    keys: tuple[str, ...]
    min_epochs: int
    full_epochs: int
    reduction_factor: int
    trials: int | None
    budget_epochs: float | None
    search_fraction: float
    searcher: str
    startup_trials: int
    second_phase: bool
    seed: int

    @classmethod
    def from_params(cls, params: Params) -> Plan:
        tune = params.tune
        full = tune.max_epochs or params.train.epochs
        budget = tune.budget.full_trainings * full if tune.budget.full_trainings is not None else None
        keys = tuple(d.key for d in tune.space)
        return cls(Objectives.from_params(tune.objectives, settled(params.model, keys)), keys, tune.min_epochs,
                   full, tune.reduction_factor, tune.budget.trials, budget, tune.budget.search_fraction, tune.searcher,
                   tune.startup_trials, tune.second_phase, params.seed)

    @property
    def finish_epochs(self) -> int:
        """What finishing one stopped trial costs: from the cheapest fidelity to the full one."""
        return self.full_epochs - self.min_epochs

    @property
    def finishes(self) -> int:
        """How many stopped trials the second phase is to finish: ``1 - search_fraction`` of the
        budget, in whole finishing trainings, so that none is left over."""
        if self.budget_epochs is None or not self.second_phase or self.finish_epochs <= 0:
            return 0
        return round((1 - self.search_fraction) * self.budget_epochs / self.finish_epochs)

    @property
    def reserve_epochs(self) -> float:
        """The epochs kept for the second phase."""
        return float(self.finishes * self.finish_epochs)

    @property
    def search_epochs(self) -> float | None:
        """The epochs the cheap phase may spend (the rest finishes stopped trials); None: no budget."""
        return None if self.budget_epochs is None else self.budget_epochs - self.reserve_epochs

    def expected_trials(self) -> int:
        """About how many configurations the cheap phase samples with ``trials: null`` (for the progress count)."""
        from sparsecli.tuning.scheduler import rungs

        fidelities = [*rungs(self.min_epochs, self.full_epochs, self.reduction_factor), self.full_epochs]
        per_trial = fidelities[0] + sum((b - a) / self.reduction_factor ** (k + 1)
                                        for k, (a, b) in enumerate(zip(fidelities, fidelities[1:])))
        return max(1, math.ceil((self.search_epochs or 0) / per_trial))


class Interrupted(KeyboardInterrupt):
    """Ray caught a Ctrl-C, saved the experiment and returned early."""


def run_search(params: Params, splits: dict, meta: dict, storage: Path, workers: int, restore: bool,
               progress: Progress, hardware: tuple[HardwareObjective, ...] = ()) -> list[TrialRecord]:
    """Both phases; returns every trial. Raises ``Interrupted`` if Ray was stopped early.
    ``hardware``: the hardware objectives, resolved (``tuning.hardware.resolve``)."""
    from ray import tune

    from sparsecli.tuning.finish import Candidate, FinishSearch
    from sparsecli.tuning.scheduler import ParetoASHA, rungs
    from sparsecli.tuning.searcher import FidelitySearch
    from sparsecli.tuning.space import optuna_space
    from sparsecli.tuning.trainable import CONTINUE_KEY, run_trial

    plan = Plan.from_params(params)
    # decide from the trials drawn at least workers + 1 before (see FidelitySearch): the same
    # trials in every run, and a free worker waits only for a promoted trial, not for its neighbour
    lag = workers + 1
    trainable = tune.with_parameters(run_trial, base=params.model_dump(), keys=list(plan.keys), splits=splits,
                                     meta=meta, full_epochs=plan.full_epochs, hardware=tuple(hardware))

    def fresh_search():
        fidelities = [*rungs(plan.min_epochs, plan.full_epochs, plan.reduction_factor), plan.full_epochs]
        searcher = FidelitySearch(optuna_space(params.tune.space), plan.objectives, fidelities, plan.searcher,
                                  plan.seed, plan.startup_trials, plan.budget_epochs, plan.trials, lag=lag,
                                  finishes=plan.finishes, finish_epochs=plan.finish_epochs)
        scheduler = ParetoASHA(plan.objectives, plan.min_epochs, plan.full_epochs, plan.reduction_factor,
                               plan.budget_epochs, strict=plan.second_phase, lag=lag)
        return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials or -1,
                               max_concurrent_trials=workers)

    expected = plan.trials or plan.expected_trials()
    results = _run_phase("search", storage, trainable, restore, fresh_search, None, plan, expected, progress)
    records = sorted((_record(r, "search", plan) for r in results), key=lambda r: r.name)
    check_not_all_crashed(records, storage / "search")
    if _unfinished(results):
        raise Interrupted()
    if not plan.second_phase:
        return records
    candidates = second_phase_candidates(records, plan)
    if not candidates:
        return records
    finisher = FinishSearch([Candidate(c.name, {**c.values, CONTINUE_KEY: c.checkpoint, "from_trial": c.name},
                                       c.epochs, plan.objectives.vector(c.result)) for c in candidates],
                            plan.objectives, plan.full_epochs, _left(records, plan), *known_at_full(records, plan),
                            lag=lag)
    retrain = _run_phase("retrain", storage, trainable, restore,
                         lambda: tune.TuneConfig(search_alg=finisher, num_samples=-1, max_concurrent_trials=workers),
                         None, plan, _expected_finishes(candidates, records, plan), progress)
    if _unfinished(retrain):
        raise Interrupted()
    return records + sorted((_record(r, "retrain", plan) for r in retrain), key=lambda r: r.name)


def check_not_all_crashed(records: list[TrialRecord], folder: Path) -> None:
    """Every trial failed (crashed, so the searcher stopped after ``FAILED_START``, or diverged):
    there is no answer, so say why in one line, and drop the phase's state so that a rerun after
    the fix starts over."""
    if records and all(r.status == "failed" for r in records):
        shutil.rmtree(folder, ignore_errors=True)
        first = records[0]
        raise SparsecliError(f"tune: all {len(records)} trials failed, so there is no answer; the first, "
                             f"{first.name}: {first.error}; fix that and rerun")


def known_at_full(records: list[TrialRecord], plan: Plan) -> tuple[list[tuple], list[tuple[int, tuple, tuple]]]:
    """What the cheap phase already knows at full length: the feasible full-length vectors, and
    (rung epoch, rung vector, full vector) for every full-length trial seen at a rung (``FinishSearch``'s predictor)."""
    objectives = plan.objectives
    full = [r for r in records if r.status == "full" and all(m in r.result for m in objectives.metrics)]
    rung_epochs = set(_rung_epochs(plan))
    pairs = [(int(row["epoch"]), objectives.vector(row), objectives.vector(r.result)) for r in full
             for row in r.history if int(row["epoch"]) in rung_epochs and all(m in row for m in objectives.metrics)]
    return [objectives.vector(r.result) for r in full if objectives.feasible(r.result)], pairs


def _rung_epochs(plan: Plan) -> list[int]:
    from sparsecli.tuning.scheduler import rungs

    return rungs(plan.min_epochs, plan.full_epochs, plan.reduction_factor)


def _left(records: list[TrialRecord], plan: Plan) -> float | None:
    """The budget's epochs the cheap phase left for finishing; None: no budget."""
    return None if plan.budget_epochs is None else plan.budget_epochs - sum(r.cost_epochs for r in records)


def _expected_finishes(candidates: list[TrialRecord], records: list[TrialRecord], plan: Plan) -> int:
    """About how many finishes the budget pays for (the progress count)."""
    left = _left(records, plan)
    if left is None:
        return len(candidates)
    return max(1, min(len(candidates), int(left // max(1, plan.full_epochs - max(c.epochs for c in candidates)))))


def second_phase_candidates(records: list[TrialRecord], plan: Plan) -> list[TrialRecord]:
    """The stopped trials that may be finished at ``max_epochs``, most promising at their rung first.

    A candidate is a stopped trial with a checkpoint whose last result is feasible as far as a
    short training tells (thresholds on settled metrics). Each is ranked among every trial's
    result at the same epoch by the non-domination rank of the feasible-so-far ones: first every
    trial no other trial beat at its epoch, then the next layer, and so on; within a layer, the
    one trained longest (the better evidence, and the cheaper to finish) first, then in the
    order a greedy hypervolume-subset selection takes them (``greedy_hypervolume_order``, from
    ``rung_reference``). Without a budget, only the first layer is a candidate. Which are
    finished, and in what order, ``finish.FinishSearch`` decides one at a time from what is
    known at full length by then (this order breaks its ties), as many as the budget pays for.
    """
    objectives = plan.objectives
    at_epoch: dict[int, dict[str, dict]] = defaultdict(dict)
    for record in records:
        for row in record.history:
            at_epoch[int(row["epoch"])][record.name] = row
    rank_at: dict[tuple[int, str], tuple[int, int]] = {}
    for epoch, rows in at_epoch.items():
        names = [name for name, row in rows.items() if objectives.feasible(row, final=False)]
        points = [objectives.vector(rows[n]) for n in names]
        if not points:
            continue
        reference = rung_reference(objectives, points)
        ranks = nondomination_ranks(points)
        for rank in set(ranks):
            members = [i for i, r in enumerate(ranks) if r == rank]
            for position, j in enumerate(greedy_hypervolume_order([points[i] for i in members], reference)):
                rank_at[epoch, names[members[j]]] = (rank, position)
    chosen = [r for r in records if r.status == "stopped" and r.checkpoint
              and objectives.feasible(r.result, final=False) and (r.epochs, r.name) in rank_at]
    # a layer at a time; in a layer, the longest-trained first, then by hypervolume contribution
    chosen.sort(key=lambda r: (rank_at[r.epochs, r.name][0], -r.epochs, rank_at[r.epochs, r.name][1], r.name))
    if plan.budget_epochs is None:
        return [r for r in chosen if rank_at[r.epochs, r.name][0] == 0]
    return chosen


def rung_reference(objectives: Objectives, points: list[tuple[float, ...]]) -> tuple[float, ...]:
    """A hypervolume reference for results short of full fidelity: the thresholds of settled
    metrics (exact at any epoch), and for the others the worst value among ``points`` (a short
    training's accuracy is mostly below the full-length threshold)."""
    reference = objectives.reference(points)
    worst = [min((p[k] for p in points if math.isfinite(p[k])), default=reference[k]) for k in range(len(reference))]
    return tuple(ref if objectives.is_settled(k) else min(ref, lo) for k, (ref, lo) in enumerate(zip(reference, worst)))


def greedy_hypervolume_order(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> list[int]:
    """Indices in the order a greedy hypervolume-subset selection takes them (largest gain first;
    ties: the earlier index). Extremes of a front add little area near the reference, so the
    few finishing trainings a budget allows go to the points that widen the front most."""
    order, taken, volume = [], [], 0.0
    left = list(range(len(points)))
    while left:
        gains = [(hypervolume(taken + [points[i]], reference) - volume, -i) for i in left]
        gain, best = max(gains)
        order.append(-best)
        taken.append(points[-best])
        volume += gain
        left.remove(-best)
    return order


def _run_phase(name, storage, trainable, restore, tune_config, space, plan, total, progress):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sparsecli.tuning.monitor import TrialMonitor, TrialNamer, attach

    path = storage / name
    task = "tune" if name == "search" else "tune retrain"
    if restore and _restorable(path):
        progress.message(f"{task}: resuming the interrupted run in {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=space)
    else:
        shutil.rmtree(path, ignore_errors=True)  # a phase that never saved its state starts over
        config = tune_config()
        config.reuse_actors = True
        config.trial_name_creator = config.trial_dirname_creator = TrialNamer(name)
        run_config = tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0,
            callbacks=[JsonLoggerCallback(), TrialMonitor(str(path), task, total, plan.full_epochs,
                                                           tuple(n for n in plan.objectives.names if n not in NAMES))],
            # Ray snapshots the whole experiment each time a trial saved num_to_keep checkpoints
            # (one per epoch here): at 1 that was about 1,000 snapshots, 12 s of a 2-core machine
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        )
        tuner = tune.Tuner(trainable, param_space=space or {}, tune_config=config, run_config=run_config)
    with attach(str(path), progress), _keep_sigint_handler() as sigint:
        results = tuner.fit()
    if sigint.interrupted:  # Ray saved the experiment and returned: perhaps with no trial left unfinished
        raise Interrupted()
    return results


def _record(result, phase: str, plan: Plan) -> TrialRecord:
    from sparsecli.tuning.monitor import error_text
    from sparsecli.tuning.trainable import DIVERGED_KEY

    frame = result.metrics_dataframe
    history = []
    if frame is not None and "accuracy" in frame:
        rows = frame.to_dict("records")
        keys = (*HISTORY_KEYS, *(k for k in plan.objectives.names if k in frame))
        # by epoch: a trial resumed from a checkpoint older than its last result repeats those epochs
        history = list({row["epoch"]: {k: row[k] for k in keys} for row in rows
                        if not _missing(row.get("accuracy"))}.values())
    metrics = result.metrics or {}
    last = {k: metrics[k] for k in (*HISTORY_KEYS, *plan.objectives.names, DIVERGED_KEY) if k in metrics}
    config = result.config or {}
    config = config.get("candidate", config)
    error = error_text(result.error) if result.error else None
    if DIVERGED_KEY in last:
        error = f"diverged: {last.pop(DIVERGED_KEY)}"
        last = {k: last[k] for k in ("epoch", "cost_epochs", "wall_seconds")}
    epoch = int(last.get("epoch", 0))
    status = "failed" if error else ("full" if epoch >= plan.full_epochs else "stopped")
    return TrialRecord(
        name=Path(result.path).name, phase=phase, values={k: config[k] for k in plan.keys if k in config},
        status=status, result=last, history=history, error=error, from_trial=config.get("from_trial"),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
    )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _restorable(path: Path) -> bool:
    """Ray saved both the tuner and at least one experiment state there."""
    from ray import tune

    return tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json"))


def _unfinished(results) -> bool:
    return results.num_terminated + results.num_errors < len(results)


class _keep_sigint_handler:
    """Ray installs its own Ctrl-C handler for a run and leaves it behind; put ours back.

    A Ctrl-C (or SIGUSR1) makes Ray's handler end the run early and put back the handler it
    found: that, finding ours again after the run, is how ``interrupted`` knows the run was
    cut short (Ray's results do not say; a run stopped between trials has none unfinished)."""

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        self.handler = signal.getsignal(signal.SIGINT) if self.main else None
        self.interrupted = False
        return self

    def __exit__(self, *exc):
        if self.main:
            catching = not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0"))
            self.interrupted = catching and signal.getsignal(signal.SIGINT) is self.handler
            signal.signal(signal.SIGINT, self.handler)
