"""The report's sections: each reads its stage's outputs and returns None when they are absent.

A section gets ``out``: stage name -> that stage's ``outputs()`` (the report stage collects them, so
every path is said once, in its stage).

A section never breaks the report because another stage has not run: it is simply left out.
"""

from __future__ import annotations

import csv
import json
import math
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
    caption: str = ""


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


# Models the pipeline writes, in pipeline order: (label, the stage whose metrics file describes it).
MODEL_METRICS = (("train", "train"), ("pruned", "prune"))

Outputs = dict[str, dict[str, Path]]  # stage name -> its outputs()


def model_metrics(out: Outputs) -> dict[str, dict]:
    found = {}
    for label, stage in MODEL_METRICS:
        metrics = read_json(out[stage]["metrics"])
        if metrics is not None:
            found[label] = metrics.get("after", metrics)  # prune.json nests the pruned model's metrics
    return found


def data_section(out: Outputs) -> Section | None:
    meta = read_json(out["data"]["meta"])
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


def training_section(out: Outputs) -> Section | None:
    history = read_csv(out["train"]["history"])
    metrics = read_json(out["train"]["metrics"])
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


def sparsity_accuracy_section(out: Outputs) -> Section | None:
    """Accuracy against weight sparsity and against activation sparsity, one point per model."""
    models = model_metrics(out)
    trials = read_csv(out["tune"]["trials"]) or []
    if not models:
        return None
    section = Section("sparsity", "Accuracy vs sparsity")
    for kind, key in (("weight", "weight_sparsity"), ("activation", "activation_sparsity")):
        with figure(f"Accuracy vs {kind} sparsity", f"{kind} sparsity (fraction of zeros)",
                    "accuracy (models: test split; tune trials: val split)") as ax:
            for label, full, style in (("tune trials stopped early (val accuracy at their last epoch)", False,
                                        dict(marker="x", color="lightgrey")),
                                       ("tune trials at full fidelity (val accuracy)", True, dict(color="grey"))):
                points = [(t.get(key), t.get("accuracy")) for t in trials if (t.get("status") == "full") == full
                          and isinstance(t.get(key), float) and isinstance(t.get("accuracy"), float)]
                if points:
                    ax.scatter(*zip(*points), s=12, alpha=0.5, label=label, **style)
            for label, metrics in models.items():
                ax.scatter([metrics.get(key, 0.0)], [metrics.get("test_accuracy", 0.0)], s=60, label=label, zorder=3)
        section.figures.append(Figure(f"accuracy_vs_{kind}_sparsity", ax.figure.png,
                                      f"Test accuracy against {kind} sparsity for each model the pipeline wrote."))
    return section


def noise_section(out: Outputs) -> Section | None:
    models = {label: m for label, m in model_metrics(out).items() if m.get("accuracy_by_noise")}
    if not models:
        return None
    section = Section("noise", "Noise robustness")
    title, xlabel = NOISE_AXES.get(next(iter(models.values())).get("noise_kind", "gaussian"), NOISE_AXES["gaussian"])
    with figure(title, xlabel, "test accuracy") as ax:
        for label, metrics in models.items():
            curve = {0.0: metrics.get("test_accuracy")} | {float(k): v for k, v in metrics["accuracy_by_noise"].items()}
            levels = sorted(curve)
            ax.plot(levels, [curve[x] for x in levels], marker="o", label=label)
    section.figures.append(Figure("noise_robustness", ax.figure.png, "Test accuracy as input noise grows."))
    section.tables.append(Table(["model", "noise score (correct over all levels)", "of the maximum"],
                                [[label, num(m.get("noise_score")), pct(m.get("noise_score_fraction"))]
                                 for label, m in models.items()]))
    return section


# noise kind -> (plot title, x axis label)
NOISE_AXES = {
    "gaussian": ("Accuracy under Gaussian input noise", "noise std (standardised inputs)"),
    "pixels": ("Accuracy with a fraction of pixels set to white", "fraction of pixels set to white (mean + 2 std)"),
    "waveform": ("Accuracy with white noise mixed into the clips", "noise level a: (1 - a) clip + a uniform(-1, 1)"),
}


