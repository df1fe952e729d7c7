"""The ``tune`` stage: multi-objective, threshold-constrained, cost-aware search on Ray Tune.

Reads the data splits and the ``model``, ``train`` (and ``sparsity``) params as the base of
every trial, ``tune`` for the search. Writes ``tune/best_params.yaml`` (the selected
configuration as dotted key -> value, which ``train`` overlays on params.yaml),
``tune/pareto.csv``, ``tune/trials.csv``, ``tune/summary.json`` (metrics) and one TensorBoard
run per trial under ``runs/tune/`` plus an HParams table of every trial.

Hardware objectives (``tune.objectives`` with a ``target``) are resolved before Ray starts
(``sparsecli.tuning.hardware``: target files in ``hardware/``, precision, calibration) and get
a column each, named as the objective, after the model metrics' columns.

Ray's experiments live in ``tune/ray/`` (not a DVC output, so ``dvc repro`` leaves it): a
rerun with the same params and data after an interruption resumes them, as does
``--resume``, which also insists there is something to resume. Any other rerun starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from sparsecli.atomic import csv_text, json_text, write_all, write_json
from sparsecli.errors import ParamsError, SparsecliError
from sparsecli.params import Params, check_stage
from sparsecli.progress import Progress
from sparsecli.training import read_splits
from sparsecli.tuning.analysis import Analysis, analyse, summary
from sparsecli.tuning.hardware import check_fits_possible
from sparsecli.tuning.hardware import resolve as resolve_hardware
from sparsecli.tune_metrics import MEASURED, METRICS, NAMES
from sparsecli.tuning.search import Plan, TrialRecord, run_search
from sparsecli.tuning.space import check_space

METRIC_COLUMNS = NAMES
HPARAM_METRICS = (*METRIC_COLUMNS, "epochs", "cost_epochs", "feasible", "on_front")


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    folder = workdir / "tune"
    return {
        "best_params": folder / "best_params.yaml",
        "pareto": folder / "pareto.csv",
        "trials": folder / "trials.csv",
        "summary": folder / "summary.json",
        "runs": workdir / "runs" / "tune",
    }


def ray_dir(workdir: Path = Path(".")) -> Path:
    """Ray's experiments, kept for resuming; not a DVC output."""
    return workdir / "tune" / "ray"


def run(params: Params, workdir: Path = Path("."), progress: Progress | None = None, workers: int | None = None,
        address: str | None = None, resume: bool = False) -> dict:
    """Search, then write the outputs; returns the summary metrics. Raises before Ray starts on bad params."""
    progress = progress or Progress()
    paths = outputs(workdir)
    check_stage(params, "tune")  # tune.min_epochs against train.epochs (the CLI checks it when loading)
    plan = Plan.from_params(params)
    missing = plan.objectives.missing_reference()
    if missing is not None:
        raise ParamsError(f"tune.objectives.{missing}.threshold = null: a min objective needs a threshold "
                          "(it is the hypervolume reference point)")
    splits, meta = read_splits(workdir)
    check_space(params, meta)
    hardware = resolve_hardware(params, workdir / "hardware", progress)
    check_fits_possible(params, meta, hardware)
    restore = _prepare_storage(ray_dir(workdir), _fingerprint(params, meta), resume, progress)
    started = time.perf_counter()
    from sparsecli.tuning.session import ray_session

    with ray_session(workdir, address, workers) as cpus:
        records = run_search(params, splits, meta, ray_dir(workdir).resolve(), workers or cpus, restore, progress,
                             tuple(hardware))
    analysis = analyse(records, plan, params.tune.select, str(ray_dir(workdir)))
    metrics = summary(records, analysis, plan, params.tune.select, time.perf_counter() - started)
    metrics["objectives"] = _objectives(params, hardware)
    _write(paths, records, analysis, metrics, params, plan)
    _mark_finished(ray_dir(workdir))
    progress.message(f"tune: {metrics['front_size']} Pareto-optimal of {metrics['feasible']} feasible "
                     f"full-fidelity trials; selected {analysis.selected.name} ({params.tune.select})")
    return metrics


# ---------------------------------------------------------------- resuming

STATE_FILE = "run.json"


