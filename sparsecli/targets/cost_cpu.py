"""Roofline cost model of a CPU running a network, per layer and mode.

Source: the roofline model (Williams, Waterman, Patterson, "Roofline: an insightful
visual performance model", CACM 2009), with a per-kernel efficiency factor for how
far below peak each kernel family runs. Every number comes from the target file
(`hardware/cpu-*.yaml`) and these formulas, each written here once:

    lanes            = simd_width_bits / precision_bits
    peak_flops       = cores * lanes * fma_units * 2 * clock_ghz * 1e9
    flops            = 2 * macs(mode) * batch                      (macs: network.py)
    weight_bytes     dense:         weight_count * value_bytes
                     sparse-dense:  nonzero_weights * value_bytes + index_bytes   (CSR)
                     sparse-sparse: (nonzero_weights * value_bytes + index_bytes)
                                    * touched_fraction(input_density, batch)        (CSC, active columns)
    structure        s = structures.executed(layer.structure, target): the layer's structure if
                     the target lists it (`structures:`), else unstructured
    index_bytes      unstructured: nonzero_weights * INDEX_BYTES
                     RxC blocks:   nonzero_weights / (R * C) * INDEX_BYTES      (one index per block)
                     N:M:          nonzero_weights * ceil(log2 M) / 8          (position in its group)
    input_bytes      dense, sparse-dense: inputs * batch * value_bytes
                     sparse-sparse:       inputs * input_density * batch * (value_bytes + INDEX_BYTES)
    output_bytes     = outputs * batch * value_bytes
    traffic          = weight_bytes + input_bytes + output_bytes       (DRAM bytes per batch)
    t_compute        = flops / (peak_flops * efficiency[mode])
                       (a sparse layer in a structure s other than unstructured: efficiency.dense,
                       since its blocks or groups are whole SIMD vectors: an assumption)
    t_memory         = traffic / (memory_bandwidth_gbps * 1e9 * memory_efficiency)
    t_layer          = max(t_compute, t_memory) + layer_overhead_us * 1e-6
    latency (batch)  = sum of t_layer
    throughput       = batch / latency                                  (inferences/s)
    cores used       = 1 at batch 1 (one thread runs a batch-1 inference), else cores
    energy/inference = tdp_w * (cores used / cores) * latency / batch     (what the run occupies,
                       not the whole socket: an idle core's share is not charged)

Assumptions: weights are read from DRAM once per batch (they do not stay in cache
between batches: a conservative bound for networks smaller than the last-level
cache); a conv layer reads its weights once per batch and its inputs in the im2col
view; activation values use the weight precision; indices are int32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sparsecli.params import parse_structure
from sparsecli.targets.network import PRECISION_BITS, LayerShape, effective_mode, touched_fraction
from sparsecli.targets.schema import CpuTarget
from sparsecli.targets.structures import UNSTRUCTURED, executed, index_entries

INDEX_BYTES = 4

_EFFICIENCY_FIELD = {"dense": "dense", "sparse-dense": "sparse_dense", "sparse-sparse": "sparse_sparse"}


def layer_cost(layer: LayerShape, target: CpuTarget, mode: str, batch_size: int, precision: str) -> dict:
    """Roofline time and traffic of one layer for one batch."""
    used = effective_mode(layer, mode)
    structure = executed(layer.structure, target) if used != "dense" else UNSTRUCTURED
    value_bytes = PRECISION_BITS[precision] / 8
    macs = layer.macs(used)
    flops = 2 * macs * batch_size
    if used == "dense":
        weight_bytes = layer.weight_count * value_bytes
        input_bytes = layer.inputs * batch_size * value_bytes
    else:
        weight_bytes = layer.nonzero_weights * value_bytes + _index_bytes(layer, structure)
        input_bytes = layer.inputs * batch_size * value_bytes
        if used == "sparse-sparse":
            weight_bytes *= touched_fraction(layer.input_density, batch_size)
            input_bytes = layer.inputs * layer.input_density * batch_size * (value_bytes + INDEX_BYTES)
    output_bytes = layer.outputs * batch_size * value_bytes
    traffic = weight_bytes + input_bytes + output_bytes
    efficiency = getattr(target.efficiency, _EFFICIENCY_FIELD["dense" if structure != UNSTRUCTURED else used])
    t_compute = flops / (target.peak_flops(precision) * efficiency)
    t_memory = traffic / (target.memory_bandwidth_gbps * 1e9 * target.memory_efficiency)
    return {
        "name": layer.name,
        "kind": layer.kind,
        "mode_used": used,
        "structure_used": structure,
        "macs": macs,
        "flops": flops,
        "memory_traffic_bytes": traffic,
        "arithmetic_intensity": flops / traffic,
        "time_compute_s": t_compute,
        "time_memory_s": t_memory,
        "latency_s": max(t_compute, t_memory) + target.layer_overhead_us * 1e-6,
        "bound": "compute" if t_compute >= t_memory else "memory",
    }


def _index_bytes(layer: LayerShape, structure: str) -> float:
    """Bytes of indices a sparse layer stores in ``structure`` (the module docstring's index_bytes)."""
    kind, _, m = parse_structure(structure)
    if kind == "nm":
        return layer.nonzero_weights * math.ceil(math.log2(m)) / 8
    return index_entries(layer.nonzero_weights, structure) * INDEX_BYTES


def network_cost(
    network: Sequence[LayerShape], target: CpuTarget, mode: str, batch_size: int, precision: str
) -> dict:
    """Per-layer costs and whole-network totals for one mode and batch size."""
    layers = [layer_cost(layer, target, mode, batch_size, precision) for layer in network]
    latency = sum(layer["latency_s"] for layer in layers)
    flops = sum(layer["flops"] for layer in layers)
    traffic = sum(layer["memory_traffic_bytes"] for layer in layers)
    peak = target.peak_flops(precision)
    totals = {
        "fits": True,
        "macs": sum(layer["macs"] for layer in layers),
        "memory_traffic_bytes": traffic / batch_size,
        "latency_s": latency,
        "throughput_ips": batch_size / latency,
        "energy_j": target.tdp_w * (_cores_used(target, batch_size) / target.cores) * latency / batch_size,
        "peak_gflops": peak / 1e9,
        "achieved_gflops": flops / latency / 1e9,
        "resources": {
            "cores": target.cores,
            "compute_utilisation": flops / latency / peak,
            "bandwidth_utilisation": traffic / latency / (target.memory_bandwidth_gbps * 1e9),
        },
        "bound": _dominant_bound(layers),
    }
    return {"totals": totals, "layers": layers}


def _cores_used(target: CpuTarget, batch_size: int) -> int:
    """Cores a run occupies: one thread at batch 1, every core otherwise."""
    return 1 if batch_size == 1 else target.cores


def _dominant_bound(layers: list[dict]) -> str:
    """The bound of the layers that take most of the time."""
    compute = sum(layer["latency_s"] for layer in layers if layer["bound"] == "compute")
    memory = sum(layer["latency_s"] for layer in layers if layer["bound"] == "memory")
    return "compute" if compute >= memory else "memory"