def _noise_curve(metrics: dict) -> tuple[list[float], list[float]]:
    curve = {float(k): v for k, v in metrics["accuracy_by_noise"].items()}
    curve.setdefault(0.0, metrics.get("test_accuracy"))
    levels = sorted(curve)
    return levels, [curve[x] for x in levels]


def dense_section(out: Outputs) -> Section | None:
    """The trained network beside its dense twin (``train.dense_baseline``): accuracy, noise, MACs."""
    sparse = read_json(out["train"]["metrics"])
    dense = (sparse or {}).get("dense")
    if not dense:
        return None
    section = Section("dense", "Sparse vs dense baseline")
    section.text.append("The dense baseline is the same network without weight masks and kWTA (ReLU instead), "
                        "trained with the same settings and seed (train.dense_baseline).")
    rows = [
        ["test accuracy", pct(sparse.get("test_accuracy")), pct(dense.get("test_accuracy"))],
        ["val accuracy", pct(sparse.get("val_accuracy")), pct(dense.get("val_accuracy"))],
        ["noise score (correct over all levels)", num(sparse.get("noise_score")), num(dense.get("noise_score"))],
        ["noise score, of the maximum", pct(sparse.get("noise_score_fraction")), pct(dense.get("noise_score_fraction"))],
        ["weight sparsity", pct(sparse.get("weight_sparsity")), pct(dense.get("weight_sparsity"))],
        ["activation sparsity", pct(sparse.get("activation_sparsity")), pct(dense.get("activation_sparsity"))],
        ["MACs per inference (non-zero)", num(sparse.get("macs_nonzero")), num(dense.get("macs_nonzero"))],
        ["MACs per inference (dense count)", num(sparse.get("macs_dense")), num(dense.get("macs_dense"))],
    ]
    section.tables.append(Table(["", "sparse (trained)", "dense baseline"], rows))
    if sparse.get("accuracy_by_noise") and dense.get("accuracy_by_noise"):
        title, xlabel = NOISE_AXES.get(sparse.get("noise_kind", "gaussian"), NOISE_AXES["gaussian"])
        with figure(f"Sparse vs dense: {title[0].lower()}{title[1:]}", xlabel, "test accuracy") as ax:
            ax.plot(*_noise_curve(sparse), marker="o", label="sparse (trained)")
            ax.plot(*_noise_curve(dense), marker="s", linestyle="--", label="dense baseline")
        section.figures.append(Figure("dense_vs_sparse_noise", ax.figure.png,
                                      "Test accuracy as noise grows, the sparse network and its dense baseline."))
    return section


# Ahmad & Scheinkman (2019), Table 1 (MNIST, 10 seeds): test accuracy %, noise score (of 110,000)
PAPER_TABLE_1 = {
    "dense": {"name": "Dense CNN-2", "accuracy": (99.31, 0.06), "noise_score": (97_040, 2_853)},
    "sparse": {"name": "Sparse CNN-2", "accuracy": (99.09, 0.05), "noise_score": (103_764, 1_125)},
}
PAPER_NOISE_MAX = 110_000  # 10,000 test images x 11 levels


