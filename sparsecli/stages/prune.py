"""The ``prune`` stage: make a trained model sparser, in the pattern the params ask for, and fine-tune it.

Reads ``models/train.pt`` and the data splits; writes ``models/pruned.pt`` (the same
checkpoint format as ``train.pt``, so every later stage takes either), ``metrics/prune.json``
and the TensorBoard run ``runs/prune/``. ``prune.method``: ``magnitude`` (one shot, then
fine-tuning), ``gmp`` (gradual, along the cubic schedule during fine-tuning), ``nm`` and
``block`` (hardware patterns, one shot, then fine-tuning) or ``none`` (pass-through).
Fine-tuning is ``training.fit`` with the checkpoint's own ``train`` settings, except
``prune.lr`` and ``prune.finetune_epochs``; kWTA layers keep working through it.

``sensitivity()`` (``sparsecli prune --sensitivity``) is an analysis mode outside the DVC
stage: each prunable layer alone, magnitude-pruned to each of ``prune.sensitivity``, val
accuracy without fine-tuning -> ``reports/sensitivity.csv`` and ``reports/sensitivity.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sparsecli import checkpoint
from sparsecli.atomic import aside, csv_text, json_text, replace_dir, write_all
from sparsecli.errors import CheckpointError
from sparsecli.evaluation import Split, evaluate, model_metrics, noise_protocol
from sparsecli.params import Params, PruneParams
from sparsecli.progress import Progress
from sparsecli.sparse.patterns import NM, Block, check
from sparsecli.sparse.pruning import PruningPlan, magnitude_prune, make_plan, pattern_of, selected_layers
from sparsecli.sparse.schedules import GradualPruning
from sparsecli.sparse.stats import weight_layers, weight_sparsity
from sparsecli.stages import train as train_stage
from sparsecli.tracking import Tracker
from sparsecli.training import fit, read_meta, read_splits

# Metrics also reported for the model before pruning, with a ``_before`` suffix.
BEFORE_KEYS = ("val_accuracy", "test_accuracy", "weight_sparsity", "macs_nonzero", "mac_reduction", "noise_score")
HPARAM_METRICS = ("test_accuracy", "val_accuracy", "test_accuracy_before", "weight_sparsity", "mac_reduction", "noise_score")

SENSITIVITY_COLUMNS = ["layer", "sparsity", "weight_sparsity", "val_accuracy"]


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {
        "model": workdir / "models" / "pruned.pt",
        "metrics": workdir / "metrics" / "prune.json",
        "runs": workdir / "runs" / "prune",
    }


def sensitivity_outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    """What ``sparsecli prune --sensitivity`` writes (an analysis, not DVC outputs of the stage)."""
    return {"csv": workdir / "reports" / "sensitivity.csv", "plot": workdir / "reports" / "sensitivity.png"}


def run(params: Params, workdir: Path = Path("."), progress: Progress | None = None) -> dict:
    progress = progress or Progress()
    paths = outputs(workdir)
    model, trained, splits, meta = _load(workdir)
    prune = params.prune
    selected_layers(model, prune)  # unknown layer names are an error for every method, none included
    plan = make_plan(model, prune) if prune.method != "none" else None
    masks_before = {name: layer.mask.clone() for name, layer in weight_layers(model).items()}
    noise = noise_protocol(trained.train.noise, trained.seed, read_meta(workdir), workdir)
    before = model_metrics(model, splits, noise)
    result = trained.model_copy(update={"prune": prune})
    runs = aside(paths["runs"])  # renamed to runs/prune once every output is written
    tracker = Tracker(runs)
    try:
        history, updates = _prune_and_finetune(model, plan, prune, trained, splits, tracker, progress)
        after = model_metrics(model, splits, noise)
        metrics = _summary(model, plan, prune, masks_before, before, after) | {"mask_updates": updates}
        tracker.hparams(result.flat(), {k: float(metrics[k]) for k in HPARAM_METRICS})
    finally:
        tracker.close()
    record = {"method": prune.method, "scope": prune.scope, "pattern": metrics["pattern"],
              "source": str(train_stage.outputs()["model"])}
    write_all({
        paths["model"]: lambda tmp: checkpoint.save(tmp, model, result, meta, history=history,
                                                    prune=record, metrics=checkpoint.scalars(metrics)),
        paths["metrics"]: lambda tmp: tmp.write_text(json_text(metrics)),
    })
    replace_dir(runs, paths["runs"])
    return metrics


def _load(workdir: Path) -> tuple[nn.Module, Params, dict[str, Split], dict]:
    """The trained model (checked against the data it is evaluated on), its params, the splits, its meta."""
    path = train_stage.outputs(workdir)["model"]
    model, trained, payload = checkpoint.load(path)
    splits, meta = read_splits(workdir)
    for key in ("features", "classes", "image_shape"):  # what the model's shape depends on
        if payload["meta"].get(key) != meta.get(key):
            raise CheckpointError(
                f"{path}: built for data with {key} = {payload['meta'].get(key)}, but data/meta.json has "
                f"{meta.get(key)}; rerun `sparsecli train` (or `dvc repro`)"
            )
    return model, trained, splits, payload["meta"]


def _prune_and_finetune(model: nn.Module, plan: PruningPlan | None, prune: PruneParams, trained: Params,
                        splits: dict[str, Split], tracker: Tracker, progress: Progress) -> tuple[list[dict], int]:
    """Prune (at once, or along the GMP schedule) and fine-tune; (fine-tuning history, mask updates)."""
    epochs = prune.finetune_epochs if plan is not None else 0
    steps_per_epoch = math.ceil(len(splits["train"]) / trained.train.batch_size)
    gradual = None
    if prune.method == "gmp":
        gradual = GradualPruning(plan, prune.initial_sparsity, prune.start_epoch * steps_per_epoch,
                                 prune.end_epoch * steps_per_epoch, prune.frequency)
        gradual(model, 0)
    elif plan is not None:
        plan.prune()
    val_loss, val_accuracy = evaluate(model, splits["val"])
    _log(tracker, model, {"epoch": 0, "val_loss": val_loss, "val_accuracy": val_accuracy})
    if epochs == 0:
        return [], int(plan is not None)
    finetune = trained.train.model_copy(update={"lr": prune.lr, "epochs": epochs, "early_stopping": 0,
                                                    "first_epoch_batch_size": None})
    state = fit(model, finetune, splits, seed=trained.seed, epochs=epochs, after_step=gradual,
                on_epoch=lambda record, _: _log(tracker, model, record), progress=progress, task="prune")
    return state.history, len(gradual.updates) if gradual else 1


def _log(tracker: Tracker, model: nn.Module, record: dict) -> None:
    overall, per_layer = weight_sparsity(model)
    tracker.epoch(record, {"sparsity/weights": overall} | {f"weight_sparsity/{n}": s for n, s in per_layer.items()})
    tracker.histograms(model, record["epoch"])


def _summary(model: nn.Module, plan: PruningPlan | None, prune: PruneParams, masks_before: dict[str, torch.Tensor],
             before: dict, after: dict) -> dict:
    pattern = pattern_of(prune)
    layers = weight_layers(model)
    groups = violations = resurrected = structure_violations = 0
    for name, layer in layers.items():
        weight = layer.module.weight.detach()
        if plan is not None and name in plan.layers:
            g, v = check(plan.pattern_of_layer(name), weight, masks_before[name], layer.mask)
            groups, violations = groups + g, violations + v
        if layer.pattern != Block():  # trained with a weights.structure: does the pruned model keep it?
            structure_violations += check(layer.pattern, weight, masks_before[name], layer.mask)[1]
        came_back = (masks_before[name] == 0) & ((layer.mask != 0) | (weight != 0))
        resurrected += int(came_back.sum())
    if plan is None:
        targets = {}
    elif isinstance(pattern, NM):
        targets = {name: 1 - pattern.n / pattern.m for name in plan.layers}
    else:
        targets = plan.final_targets()
    return {
        "method": prune.method,
        "scope": prune.scope,
        "pattern": pattern.name,
        "pattern_satisfied": violations == 0,
        "pattern_groups": groups,
        "pattern_violations": violations,
        # the trained weights.structure of each layer, and groups of it the pruned model breaks
        "structures": {name: layer.pattern.name for name, layer in layers.items()},
        "structure_kept": structure_violations == 0,
        "resurrected_weights": resurrected,
        "pruned_layers": list(plan.layers) if plan else [],
        "target_sparsity_per_layer": targets,
        "finetune_epochs": prune.finetune_epochs if plan else 0,
        **{f"{key}_before": before[key] for key in BEFORE_KEYS},
        "test_accuracy_change": after["test_accuracy"] - before["test_accuracy"],
        **after,
    }


# ---------------------------------------------------------------- sensitivity


def sensitivity(params: Params, workdir: Path = Path("."), progress: Progress | None = None) -> dict:
    """Val accuracy of the trained model with each prunable layer alone magnitude-pruned (no fine-tuning)."""
    progress = progress or Progress()
    paths = sensitivity_outputs(workdir)
    model, _, splits, _ = _load(workdir)
    layers = selected_layers(model, params.prune)
    sparsities = sorted(set(params.prune.sensitivity))
    rows = []
    for name, layer in layers.items():
        for target in sparsities:
            with _restored(layer):  # a blocks-trained layer is pruned in its blocks, as the stage would
                magnitude_prune([layer], target, layer.pattern if isinstance(layer.pattern, Block) else Block())
                zeros = float((layer.module.weight == 0).float().mean())
                rows.append({"layer": name, "sparsity": target, "weight_sparsity": zeros,
                             "val_accuracy": evaluate(model, splits["val"])[1]})
        mine = [r for r in rows if r["layer"] == name]
        progress.message(f"sensitivity: {name}: val accuracy {mine[0]['val_accuracy']:.4f} at sparsity "
                         f"{mine[0]['sparsity']}, {mine[-1]['val_accuracy']:.4f} at {mine[-1]['sparsity']}")
    write_all({
        paths["csv"]: lambda tmp: tmp.write_text(csv_text(rows, SENSITIVITY_COLUMNS)),
        paths["plot"]: lambda tmp: _plot(rows, tmp),
    })
    return {
        "layers": list(layers),
        "sparsities": sparsities,
        "val_accuracy": {name: {str(r["sparsity"]): r["val_accuracy"] for r in rows if r["layer"] == name}
                         for name in layers},
        "written": f"{paths['csv']}, {paths['plot']}",
    }


class _restored:
    """Put a layer's weights and mask back as they were when the block ends."""

    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        self.saved = (self.layer.module.weight.detach().clone(), self.layer.mask.clone(), self.layer.sparsity)

    def __exit__(self, *exc):
        weight, mask, sparsity = self.saved
        with torch.no_grad():
            self.layer.module.weight.copy_(weight)
            self.layer.mask.copy_(mask)
        self.layer.sparsity = sparsity


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in dict.fromkeys(r["layer"] for r in rows):
        mine = [r for r in rows if r["layer"] == name]
        axes.plot([r["sparsity"] for r in mine], [r["val_accuracy"] for r in mine], marker="o", label=name)
    axes.set_xlabel("sparsity of the layer (fraction of zero weights)")
    axes.set_ylabel("val accuracy")
    axes.set_title("Pruning sensitivity: one layer at a time, magnitude, no fine-tuning")
    axes.grid(alpha=0.3)
    axes.legend(title="layer")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