def _fingerprint(params: Params, meta: dict) -> str:
    """Identifies a tuning run: Ray's experiments are resumed only for the same params and data."""
    dumped = {k: v for k, v in params.model_dump().items() if k != "data"}
    text = json.dumps({"params": dumped, "data": meta.get("sha256")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _prepare_storage(folder: Path, fingerprint: str, resume: bool, progress: Progress) -> bool:
    """True to restore the experiments in ``folder``; otherwise empty it for a new run."""
    state_path = folder / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    same = state is not None and state.get("fingerprint") == fingerprint
    if resume:
        if state is None:
            raise SparsecliError(f"{folder}: no tuning run to resume; run `sparsecli tune` without --resume")
        if not same:
            raise ParamsError(f"{folder}: the run there used other params or data; "
                              "run `sparsecli tune` without --resume to start over")
        return True
    if same and not state.get("finished"):
        return True
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(state_path, {"fingerprint": fingerprint, "finished": False})
    return False


def _mark_finished(folder: Path) -> None:
    path = folder / STATE_FILE
    write_json(path, {**json.loads(path.read_text()), "finished": True})


# ---------------------------------------------------------------- outputs


def _objectives(params: Params, hardware) -> dict:
    """Each objective by name, as resolved (the report draws its front and thresholds from it)."""
    resolved = {h.name: h for h in hardware}
    out = {}
    for o in params.tune.objectives:
        entry = {"metric": o.metric, "mode": o.mode, "threshold": o.threshold}
        if o.name in resolved:
            h = resolved[o.name]
            entry |= {"target": o.target, "execution": h.execution, "batch": h.batch, "precision": h.precision,
                      "label": "measured" if o.metric in MEASURED else "estimated"}
        out[o.name] = entry
    return out


def metric_columns(plan: Plan) -> list[str]:
    """The metrics' columns of trials.csv and pareto.csv: the model metrics, then the hardware objectives'."""
    return [*METRIC_COLUMNS, *(name for name in plan.objectives.names if name not in METRIC_COLUMNS)]


def _write(paths: dict[str, Path], records: list[TrialRecord], analysis: Analysis, metrics: dict,
           params: Params, plan: Plan) -> None:
    keys = list(plan.keys)
    columns = metric_columns(plan)
    on_front = {r.name for r in analysis.front}
    rows = [_row(r, plan, on_front, analysis.selected.name, keys, columns) for r in records]
    front_rows = sorted((row for row in rows if row["on_front"]),
                        key=lambda row: plan.objectives.vector(row), reverse=True)
    runs_tmp = _write_runs(paths["runs"], records, rows, keys, params, columns)
    try:
        write_all({
            paths["best_params"]: lambda tmp: tmp.write_text(_best_params(analysis.selected, params, plan)),
            paths["pareto"]: lambda tmp: tmp.write_text(csv_text(front_rows, ["trial", *columns, "cost_epochs", "wall_seconds", "selected", *keys])),
            paths["trials"]: lambda tmp: tmp.write_text(csv_text(rows, list(rows[0]))),
            paths["summary"]: lambda tmp: tmp.write_text(json_text(metrics)),
        })
        shutil.rmtree(paths["runs"], ignore_errors=True)
        os.replace(runs_tmp, paths["runs"])
    finally:
        shutil.rmtree(runs_tmp, ignore_errors=True)


def _row(record: TrialRecord, plan: Plan, on_front: set[str], selected: str, keys: list[str],
         columns: list[str]) -> dict:
    result = record.result
    judged = record.status != "failed" and all(m in result for m in plan.objectives.names)
    row = {
        "trial": record.name, "phase": record.phase, "status": record.status, "epochs": record.epochs,
        "cost_epochs": record.cost_epochs, "wall_seconds": round(float(result.get("wall_seconds", 0.0)), 3),
        **{m: result.get(m, "") for m in columns},
        "feasible": _feasible(record, plan) if judged else False,
        "on_front": record.name in on_front, "selected": record.name == selected,
        "from_trial": record.from_trial or "", "error": record.error or "",
    }
    return row | {k: record.values.get(k, "") for k in keys}


PROVISIONAL = "provisional"


def _feasible(record: TrialRecord, plan: Plan) -> bool | str:
    """True/False at full fidelity; short of it, False only when a settled metric misses its
    threshold (it never will meet it), else ``provisional``: a short training cannot tell."""
    if record.status == "full":
        return plan.objectives.feasible(record.result)
    return PROVISIONAL if plan.objectives.feasible(record.result, final=False) else False


def _best_params(selected: TrialRecord, params: Params, plan: Plan) -> str:
    values = dict(selected.values)
    if plan.full_epochs != params.train.epochs:  # train what was tuned: max_epochs is the full training
        values["train.epochs"] = plan.full_epochs
    header = (f"# Written by `sparsecli tune`: trial {selected.name}, chosen by tune.select = {params.tune.select}.\n"
              "# `sparsecli train` overlays these dotted keys on params.yaml (then --set wins). Do not edit:\n"
              "# rerun `sparsecli tune` (or `dvc repro`) instead.\n")
    return header + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)


def _write_runs(target: Path, records: list[TrialRecord], rows: list[dict], keys: list[str], params: Params,
                columns: list[str]) -> Path:
    """Every trial's TensorBoard run, in a temporary folder beside ``target`` (renamed into place later)."""
    from sparsecli.tracking import Tracker, hparams_experiment

    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    choices = {d.key: d.values for d in params.tune.space if d.dist == "choice"}
    discrete = {k: v for k, v in choices.items() if len({type(x) for x in v}) == 1 and None not in v}
    hparams_experiment(folder, {**params.flat(), **{k: rows[0][k] if k in discrete else 0.0 for k in keys},
                                "phase": "search"},
                       [*HPARAM_METRICS, *columns[len(METRIC_COLUMNS):]], {**discrete, "phase": ["search", "retrain"]})
    for record, row in zip(records, rows):
        tracker = Tracker(folder / record.name)
        try:
            for epoch in record.history:
                tracker.epoch({"epoch": int(epoch["epoch"]), "train_loss": epoch["train_loss"],
                               "val_loss": epoch["val_loss"], "train_accuracy": epoch["train_accuracy"],
                               "val_accuracy": epoch["accuracy"], "lr": epoch["lr"]},
                              {METRICS[m].tag: epoch[m] for m in NAMES if METRICS[m].tag})
            final = {m: float(row[m]) for m in columns if row[m] != ""}
            final |= {"epochs": float(row["epochs"]), "cost_epochs": float(row["cost_epochs"]),
                      "feasible": float(row["feasible"] is True), "on_front": float(row["on_front"])}
            tracker.hparams({**{k: row[k] for k in keys}, "phase": record.phase}, final, experiment=False,
                            step=record.epochs)
        finally:
            tracker.close()
    return folder
