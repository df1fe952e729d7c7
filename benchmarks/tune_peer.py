"""Peers for ``tune_cost.py --peer NAME``: independent libraries' multi-objective, multi-fidelity optimisers.

- ``moasha``: Syne Tune's MOASHA (Salinas et al., 2021; Schmucker et al., 2021), multi-objective
  asynchronous successive halving with non-dominated sorting, random sampling
  (``pip install -e ".[bench]"``). Syne Tune's scheduler decides which configuration runs and
  whether a trial continues after each epoch (``grace_period = tune.min_epochs``, the params'
  ``reduction_factor``, ``max_t = max_epochs``); this module runs what it decides, one trial at
  a time, with the same trial as ours (``training.fit`` of the same network, reporting the
  same metrics after every epoch on one thread) until the epoch budget is spent. MOASHA knows
  no thresholds: the hypervolume is measured as for our searches (feasible full-fidelity front,
  reference = the thresholds).

A peer is ``f(params, data_dir, workdir, budget_epochs, seed) -> (hypervolume, epochs, anytime curve)``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from tune_cost import anytime

from sparsecli.params import Params
from sparsecli.tuning.objectives import Objectives


def _syne_space(space):
    from syne_tune.config_space import choice, loguniform, randint, uniform

    out = {}
    for dim in space:
        if dim.dist == "choice":
            out[dim.key] = choice(list(dim.values))
        elif dim.dist == "int":
            out[dim.key] = randint(int(dim.low), int(dim.high))
        elif dim.dist == "loguniform":
            out[dim.key] = loguniform(dim.low, dim.high)
        else:
            out[dim.key] = uniform(dim.low, dim.high)
    return out


def moasha(params: Params, data_dir: Path, workdir: Path, budget_epochs: float, seed: int):
    import numpy as np
    import torch
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from sparsecli.models import build_model
    from sparsecli.sparse.dynamic import dynamic_sparsity
    from sparsecli.training import DivergedError, fit, read_splits
    from sparsecli.tuning.space import trial_params
    from sparsecli.tuning.trainable import trial_metrics

    np.random.seed(seed)  # Syne Tune samples configurations from NumPy's global generator
    objectives = Objectives.from_params(params.tune.objectives)
    full = params.tune.max_epochs or params.train.epochs
    scheduler = MOASHA(_syne_space(params.tune.space), metrics=list(objectives.metrics),
                       do_minimize=False, time_attr="epoch", max_t=full, grace_period=params.tune.min_epochs,
                       reduction_factor=params.tune.reduction_factor, random_seed=seed)
    splits, meta = read_splits(data_dir)
    base = params.model_dump()
    events, spent, trial_id = [], 0, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while spent < budget_epochs:
            suggestion = scheduler.suggest()
            trial = Trial(trial_id=trial_id, config=suggestion.config, creation_time=datetime.now())
            trial_id += 1
            scheduler.on_trial_add(trial)
            values = {k: v for k, v in suggestion.config.items()}
            trial_p = trial_params(base, values | {"train.epochs": full})
            model = build_model(trial_p, meta)
            dynamic = dynamic_sparsity(model, trial_p, len(splits["train"]))

            def on_epoch(record, state, model=model, trial=trial):
                nonlocal spent
                spent += 1
                result = trial_metrics(model, splits["val"], record)
                events.append((time.time(), 1, result))
                decision = scheduler.on_trial_result(trial, result)
                return decision == SchedulerDecision.STOP or spent >= budget_epochs

            try:
                fit(model, trial_p.train, splits, seed=trial_p.seed, epochs=full, after_step=dynamic,
                    on_epoch=on_epoch)
            except DivergedError:
                spent += 1
                events.append((time.time(), 1, {"epoch": 0}))
                scheduler.on_trial_remove(trial) if trial.trial_id in scheduler.trial_info else None
            finally:
                if dynamic is not None:
                    dynamic.close()
    finally:
        torch.set_num_threads(threads)
    curve = anytime(events, objectives, full)
    return curve[-1][1], spent, curve


PEERS = {"moasha": moasha}
