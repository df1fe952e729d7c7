"""The ``benchmark`` stage: sparse CPU inference measured against dense torch in one run.

Measures the pipeline's model (``models/pruned.pt``, else ``models/train.pt``; MLP or CNN),
the reference GSC-sized MLP (1600-1500-1500-12, weights 90%/95% sparse, unstructured and
16x1 blocks, 10%/5% active units; masks from a fixed seed) and the paper's GSC sparse CNN
(``kernels.measure.reference_cnn``) with every kernel, at batch 1 and
``benchmark.batch_size``; the pipeline model at each of ``benchmark.threads``, the reference
networks at one thread (``REFERENCE_THREADS``); MLPs also layer by layer. A
kernel's timing counts only after its output matched dense (``sparsecli.kernels.measure``).
onnxruntime on the exported dense model (``exports/model.onnx``) is the "what you would
otherwise deploy" baseline. The hardware-map predictions, when present, sit beside the
measurements, each labelled measured/estimated/calibrated. The engines' own cost model
(``targets.cost_kernels``) predicts each network's 1-thread latency from a synthetic twin's
layers, timed in the same rounds as the network (``prediction_ratio`` per mode and batch).

Writes ``metrics/benchmark.json``, ``reports/benchmark.md`` and ``reports/benchmark.png``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from sparsecli import checkpoint
from sparsecli.atomic import json_text, write_all
from sparsecli.errors import ParamsError
from sparsecli.params import Params
from sparsecli.progress import Progress
from sparsecli.report.benchmark_markdown import markdown
from sparsecli.targets.network import MODES
from sparsecli.training import read_splits

# The reference networks run at one thread: the setting of the published comparison and of the
# kernel table (benchmarks/bench_kernels.py has every thread count). Their all-core rows doubled
# the stage's time in a fresh clone (numba compiles every parallel kernel on first use: 125 s
# against 78 s on 2 cores), and the pipeline model keeps ``benchmark.threads``.
REFERENCE_THREADS = (1,)


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {
        "metrics": workdir / "metrics" / "benchmark.json",
        "report": workdir / "reports" / "benchmark.md",
        "plot": workdir / "reports" / "benchmark.png",
    }


def run(params: Params, workdir: Path = Path("."), progress: Progress | None = None) -> dict:
    from sparsecli.kernels.timing import threads_restored

    with threads_restored():  # measuring sets thread counts; the caller's stay as they were
        return _run(params, Path(workdir), progress or Progress())


def _run(params: Params, workdir: Path, progress: Progress) -> dict:
    from sparsecli.kernels import max_threads
    from sparsecli.kernels.cpu import machine
    from sparsecli.kernels.measure import (
        INNER,
        SETTINGS,
        STRUCTURES,
        bench_network,
        bench_setting,
        compile_network,
        compile_reference_cnns,
        compiling_beside,
        network_input,
        onnxruntime_timings,
        reference_cnn,
        reference_input,
        reference_mlp,
        tile_batch,
    )

    bp = params.benchmark
    paths = outputs(workdir)
    model_path = workdir / "models" / "pruned.pt"
    if not model_path.is_file():
        model_path = workdir / "models" / "train.pt"
    model, _, _ = checkpoint.load(model_path)
    splits, _ = read_splits(workdir)
    threads = sorted({max_threads() if t == 0 else min(t, max_threads()) for t in bp.threads})
    batches = sorted({1, bp.batch_size})
    inner = {b: INNER.get(b, max(1, 64 // b)) for b in batches}
    failures: list[str] = []
    networks: dict[str, dict] = {}

    # The cost model (kernels.calibrate, at one thread): the engines' per-call costs, and each
    # network's layers timed on its synthetic twin in the same interleaved rounds as the network's
    # own 1-thread measurement (so under the same load).
    from sparsecli.kernels.calibrate import TwinTable, average, calibrate
    from sparsecli.kernels.timing import set_threads

    model_entry = {"model": str(model_path.relative_to(workdir))}
    try:
        net = _model_network(model)
    except ParamsError as e:
        model_entry["skipped"] = str(e)
        net = None

    # Before any timing: numba's first compilation of the kernels (cached after it), the
    # reference CNNs' in a second process while this one compiles the other networks'. The
    # 16x1-block MLPs first: that process reaches the CNNs' CSR linear layer after their convs,
    # so each compiles one family of linear kernels and finds the other's in the cache (in the
    # table's order both compiled the block kernels at once: about 50 s on 2 cores, now about 45).
    progress.message("benchmark: compiling the kernels (numba; cached after the first run)")
    compiled = [net] if net is not None else []
    if bp.reference:
        blocks_first = sorted(STRUCTURES, key=lambda s: s != "blocks16")
        compiled = [reference_mlp(*setting, structure) for structure in blocks_first for setting in SETTINGS] + compiled
    with compiling_beside(compile_reference_cnns, batches) if bp.reference else contextlib.nullcontext():
        for network in compiled:
            compile_network(network, batches)

    progress.message("benchmark: calibrating the kernel cost model (microbenchmark)")
    set_threads(1)
    calibration = calibrate(batches)

    def measure(net, label: str, x, threads_: int, twins: TwinTable, active: float = 1.0) -> list[dict]:
        """Rows of one network at one batch and thread count; at 1 thread its twin's layers too."""
        batch = len(x)
        companions = twins.companions(batch) if threads_ == 1 else None
        if net.kind == "mlp":
            result = bench_setting(net.linears, label, active, x, threads_, bp.repeats, inner[batch], failures,
                                   companions)
            rows, times = [_row_dict(r) for r in result], result[-1].times
        else:
            result = bench_network(net, x, threads_, bp.repeats, inner[batch], failures, companions=companions)
            rows, times = [_network_row(result, batch, threads_)], result["times"]
        if companions:
            twins.record(batch, companions, times, calibration)
        return rows

    # (at_threads keyword-only: passed by position it once landed in ``active``, and the
    # reference CNNs ran at every thread count, compiling the parallel conv kernels)
    def measure_all(net, label: str, inputs, active: float = 1.0, *, at_threads=threads) -> dict:
        twins, rows = TwinTable(net), []
        for batch in batches:
            for t in at_threads:
                progress.message(f"benchmark: {label}, batch {batch}, {t} thread(s)")
                rows += measure(net, label, inputs(batch), t, twins, active)
        return {"rows": rows, "twins": twins}

    # The pipeline's own model, on real test inputs.
    if net is not None:
        from sparsecli.kernels.from_model import fidelity

        model_entry["network"] = net.kind
        model_entry["fidelity"] = fidelity(model, net.sparse(), splits["test"].x)
        test_x = splits["test"].x.numpy().reshape(len(splits["test"].x), -1)
        measured = measure_all(net, "pipeline model", lambda b: tile_batch(test_x, b))
        model_entry["rows"] = measured["rows"]
        model_entry |= _ideal(net)
        set_threads(1)
        calibration = average([calibration, calibrate(batches)])  # before and after: load drifts
        model_entry |= _cost_model(net, calibration, measured, batches)
        if bp.onnxruntime and (workdir / "exports" / "model.onnx").is_file():
            model_entry["onnxruntime"] = onnxruntime_timings(workdir / "exports" / "model.onnx", net, test_x,
                                                     batches, threads, bp.repeats, inner)
    networks["pipeline model"] = model_entry

    if bp.reference:
        for weight_sparsity, percent_on in SETTINGS:
            for structure in STRUCTURES:
                label = f"reference {weight_sparsity:.0%}w/{percent_on:.0%}a {structure}"
                ref = reference_mlp(weight_sparsity, percent_on, structure)
                measured = measure_all(ref, label, reference_input, percent_on, at_threads=REFERENCE_THREADS)
                networks[label] = {"network": "mlp", "weight_sparsity": weight_sparsity,
                                   "activation_density": percent_on, "structure": structure,
                                   "rows": measured["rows"], **_ideal(ref),
                                   **_cost_model(ref, calibration, measured, batches)}
        for structure in STRUCTURES:
            ref = reference_cnn(structure)
            label = f"reference {ref.label}"
            measured = measure_all(ref, label, lambda b, ref=ref: network_input(ref, b), at_threads=REFERENCE_THREADS)
            networks[label] = {"network": "cnn", "structure": structure, "rows": measured["rows"], **_ideal(ref),
                               **_cost_model(ref, calibration, measured, batches)}

    predictions = _predictions(workdir / "metrics" / "hardware_map.json")
    measured = _measured_latency(networks.get("pipeline model", {}))
    if predictions and measured and "cpu-local" in predictions:
        predicted = predictions["cpu-local"]["latency_s"]
        predictions["cpu-local"]["predicted_over_measured"] = {
            mode: predicted[mode] / measured[mode] for mode in ("dense", "sparse-sparse")
            if predicted.get(mode) and measured.get(mode)}
    metrics = {
        "machine": machine(),
        "method": "interleaved repetitions, median and IQR per call; speedup = dense torch median / kernel median; "
                  "a kernel whose output disagrees with dense gets no timing",
        "check_failures": failures,
        "headline": _headline(networks),
        "networks": networks,
        "hardware_map": predictions,
        "measured_latency_s": measured,
        "cost_model": {"model": "sparsecli.targets.cost_kernels (cpu-local, kernel model): engine call + the sum "
                                "of each layer timed on a synthetic twin (same geometry and stored weights, random "
                                "values) in this run at 1 thread, right after the network's own measurement "
                                "(per network: cost_layers); the engines' call costs: mean of a calibration before "
                                "and one after measuring the pipeline model",
                       "calibration": calibration},
        "prediction_ratio": model_entry.get("prediction_ratio"),
    }
    write_all({
        paths["metrics"]: lambda tmp: tmp.write_text(json_text(metrics)),
        paths["report"]: lambda tmp: tmp.write_text(markdown(metrics)),
        paths["plot"]: lambda tmp: _plot(metrics, tmp),
    })
    for failure in failures:
        progress.message(f"benchmark: CHECK FAILED, no speedup reported: {failure}")
    return metrics