def paper_section(out: Outputs) -> Section | None:
    """The paper reproduction (``metrics/paper.json``): the table in the paper's shape, the noise curves."""
    paper = read_json(out["paper"]["metrics"])
    if not paper or not paper.get("networks"):
        return None
    networks = paper["networks"]
    section = Section("paper", "Paper reproduction: How Can We Be So Dense?")
    section.text.append("Mean ± standard deviation over seeds (metrics/paper.json). The paper's Table 1 "
                        "(MNIST, 10,000 test images, 10 seeds) is shown for reference; a noise score is also "
                        "given as a fraction of its maximum (test samples × noise levels) to compare across data sizes.")
    rows = []
    for name, n in networks.items():
        acc, score, frac = n["test_accuracy"], n["noise_score"], n.get("noise_score_fraction") or {}
        rows.append([name, n["kind"], n["seeds"], f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}",
                     f"{score['mean']:,.0f} ± {score['std']:,.0f}",
                     f"{100 * frac.get('mean', 0):.1f} ± {100 * frac.get('std', 0):.1f}%",
                     pct((n.get("weight_sparsity") or {}).get("mean")),
                     num((n.get("macs_nonzero") or {}).get("mean"))])
    for kind, ref in PAPER_TABLE_1.items():
        (a, a_sd), (sc, sc_sd) = ref["accuracy"], ref["noise_score"]
        rows.append([f"paper: {ref['name']}", kind, 10, f"{a:.2f} ± {a_sd:.2f}", f"{sc:,} ± {sc_sd:,}",
                     f"{100 * sc / PAPER_NOISE_MAX:.1f} ± {100 * sc_sd / PAPER_NOISE_MAX:.1f}%", "–", "–"])
    section.tables.append(Table(["network", "kind", "seeds", "test accuracy %", "noise score", "noise score, of max",
                                 "weight sparsity", "non-zero MACs"], rows))
    best = {kind: max((n for n in networks.values() if n["kind"] == kind), key=lambda n: n["noise_score"]["mean"],
                      default=None) for kind in ("dense", "sparse")}
    if best["dense"] and best["sparse"]:
        gap = 100 * (best["dense"]["test_accuracy"]["mean"] - best["sparse"]["test_accuracy"]["mean"])
        holds = best["sparse"]["noise_score"]["mean"] >= best["dense"]["noise_score"]["mean"] and gap <= 1.0
        section.text.append(
            f"The paper's shape (best sparse noise score ≥ best dense, test accuracy at most 1 point lower): "
            f"{'holds' if holds else 'does NOT hold'} here: noise score {best['sparse']['noise_score']['mean']:,.0f} vs "
            f"{best['dense']['noise_score']['mean']:,.0f}, accuracy {gap:+.2f} points (dense minus sparse).")
    kind = next(iter(networks.values())).get("noise_kind", "pixels")
    title, xlabel = NOISE_AXES.get(kind, NOISE_AXES["pixels"])
    with figure(title, xlabel, "test accuracy (mean ± std over seeds)") as ax:
        for name, n in networks.items():
            levels = sorted(n["accuracy_by_noise"], key=float)
            xs = [float(x) for x in levels]
            mean = [n["accuracy_by_noise"][x]["mean"] for x in levels]
            std = [n["accuracy_by_noise"][x]["std"] for x in levels]
            style = "--" if n["kind"] == "dense" else "-"
            line, = ax.plot(xs, mean, linestyle=style, marker="o", label=f"{name} ({n['kind']})")
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2)
    section.figures.append(Figure("paper_noise_curves", ax.figure.png,
                                  "Accuracy against noise, each network's mean over seeds (band: ± 1 std)."))
    return section


