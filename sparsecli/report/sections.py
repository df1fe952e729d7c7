"""The report's sections: each reads its stage's outputs and returns None when they are absent.

A section never breaks the report because another stage has not run: it is simply left out.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from sparsecli.errors import InputFileError
from sparsecli.report.figures import figure


@dataclass
class Figure:
    name: str  # file stem, e.g. "training_curves"
    png: bytes
    caption: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list]


@dataclass
class Section:
    key: str  # anchor id, e.g. "training"
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputFileError(f"{path}: not valid JSON; rerun the stage that writes it") from None


def read_csv(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


# Models the pipeline writes, in pipeline order: (label, metrics file).
MODEL_METRICS = (("train", "metrics/train.json"), ("pruned", "metrics/prune.json"))


def model_metrics(workdir: Path) -> dict[str, dict]:
    found = {}
    for label, path in MODEL_METRICS:
        metrics = read_json(workdir / path)
        if metrics is not None:
            found[label] = metrics.get("after", metrics)  # prune.json nests the pruned model's metrics
    return found


def data_section(workdir: Path) -> Section | None:
    meta = read_json(workdir / "data" / "meta.json")
    if meta is None:
        return None
    sizes = meta.get("sizes", {})
    shape = meta.get("image_shape")
    rows = [
        ["source", meta.get("source")],
        ["features", meta.get("features")],
        ["image shape (C×H×W)", "×".join(map(str, shape)) if shape else "–"],
        ["classes", meta.get("classes")],
        ["train / val / test samples", " / ".join(str(sizes.get(s, "–")) for s in ("train", "val", "test"))],
        ["standardised (fitted on train)", meta.get("standardized")],
        ["content SHA-256", str(meta.get("sha256", ""))[:16] + "…"],
    ]
    return Section("data", "Data", tables=[Table(["property", "value"], rows)])


def training_section(workdir: Path) -> Section | None:
    history = read_csv(workdir / "metrics" / "train_history.csv")
    metrics = read_json(workdir / "metrics" / "train.json")
    if not history and metrics is None:
        return None
    section = Section("training", "Training")
    if history:
        epochs = [row["epoch"] for row in history]
        with figure("Accuracy per epoch", "epoch", "accuracy") as ax:
            ax.plot(epochs, [r["train_accuracy"] for r in history], label="train")
            ax.plot(epochs, [r["val_accuracy"] for r in history], label="val")
        section.figures.append(Figure("training_accuracy", ax.figure.png, "Accuracy per epoch (train, val)."))
        with figure("Loss per epoch", "epoch", "cross-entropy loss") as ax:
            ax.plot(epochs, [r["train_loss"] for r in history], label="train")
            ax.plot(epochs, [r["val_loss"] for r in history], label="val")
        section.figures.append(Figure("training_loss", ax.figure.png, "Loss per epoch (train, val)."))
    if metrics is not None:
        section.tables.append(Table(["metric", "value"], [
            ["test accuracy", pct(metrics.get("test_accuracy"))],
            ["val accuracy", pct(metrics.get("val_accuracy"))],
            ["weight sparsity (all layers)", pct(metrics.get("weight_sparsity"))],
            ["activation sparsity (hidden layers, test set)", pct(metrics.get("activation_sparsity"))],
            ["MACs per inference: dense / non-zero", f"{num(metrics.get('macs_dense'))} / {num(metrics.get('macs_nonzero'))}"],
            ["MAC reduction", f"{num(metrics.get('mac_reduction'))}×"],
            ["epochs", metrics.get("epochs")],
        ]))
        layers = metrics.get("weight_sparsity_per_layer", {})
        active = metrics.get("activation_sparsity_per_layer", {})
        section.tables.append(Table(["layer", "weight sparsity", "activation sparsity"],
                                    [[name, pct(s), pct(active.get(name))] for name, s in layers.items()]))
    return section


def sparsity_accuracy_section(workdir: Path) -> Section | None:
    """Accuracy against weight sparsity and against activation sparsity, one point per model."""
    models = model_metrics(workdir)
    trials = read_csv(workdir / "tune" / "trials.csv") or []
    if not models:
        return None
    section = Section("sparsity", "Accuracy vs sparsity")
    for kind, key in (("weight", "weight_sparsity"), ("activation", "activation_sparsity")):
        with figure(f"Accuracy vs {kind} sparsity", f"{kind} sparsity (fraction of zeros)", "test accuracy") as ax:
            points = [(t.get(key), t.get("accuracy")) for t in trials
                      if isinstance(t.get(key), float) and isinstance(t.get("accuracy"), float)]
            if points:
                ax.scatter(*zip(*points), s=12, alpha=0.4, color="grey", label="tune trials (val accuracy)")
            for label, metrics in models.items():
                ax.scatter([metrics.get(key, 0.0)], [metrics.get("test_accuracy", 0.0)], s=60, label=label, zorder=3)
        section.figures.append(Figure(f"accuracy_vs_{kind}_sparsity", ax.figure.png,
                                      f"Test accuracy against {kind} sparsity for each model the pipeline wrote."))
    return section


def noise_section(workdir: Path) -> Section | None:
    models = {label: m for label, m in model_metrics(workdir).items() if m.get("accuracy_by_noise")}
    if not models:
        return None
    section = Section("noise", "Noise robustness")
    with figure("Accuracy under Gaussian input noise", "noise std (standardised inputs)", "test accuracy") as ax:
        for label, metrics in models.items():
            curve = {0.0: metrics.get("test_accuracy")} | {float(k): v for k, v in metrics["accuracy_by_noise"].items()}
            levels = sorted(curve)
            ax.plot(levels, [curve[x] for x in levels], marker="o", label=label)
    section.figures.append(Figure("noise_robustness", ax.figure.png, "Test accuracy as input noise grows."))
    section.tables.append(Table(["model", "noise score (sum of accuracies)"],
                                [[label, num(m.get("noise_score"))] for label, m in models.items()]))
    return section


SECTIONS = (data_section, training_section, sparsity_accuracy_section, noise_section)


def build_sections(workdir: Path) -> list[Section]:
    return [s for s in (make(workdir) for make in SECTIONS) if s is not None]
