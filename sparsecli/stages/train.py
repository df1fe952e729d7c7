"""The ``train`` stage: build the model the params describe, train it, measure it, save it.

Writes ``models/train.pt``, ``metrics/train.json``, ``metrics/train_history.csv`` (the
curves ``dvc plots`` draws) and the TensorBoard run ``runs/train/``. With
``train.dense_baseline`` the same network without masks and kWTA (ReLU instead; same
training settings and seed) is trained after it; its metrics are ``dense`` in
``metrics/train.json`` and its curves ``runs/train/dense/``. After every epoch a
resume checkpoint is kept beside the model (not a DVC output, so ``dvc repro`` does not
delete it); rerunning an interrupted stage with the same params and data continues from it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sparsecli import checkpoint
from sparsecli.atomic import aside, csv_text, json_text, replace_dir, write_all
from sparsecli.errors import CheckpointError
from sparsecli.evaluation import model_metrics, noise_protocol
from sparsecli.models import build_model
from sparsecli.params import Params, read_yaml
from sparsecli.progress import Progress
from sparsecli.sparse.dynamic import dynamic_sparsity
from sparsecli.sparse.stats import activity, weight_sparsity
from sparsecli.tracking import Tracker
from sparsecli.training import FitState, fit, read_splits

# Headline metrics shown in TensorBoard's HParams view.
HPARAM_METRICS = ("test_accuracy", "val_accuracy", "weight_sparsity", "activation_sparsity", "mac_reduction", "noise_score")


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    """The stage's DVC outputs (dvc.yaml declares exactly these; a test compares)."""
    return {
        "model": workdir / "models" / "train.pt",
        "metrics": workdir / "metrics" / "train.json",
        "history": workdir / "metrics" / "train_history.csv",
        "runs": workdir / "runs" / "train",
    }


def resume_path(workdir: Path = Path(".")) -> Path:
    """The per-epoch resume checkpoint: beside the model, not a DVC output (so `dvc repro` keeps it)."""
    return workdir / "models" / ".train.resume.pt"


def param_overlays(workdir: Path = Path(".")) -> list[tuple[str, dict]]:
    """``tune/best_params.yaml`` when the tune stage wrote one: dotted key -> value, applied
    over params.yaml and under ``--set`` (params.yaml < best_params.yaml < --set)."""
    from sparsecli.stages.tune import outputs as tune_outputs

    path = tune_outputs(workdir)["best_params"]
    return [(str(path), read_yaml(path, "tuned params file"))] if path.is_file() else []


def dense_params(params: Params) -> Params:
    """The same network without weight masks and kWTA (ReLU), static, with the same train settings and seed."""
    model = params.model.model_copy(deep=True)
    for layer in [*model.conv, *model.layers]:
        layer.weights.sparsity = 0.0
        layer.kwta = None
    sparsity = params.sparsity.model_copy(deep=True)
    sparsity.dynamic.method, sparsity.dynamic.init = "none", "uniform"
    return params.model_copy(update={"model": model, "sparsity": sparsity})


def run(params: Params, workdir: Path = Path("."), progress: Progress | None = None,
        out_dir: Path | None = None) -> dict:
    """Train on ``workdir``'s data; outputs go under ``out_dir`` (default: ``workdir``)."""
    progress = progress or Progress()
    out = Path(out_dir) if out_dir is not None else workdir
    paths, resume = outputs(out), resume_path(out)
    splits, meta = read_splits(workdir)
    noise = noise_protocol(params.train.noise, params.seed, meta, workdir)
    model = build_model(params, meta)
    dynamic = dynamic_sparsity(model, params, len(splits["train"]))  # ERK masks; SET/RigL hook
    fingerprint = _fingerprint(params, meta)
    state = _resume_state(resume, fingerprint, model)
    if state is not None:
        progress.message(f"train: resuming after epoch {state.epoch} from {resume}")
    runs = aside(paths["runs"])  # renamed to runs/train once every output is written
    tracker = Tracker(runs)
    for record in state.history if state else []:
        tracker.epoch(record)

    def on_epoch(record: dict, fit_state: FitState) -> None:
        _, per_layer = weight_sparsity(model)
        active = activity(model, splits["val"].x)["activation_sparsity_per_layer"]
        extra = {f"weight_density/{name}": 1 - s for name, s in per_layer.items()}
        extra |= {f"activation_density/{name}": 1 - s for name, s in active.items()}
        tracker.epoch(record, extra)
        tracker.histograms(model, record["epoch"])
        checkpoint.save(resume, model, params, meta, fingerprint=fingerprint, fit=_state_dict(fit_state))

    try:
        state = fit(model, params.train, splits, seed=params.seed, state=state, after_step=dynamic,
                    on_epoch=on_epoch, progress=progress)
        metrics = model_metrics(model, splits, noise)
        metrics |= {"epochs": state.epoch, "stopped_early": state.stopped_early}
        tracker.hparams(params.flat(), {k: float(metrics[k]) for k in HPARAM_METRICS})
    finally:
        if dynamic is not None:
            dynamic.close()
        tracker.close()
    if params.train.dense_baseline:
        metrics["dense"] = _dense_baseline(params, splits, meta, noise, runs / "dense", progress)
    write_all({
        paths["model"]: lambda tmp: checkpoint.save(tmp, model, params, meta, history=state.history,
                                                    optimizer=state.optimizer, metrics=checkpoint.scalars(metrics)),
        paths["metrics"]: lambda tmp: tmp.write_text(json_text(metrics)),
        paths["history"]: lambda tmp: tmp.write_text(csv_text(state.history, list(state.history[0]) if state.history else ["epoch"])),
    })
    replace_dir(runs, paths["runs"])
    resume.unlink(missing_ok=True)
    return metrics


def _dense_baseline(params: Params, splits: dict, meta: dict, noise, logdir: Path, progress: Progress) -> dict:
    """Train and measure the dense twin of the network (``dense_params``)."""
    dense = dense_params(params)
    model = build_model(dense, meta)
    tracker = Tracker(logdir)
    try:
        state = fit(model, dense.train, splits, seed=dense.seed, progress=progress, task="train (dense baseline)",
                    on_epoch=lambda record, _: tracker.epoch(record))
        metrics = model_metrics(model, splits, noise)
        tracker.hparams(dense.flat(), {k: float(metrics[k]) for k in HPARAM_METRICS})
    finally:
        tracker.close()
    return metrics | {"epochs": state.epoch, "stopped_early": state.stopped_early}


def _fingerprint(params: Params, meta: dict) -> str:
    """Identifies a run: a resume checkpoint is used only for the same params and data."""
    text = json.dumps({"params": params.model_dump(), "data": meta.get("sha256")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _state_dict(state: FitState) -> dict:
    return {
        "epoch": state.epoch,
        "history": state.history,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "best_val_accuracy": state.best_val_accuracy,
        "best_epoch": state.best_epoch,
        "best_state": state.best_state,
    }


def _resume_state(path: Path, fingerprint: str, model: torch.nn.Module) -> FitState | None:
    """The saved fit state if ``path`` is a resume checkpoint of this very run, else None."""
    if not path.is_file():
        return None
    try:
        payload = checkpoint.read(path)
    except CheckpointError:
        path.unlink()  # a resume file cut off by the interruption itself: start over
        return None
    if payload.get("fingerprint") != fingerprint:
        return None
    checkpoint.restore(model, payload["state_dict"], path)
    return FitState(**payload["fit"])