def tune_section(out: Outputs) -> Section | None:
    summary = read_json(out["tune"]["summary"])
    trials = read_csv(out["tune"]["trials"])
    if summary is None or not trials:
        return None
    section = Section("tune", "Hyperparameter search")
    reference = summary.get("hypervolume_reference") or {}
    metrics = list(reference)[:2] or ["accuracy", "weight_sparsity"]
    section.text.append(
        f"{summary.get('trials')} trials of {summary.get('configurations')} configurations ({summary.get('searcher')}), "
        f"{summary.get('full_fidelity')} at full fidelity, {summary.get('feasible')} feasible, "
        f"{summary.get('front_size')} on the Pareto front (hypervolume {num(summary.get('hypervolume'))} above the "
        f"thresholds); cost {num(summary.get('cost_full_trainings'))} full-training equivalents. "
        f"Selected {summary.get('selected_trial')} by rule {summary.get('select')}.")
    objectives = summary.get("objectives") or {}
    x_key, y_key = metrics[0], metrics[-1]
    thresholds = {k: v.get("threshold") for k, v in objectives.items()} if objectives else reference
    png = _front_png(trials, summary, x_key, y_key, thresholds, "Trials: Pareto front")
    section.figures.append(Figure("tune_pareto", png,
                                  "Every trial; thresholds dashed; only full-fidelity feasible trials can be on the front."))
    # accuracy against each objective the front figure does not show (constraints aside)
    further = [(n, o) for n, o in objectives.items() if n not in (x_key, y_key) and o["metric"] != "fits"]
    for name, objective in further if "accuracy" in objectives else ():
        png = _front_png(trials, summary, "accuracy", name, thresholds, f"Accuracy against {name}")
        what = (f"{objective['metric']} on {objective['target']} ({objective['execution']}, batch {objective['batch']}, "
                f"{objective['precision']}; {objective['label']})" if "target" in objective else name)
        section.figures.append(Figure(
            f"tune_front_{_stem(name)}", png,
            f"Val accuracy against {what} for every trial; thresholds dashed. With more than two objectives a front "
            "point can look dominated in one view: it is ahead in another objective."))
    constraints = [n for n, o in objectives.items() if o["metric"] == "fits"]
    if constraints:
        section.text.append("Constraints: " + "; ".join(
            f"{n} ({objectives[n]['execution']}, batch {objectives[n]['batch']}, {objectives[n]['precision']}): "
            f"{sum(1 for t in trials if t.get(n) == 1.0)} of {sum(1 for t in trials if isinstance(t.get(n), float))} "
            "trials fit" for n in constraints) + ".")
    by_epochs = summary.get("trials_by_epochs") or {}
    if by_epochs:
        epochs = sorted(by_epochs, key=float)
        with figure("Cost per fidelity", "epochs a trial ran", "trials") as ax:
            ax.bar([str(e) for e in epochs], [by_epochs[e] for e in epochs])
        section.figures.append(Figure("tune_cost", ax.figure.png, "How many trials stopped at each number of epochs."))
        # a second-phase trial continues a stopped one: it reaches max_epochs but costs only the rest
        spent = {e: sum(int(float(t.get("cost_epochs") or 0)) for t in trials
                        if t.get("status") != "failed" and int(float(t.get("epochs") or 0)) == int(float(e)))
                 for e in epochs}
        rows = [[e, by_epochs[e], spent[e]] for e in epochs]
        failed = [t for t in trials if t.get("status") == "failed"]
        if failed:
            rows.append(["failed", len(failed), sum(int(float(t.get("cost_epochs") or 0)) for t in failed)])
        section.tables.append(Table(["epochs reached", "trials", "epochs spent"], rows))
    return section


