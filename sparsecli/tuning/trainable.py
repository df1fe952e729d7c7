"""The Ray Tune trainable: a trial is the same network trained by ``training.fit``.

Fidelity is epochs: every trial trains toward ``full_epochs`` (so the learning-rate
schedule spans the full training) and the scheduler stops the unpromising ones early.
After each epoch the trial reports its val accuracy, sparsities and MAC reduction plus its
cost and any hardware objectives' values (``sparsecli.tuning.hardware``, under their names),
with a checkpoint (model + fit state), so an interrupted run resumes a trial where it
stopped and the second phase finishes a cheap trial instead of starting it over: resuming
``fit`` from an epoch checkpoint gives the same result as never stopping. A trial whose loss
diverges ends with a result carrying ``diverged`` (its message) instead of objective values.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sparsecli.evaluation import Split
from sparsecli.sparse.stats import activity, weight_sparsity
from sparsecli.tune_metrics import NAMES
from sparsecli.tuning.hardware import HardwareObjective, measure
from sparsecli.tuning.space import trial_params

CHECKPOINT_FILE = "trial.pt"
DIVERGED_KEY = "diverged"  # in a trial's last result: why its loss stopped being finite
CONTINUE_KEY = "continue_from"  # second phase: the checkpoint folder of the cheap trial to finish


def trial_metrics(model, val: Split, record: dict, hardware: Sequence[HardwareObjective] = ()) -> dict:
    """What a trial reports after an epoch: every metric of ``metrics.NAMES`` (on the val split), the
    hardware objectives' values by name (activation densities on the val split), then the curves."""
    overall, _ = weight_sparsity(model)
    act = activity(model, val.x)
    measured = {
        "accuracy": record["val_accuracy"],
        "weight_sparsity": overall,
        "activation_sparsity": act["activation_sparsity"],
        "mac_reduction": act["mac_reduction"],
    }
    return {
        "epoch": record["epoch"],
        **{name: measured[name] for name in NAMES},
        **measure(model, val.x, list(hardware)),
        "train_loss": record["train_loss"],
        "train_accuracy": record["train_accuracy"],
        "val_loss": record["val_loss"],
        "lr": record["lr"],
    }


def run_trial(config: dict, *, base: dict, keys: list[str], splits: dict, meta: dict, full_epochs: int,
              hardware: Sequence[HardwareObjective] = ()) -> None:
    """Train one configuration, reporting after every epoch (Ray calls this in a worker)."""
    import torch
    from ray import tune

    from sparsecli.models import build_model
    from sparsecli.sparse.dynamic import dynamic_sparsity
    from sparsecli.training import DivergedError, FitState, fit

    torch.set_num_threads(1)  # one CPU per trial; concurrency comes from running trials side by side
    config = config.get("candidate", config)  # second phase: a grid over candidate configurations
    # train.epochs = the full training, so schedules that span it (lr, dynamic sparsity) match `train`'s
    params = trial_params(base, {key: config[key] for key in keys} | {"train.epochs": full_epochs})
    model = build_model(params, meta)
    dynamic = dynamic_sparsity(model, params, len(splits["train"]))  # ERK masks and the SET/RigL hook, as in train
    state, spent_epochs, spent_seconds = None, 0, 0.0
    own = tune.get_checkpoint()
    source = own.path if own is not None else config.get(CONTINUE_KEY)
    if source:
        payload = torch.load(Path(source) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(payload["model"])
        state = FitState(**payload["fit"])
        if own is not None:  # this trial's own progress; a continued trial's cost starts at 0
            spent_epochs, spent_seconds = payload["cost_epochs"], payload["wall_seconds"]
    first_epoch = state.epoch if state else 0
    last_epoch = [first_epoch]
    start = time.perf_counter()

    def cost(epoch: int) -> dict:
        return {"cost_epochs": spent_epochs + epoch - first_epoch, "wall_seconds": spent_seconds + time.perf_counter() - start,
                "reported_at": time.time()}  # when, across trials (anytime curves of a search)

    def on_epoch(record: dict, fit_state: FitState) -> None:
        last_epoch[0] = record["epoch"]
        metrics = trial_metrics(model, splits["val"], record, hardware) | cost(record["epoch"])
        # staged in the trial's own folder (under the Ray temp dir, inside the project), not /tmp
        with tempfile.TemporaryDirectory(prefix=".checkpoint-", dir=tune.get_context().get_trial_dir()) as folder:
            torch.save({
                "model": model.state_dict(),
                "fit": {"epoch": fit_state.epoch, "history": fit_state.history, "optimizer": fit_state.optimizer,
                        "scheduler": fit_state.scheduler},
                "cost_epochs": metrics["cost_epochs"],
                "wall_seconds": metrics["wall_seconds"],
            }, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        fit(model, params.train, splits, seed=params.seed, epochs=full_epochs, state=state, after_step=dynamic,
            on_epoch=on_epoch)
    except DivergedError as e:
        # A normal outcome of a search, not a crash: end the trial with a result saying so
        # (a raised error would cost a new Ray worker); it is recorded as failed all the same.
        epoch = last_epoch[0] + 1
        tune.report({"epoch": epoch, DIVERGED_KEY: str(e)} | cost(epoch))
    finally:
        if dynamic is not None:
            dynamic.close()