def _model_network(model):
    from sparsecli.kernels.from_model import model_network

    return model_network(model)


def _ideal(net) -> dict:
    """Ideal end-to-end speedups: dense MACs over the MACs each mode must do."""
    macs = net.macs()
    return {"ideal_speedup": net.ideal(), "weight_density": macs["sparse-dense"] / macs["dense"]}


def _cost_model(net, calibration: dict, measured: dict, batches) -> dict:
    """``prediction_ratio`` from the network's twin layer table, and the table itself."""
    from sparsecli.kernels.calibrate import describe_network

    twins = measured["twins"]
    return {"prediction_ratio": _prediction_ratio(twins, calibration, measured["rows"], batches),
            "cost_layers": {"layers": describe_network(net), "table_s": twins.median}}


def _prediction_ratio(twins, calibration: dict, rows: list[dict], batches) -> dict:
    """Predicted / measured end-to-end latency per mode and batch (1 thread): ``ratio``, the median
    over the interleaved rounds of the ratio within a round (a drift of the load between rounds
    cancels); beside it the median latencies, their quotient ``ratio_of_medians`` and ``ratio_q1``
    from the first quartiles of the samples on both sides."""
    from sparsecli.targets.cost_kernels import predict_latency

    out = {}
    for mode in MODES:
        out[mode] = {}
        for batch in batches:
            row = next((r for r in rows if r["stage"].startswith("end-to-end") and r["batch"] == batch
                        and r["threads"] == 1), None)
            measured = ((row or {}).get("times_s") or {}).get(mode)
            if not measured or str(batch) not in twins.median:
                out[mode][str(batch)] = None
                continue
            prediction = predict_latency(twins.median, calibration, mode, batch)["latency_s"]
            q1 = predict_latency(twins.q1, calibration, mode, batch)["latency_s"]
            out[mode][str(batch)] = {"ratio": twins.paired[str(batch)][mode], "predicted_s": prediction,
                                     "measured_s": measured["median_s"],
                                     "ratio_of_medians": prediction / measured["median_s"],
                                     "ratio_q1": q1 / measured["q1_s"]}
    return out