def _front_png(trials: list[dict], summary: dict, x_key: str, y_key: str, thresholds: dict, title: str) -> bytes:
    """Every trial in (x, y): low fidelity, infeasible, feasible, the front; the selected one ringed."""
    with figure(title, x_key, y_key) as ax:
        full = [t for t in trials if t.get("status") == "full"]
        low = [t for t in trials if t.get("status") != "full" and isinstance(t.get(x_key), float)]
        groups = (("low fidelity (stopped early)", low, dict(color="lightgrey", s=14)),
                  ("full, infeasible", [t for t in full if t.get("feasible") != "True"], dict(color="tab:red", s=20, marker="x")),
                  ("full, feasible", [t for t in full if t.get("feasible") == "True" and t.get("on_front") != "True"],
                   dict(color="tab:blue", s=20)),
                  ("Pareto front", [t for t in full if t.get("on_front") == "True"], dict(color="tab:green", s=40)))
        for label, group, style in groups:
            group = [t for t in group if isinstance(t.get(x_key), float) and isinstance(t.get(y_key), float)
                     and math.isfinite(t[y_key])]  # a design that does not fit has no latency (inf)
            if group:
                ax.scatter([t[x_key] for t in group], [t[y_key] for t in group], label=label, **style)
        chosen = [t for t in trials if t.get("selected") == "True"]
        if chosen:
            ax.scatter([chosen[0][x_key]], [chosen[0][y_key]], s=160, facecolors="none", edgecolors="black",
                       label=f"selected ({summary.get('select')})")
        if thresholds.get(x_key) is not None:
            ax.axvline(thresholds[x_key], linestyle="--", color="grey", linewidth=1, label="thresholds")
        if thresholds.get(y_key) is not None:
            ax.axhline(thresholds[y_key], linestyle="--", color="grey", linewidth=1,
                       label=None if thresholds.get(x_key) is not None else "thresholds")
    return ax.figure.png


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def prune_section(out: Outputs) -> Section | None:
    metrics = read_json(out["prune"]["metrics"])
    sweep = read_csv(out["sensitivity"]["csv"])
    if metrics is None and not sweep:
        return None
    section = Section("prune", "Pruning")
    if metrics is not None:
        section.text.append(
            f"Method {metrics.get('method')} ({metrics.get('scope')}), pattern {metrics.get('pattern')}: "
            f"{'every group obeys it' if metrics.get('pattern_satisfied') else 'VIOLATED'}; "
            f"{metrics.get('finetune_epochs')} fine-tuning epochs.")
        trained = {name: s for name, s in (metrics.get("structures") or {}).items() if s != "unstructured"}
        if trained:  # layers trained with a weights.structure
            section.text.append(
                "Trained structures " + ", ".join(f"{name} {s}" for name, s in trained.items()) + ": "
                + ("kept by pruning." if metrics.get("structure_kept") else "BROKEN by pruning."))
        section.tables.append(Table(["", "before", "after"], [
            ["test accuracy", pct(metrics.get("test_accuracy_before")), pct(metrics.get("test_accuracy"))],
            ["val accuracy", pct(metrics.get("val_accuracy_before")), pct(metrics.get("val_accuracy"))],
            ["weight sparsity", pct(metrics.get("weight_sparsity_before")), pct(metrics.get("weight_sparsity"))],
            ["MAC reduction", f"{num(metrics.get('mac_reduction_before'))}×", f"{num(metrics.get('mac_reduction'))}×"],
            ["noise score", num(metrics.get("noise_score_before")), num(metrics.get("noise_score"))],
        ]))
        train = read_json(out["train"]["metrics"]) or {}
        before = train.get("weight_sparsity_per_layer", {})
        after = metrics.get("weight_sparsity_per_layer", {})
        names = list(after)
        with figure("Weight sparsity per layer", "layer", "weight sparsity (fraction of zeros)") as ax:
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [before.get(n, 0.0) for n in names], width=0.4, label="after train")
            ax.bar([x + 0.2 for x in xs], [after[n] for n in names], width=0.4, label="after prune")
            ax.set_xticks(list(xs), names)
            ax.set_ylim(0, 1)
        section.figures.append(Figure("prune_per_layer", ax.figure.png, "Weight sparsity of each layer before and after pruning."))
    if sweep:
        with figure("Pruning sensitivity (one layer at a time, no fine-tuning)", "layer sparsity (fraction of zeros)",
                    "val accuracy") as ax:
            for layer in dict.fromkeys(row["layer"] for row in sweep):
                rows = [r for r in sweep if r["layer"] == layer]
                ax.plot([r["sparsity"] for r in rows], [r["val_accuracy"] for r in rows], marker="o", label=layer)
        section.figures.append(Figure("sensitivity", ax.figure.png,
                                      "Val accuracy with each layer alone magnitude-pruned (`sparsecli prune --sensitivity`)."))
    return section


MODES = ("dense", "sparse-dense", "sparse-sparse")


def hardware_section(out: Outputs) -> Section | None:
    metrics = read_json(out["hardware_map"]["metrics"])
    if metrics is None:
        return None
    section = Section("hardware", "Hardware map")
    section.text.append(f"Model {metrics.get('model')}; ONNX export argmax agreement with torch "
                        f"{pct(metrics.get('onnx_argmax_agreement'))}. Full per-layer figures: {out['hardware_map']['report']}.")
    if metrics.get("hls_csim_accuracy") is not None:
        section.text.append(
            f"HLS C simulation (bit-accurate, kWTA as ReLU): test accuracy {pct(metrics['hls_csim_accuracy'])}, "
            f"the same network in float {pct(metrics.get('hls_relu_float_accuracy'))}, torch with kWTA "
            f"{pct(metrics.get('test_accuracy'))}.")
    checks = [[name, batch, _si(t["measured_dense_s"].get(batch), "s"), f"{num(ratio)}"]
              for name, t in (metrics.get("targets") or {}).items()
              for batch, ratio in (t.get("predicted_over_measured_dense") or {}).items()]
    if checks:
        section.tables.append(Table(["target", "batch", "measured dense torch latency", "predicted / measured"], checks,
                                    caption="Calibrated cost model against a timing on this machine (1.0 = exact)"))
    for name, target in (metrics.get("targets") or {}).items():
        rows = []
        for batch_key in sorted((k for k in target if k.startswith("batch_")), key=lambda k: int(k.split("_")[1])):
            for mode in MODES:
                cell = target[batch_key].get(mode) or {}
                rows.append([batch_key.split("_")[1], mode, "yes" if cell.get("fits") else "no",
                             _si(cell.get("latency_s"), "s"), num(cell.get("throughput_ips")),
                             _si(cell.get("energy_j"), "J"), f"{num(cell.get('speedup'))}×"])
        section.tables.append(Table(["batch", "mode", "fits", "latency", "inferences/s", "energy/inference",
                                     "speedup over dense"], rows,
                                    caption=f"{name} ({target.get('label')}, {target.get('precision')})"))
    return section


