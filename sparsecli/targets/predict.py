"""`predict`: what a sparse network would do on one target, per layer and mode.

The result is a plain JSON-serialisable dict, so a stage can write it as DVC metrics:

    {"target", "kind", "target_file", "label", "model", "precision",
     "reuse_policy" (FPGA), "calibration" (CPU: measurements, or None),
     "modes": {mode: {str(batch_size): {"totals": {...}, "layers": [...],
                                          "speedup_over_dense": {...}}}}}

`label` is "calibrated" for a CPU target whose fields were measured on this machine
(`calibrate`), else "estimated": no figure here is a measurement of the network itself.

Speedups compare a mode with dense on the same target, batch size and precision:
throughput = mode / dense, latency and energy = dense / mode (above 1 is better);
None where either side does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sparsecli.targets import cost_cpu, cost_fpga
from sparsecli.targets.network import MODES, LayerShape, as_network
from sparsecli.targets.schema import CpuTarget, Target

Precision = str | Mapping[str, str] | None


def predict(
    network: Iterable[LayerShape | Mapping],
    target: Target,
    modes: Sequence[str] = MODES,
    batch_sizes: Sequence[int] = (1,),
    precision: Precision = None,
    reuse_policy: cost_fpga.ReusePolicy = "auto",
) -> dict:
    """Predict per-layer and whole-network costs of `network` on `target`.

    Args:
        network: LayerShapes (or dicts of their fields), in execution order.
        target: a loaded target (`load_target`); CPU targets listing `calibrated`
            fields should be passed through `calibrate` first.
        modes: any of "dense", "sparse-dense", "sparse-sparse"; dense is always
            computed, as the baseline of the speedups.
        batch_sizes: inferences per batch (positive integers).
        precision: a precision name, a mapping from target name or kind ("cpu",
            "fpga") to one, or None for the target's first listed precision.
        reuse_policy: FPGA only: "auto", one reuse factor, or one per layer.
    """
    layers = as_network(network)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {', '.join(map(repr, unknown))}; choose from {', '.join(MODES)}")
    if not batch_sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)!r}")
    chosen = _precision(target, precision)
    is_cpu = isinstance(target, CpuTarget)
    result: dict = {
        "target": target.name,
        "kind": target.kind,
        "target_file": target.source,
        "label": "calibrated" if is_cpu and target.measured is not None else "estimated",
        "model": (cost_cpu if is_cpu else cost_fpga).__name__,
        "precision": chosen,
    }
    if is_cpu:
        result["calibration"] = target.measured
        if target.calibrated and target.measured is None:
            result["calibration_note"] = "not calibrated: the calibrated fields hold the file's placeholder values"
    else:
        result["reuse_policy"] = reuse_policy if isinstance(reuse_policy, int | str) else list(reuse_policy)
    ordered = ["dense"] + [mode for mode in MODES if mode in modes and mode != "dense"]
    result["modes"] = {mode: {} for mode in ordered}
    for batch_size in dict.fromkeys(batch_sizes):
        for mode in ordered:
            if is_cpu:
                cost = cost_cpu.network_cost(layers, target, mode, batch_size, chosen)
            else:
                cost = cost_fpga.network_cost(layers, target, mode, batch_size, chosen, reuse_policy)
            cost["speedup_over_dense"] = _speedup(result["modes"]["dense"].get(str(batch_size)), cost)
            result["modes"][mode][str(batch_size)] = cost
    return result


def summary(result: dict) -> list[dict]:
    """One flat row per mode and batch size, for tables and reports."""
    rows = []
    for mode, by_batch in result["modes"].items():
        for batch_size, cost in by_batch.items():
            totals = cost["totals"]
            rows.append(
                {
                    "target": result["target"],
                    "mode": mode,
                    "batch_size": int(batch_size),
                    "fits": totals["fits"],
                    "macs": totals["macs"],
                    "latency_s": totals["latency_s"],
                    "throughput_ips": totals["throughput_ips"],
                    "energy_j": totals["energy_j"],
                    "speedup": cost["speedup_over_dense"]["throughput"],
                    "bound": totals["bound"],
                }
            )
    return rows


def precision_key(target: Target, by_target: Mapping[str, str]) -> str | None:
    """Which key of a precision mapping (``hardware_map.precision``) applies to ``target``: its
    name, else its kind ("cpu", "fpga"), else None (the target's first listed precision)."""
    return target.name if target.name in by_target else target.kind if target.kind in by_target else None


def _precision(target: Target, precision: Precision) -> str:
    if isinstance(precision, Mapping):
        key = precision_key(target, precision)
        precision = precision[key] if key else None
    supported = list(target.precisions)
    if precision is None:
        return supported[0]
    if precision not in supported:
        raise ValueError(
            f"precision {precision!r} is not supported by target {target.name} (supported: {', '.join(supported)})"
        )
    return precision


def _speedup(dense: dict | None, cost: dict) -> dict:
    """Ratios over dense (cost is dense itself when `dense` is None)."""
    base, this = (dense or cost)["totals"], cost["totals"]

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        if numerator is None or denominator is None or denominator == 0:
            return None
        return numerator / denominator

    return {
        "throughput": ratio(this["throughput_ips"], base["throughput_ips"]),
        "latency": ratio(base["latency_s"], this["latency_s"]),
        "energy": ratio(base["energy_j"], this["energy_j"]),
    }