def _network_row(result: dict, batch: int, threads: int) -> dict:
    """An end-to-end row (``measure.bench_network``) in the layout of ``_row_dict``."""
    times = result["times"]
    return {"batch": batch, "threads": threads, "stage": "end-to-end (incl. kWTA)",
            "times_s": {k: (v.as_dict() if v else None) for k, v in times.items()},
            "speedup": result["speedup"], "ideal": result["ideal"], "fraction_of_ideal": result["fraction_of_ideal"],
            "argmax_agreement": result["argmax_agreement"]}


def _row_dict(row) -> dict:
    dense = row.times["dense"]
    out = {"batch": row.batch, "threads": row.threads, "stage": row.stage,
           "times_s": {k: (v.as_dict() if v else None) for k, v in row.times.items()}}
    out["speedup"] = {k: (dense.median_s / v.median_s if v and dense else None)
                      for k, v in row.times.items() if k != "dense"}
    out["ideal"] = {"sparse-dense": row.ideal_sd, "sparse-sparse": row.ideal_ss}
    out["fraction_of_ideal"] = {k: (out["speedup"][k] / out["ideal"][k] if out["speedup"].get(k) and out["ideal"][k]
                                    else None) for k in ("sparse-dense", "sparse-sparse")}
    return out


def _headline(networks: dict) -> dict:
    """End-to-end sparse-sparse and sparse-dense speedups, flat, for `dvc metrics show`."""
    head = {}
    for label, entry in networks.items():
        for row in entry.get("rows", []):
            if row["stage"].startswith("end-to-end"):
                key = f"{label} b{row['batch']} t{row['threads']}"
                head[key] = {mode: row["speedup"].get(mode) for mode in ("sparse-dense", "sparse-sparse")}
    return head


def _predictions(path: Path) -> dict | None:
    """Per target, batch 1: the predicted speedup of each mode and cpu-local's predicted latencies."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    out = {}
    for name, target in (data.get("targets") or {}).items():
        batch = target.get("batch_1") or {}
        out[name] = {"label": target.get("label"),
                     "speedup": {mode: (batch.get(mode) or {}).get("speedup") for mode in MODES},
                     "latency_s": {mode: (batch.get(mode) or {}).get("latency_s") for mode in MODES}}
    return out


def _measured_latency(entry: dict) -> dict | None:
    """The pipeline model's measured end-to-end latency per mode at batch 1, 1 thread."""
    for row in entry.get("rows", []):
        if row["stage"].startswith("end-to-end") and row["batch"] == 1 and row["threads"] == 1:
            return {mode: (t or {}).get("median_s") for mode, t in row["times_s"].items()}
    return None


def _plot(metrics: dict, path: Path) -> None:
    from sparsecli.report.sections import benchmark_speedup_png

    png = benchmark_speedup_png(metrics)
    if png is None:  # nothing timed (every kernel disagreed): an empty but valid figure
        from sparsecli.report.figures import figure

        with figure("No sparse-sparse timing passed its check", "ideal speedup", "measured speedup") as ax:
            pass
        png = ax.figure.png
    path.write_bytes(png)