def benchmark_section(out: Outputs) -> Section | None:
    metrics = read_json(out["benchmark"]["metrics"])
    if metrics is None:
        return None
    machine = metrics.get("machine", {})
    section = Section("benchmark", "Benchmark (measured on this CPU)")
    section.text.append(f"{machine.get('cpu')}, {machine.get('cores')} cores; {metrics.get('method')}. "
                        f"Full tables: {out['benchmark']['report']}.")
    for failure in metrics.get("check_failures", []):
        section.text.append(f"Kernel disagreed with dense, no speedup reported: {failure}")
    rows = [[key, f"{num(s.get('sparse-dense'))}×", f"{num(s.get('sparse-sparse'))}×"]
            for key, s in (metrics.get("headline") or {}).items()]
    section.tables.append(Table(["network, batch, threads", "sparse-dense", "sparse-sparse"], rows,
                                caption="End-to-end speedup over dense torch (including kWTA)"))
    png = benchmark_speedup_png(metrics)
    if png is not None:
        section.figures.append(Figure("benchmark_speedup", png,
                                      "Measured end-to-end speedup against the ideal 1 / (weight density × activation density)."))
    return section


def benchmark_speedup_png(metrics: dict) -> bytes | None:
    """Measured end-to-end sparse-sparse speedup (1 thread) against its ideal; FPGA estimates as lines."""
    points = []
    for label, entry in (metrics.get("networks") or {}).items():
        for row in entry.get("rows", []):
            speed = row.get("speedup", {}).get("sparse-sparse")
            if row["stage"].startswith("end-to-end") and row["threads"] == 1 and speed:
                points.append((label, row["batch"], row["ideal"]["sparse-sparse"], speed))
    if not points:
        return None
    with figure("Measured speedup vs ideal (sparse-sparse, end to end, 1 thread)",
                "ideal speedup = dense MACs / sparse-sparse MACs", "measured speedup over dense torch") as ax:
        for label, batch, ideal, speed in points:
            ax.scatter([ideal], [speed], marker="o" if batch == 1 else "s", label=f"{label} b{batch}")
        top = max(max(p[2] for p in points), 1.0)
        ax.plot([1, top], [1, top], linestyle="--", color="grey", label="ideal")
        for name, p in (metrics.get("hardware_map") or {}).items():
            estimate = (p.get("speedup") or {}).get("sparse-sparse")
            if estimate and name.startswith("fpga"):
                ax.axhline(estimate, linestyle=":", linewidth=1, label=f"{name} (estimated, pipeline model)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    return ax.figure.png


def _si(x, unit: str) -> str:
    """A small positive quantity with an SI prefix: 7.3e-08 s -> '73.3 ns'."""
    if x is None:
        return "–"
    for prefix, scale in (("", 1), ("m", 1e-3), ("µ", 1e-6), ("n", 1e-9)):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x / 1e-9:.3g} n{unit}"


SECTIONS = (data_section, paper_section, tune_section, training_section, sparsity_accuracy_section, noise_section,
            dense_section, prune_section,
            hardware_section,
            benchmark_section)


def build_sections(out: Outputs) -> list[Section]:
    return [s for s in (make(out) for make in SECTIONS) if s is not None]
