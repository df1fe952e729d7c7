"""Estimated cost of a network as an hls4ml-style spatial dataflow design on an FPGA.

Source: the hls4ml architecture (Duarte et al., "Fast inference of deep neural
networks in FPGAs for particle physics", JINST 13 P07027, 2018): every layer gets
its own multipliers, a layer with reuse factor R multiplies each of its weights in
one of R cycles and accepts a new input every R cycles, layers run as a pipeline.
Resource and clock figures come from the target file (`hardware/fpga-*.yaml`);
its `estimator:` block holds this model's own assumptions. All results are
labelled `estimated`: none comes from a synthesis report.

Formulas (each written here once; macs and touched_fraction in network.py):

    work            = ceil(macs_per_position(mode))            MACs per output position;
                      sparse-sparse lanes are sized for input_density_sized (the per-sample
                      active share at a high quantile, default p99) when known, not the mean:
                      samples above it stall (stall_rate, reported per layer)
                      dense: all weights; sparse-dense: non-zero weights only, since
                      zero weights are constants that HLS removes; sparse-sparse:
                      non-zero weights * input_density, since only the columns of
                      active inputs are fetched and multiplied, so a layer's
                      multipliers are time-shared over the active inputs only
    reuse R         = policy: fixed (min(R, work)), per-layer list, or `auto`: the
                      smallest interval T such that every layer with R = clamp(floor(T /
                      output_positions), 1, work) fits the capped resources
    lanes           = ceil(work / R)                            MAC lanes of a layer
    dsp             = ceil(lanes / macs_per_dsp[precision])
    lut             = lanes * (lut_per_multiplier[precision]
                              + sparse_sparse_lut_per_multiplier if sparse-sparse) + lut_per_layer
    ff              = lanes * ff_per_multiplier[precision]
    index_bits      = ceil(log2(out_features))   sparse-sparse only: weights stored by input
                      column with their output row, decoded at run time; per weight
                      ceil(log2(ceil(out_features / R))) / R for a layer of RxC blocks the
                      target lists in `structures:` (R rows share one block-row index)
    storage_bits    = stored_weights * (precision_bits + index_bits)
                      (stored_weights: weight_count if dense, else nonzero_weights)
    on chip         = sum(storage_bits) <= caps.memory * onchip_memory_bits
    memory ports    = lanes weight words per cycle per layer; bandwidth = lanes * word bits;
                      bram36_for_ports = ceil(lanes * word_bits / 144) (two 72-bit ports per
                      BRAM36), beside bram36_for_capacity = ceil(storage_bits / 36864)
    available       = user_resources (what the shell leaves) when the target gives them
    fits            = every resource <= cap * available (memory only when weights must be
                      on chip, i.e. offchip_bandwidth_gbps is 0); if not, the binding
                      resource is the one with the largest used / (cap * available)
    copies          = max(1, floor(min over resources of cap * available / used))
    II (cycles)     = R * output_positions                      per layer
    latency (cyc)   = II + pipeline_overhead_cycles (+ sparse_sparse_index_cycles)  per layer
    throughput      = min(copies * clock / max(II),
                          batch * offchip_bandwidth / weight_bytes(batch))   (when streamed)
    weight bytes    = sum(storage_bits / 8 * touched_fraction(input_density, batch) if
                      sparse-sparse else storage_bits / 8) per batch; reported per inference
                      at batch 1 (memory_traffic_bytes) and, when streamed, off-chip
    latency (batch) = max((sum(latency) + (ceil(batch / copies) - 1) * max(II)) / clock,
                          weight_bytes(batch) / offchip_bandwidth)            (when streamed)
    energy/inference = power.typical_w / throughput

Assumptions beyond hls4ml: all multipliers map to DSPs (hls4ml may map narrow ones to
LUTs); weights live in BRAM/URAM (not registers) and each pipeline copy holds its
own; when weights do not fit on chip they stream from off-chip memory once per
batch; the reuse factor need not divide the layer size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sparsecli.targets.network import PRECISION_BITS, LayerShape, effective_mode, touched_fraction
from sparsecli.targets.schema import FpgaTarget
from sparsecli.targets.structures import column_index_bits

ReusePolicy = int | str | Sequence[int]
RESOURCES = ("dsp", "lut", "ff", "memory")


def network_cost(
    network: Sequence[LayerShape],
    target: FpgaTarget,
    mode: str,
    batch_size: int,
    precision: str,
    reuse_policy: ReusePolicy = "auto",
) -> dict:
    """Per-layer design and whole-network totals for one mode and batch size."""
    used_modes = [effective_mode(layer, mode) for layer in network]
    work = [max(1, math.ceil(_sized_macs(layer, m) - 1e-9)) for layer, m in zip(network, used_modes)]
    storage = [_storage_bits(layer, m, precision, target) for layer, m in zip(network, used_modes)]
    budget = _budget(target)
    on_chip = sum(storage) <= budget["memory"]
    streamed = not on_chip and target.offchip_bandwidth_gbps > 0

    def design(reuse: list[int]) -> tuple[list[dict], dict]:
        layers = [
            _layer_design(layer, m, w, r, precision, target)
            for layer, m, w, r in zip(network, used_modes, work, reuse)
        ]
        used = {res: sum(layer[res] for layer in layers) for res in ("dsp", "lut", "ff")}
        used["memory"] = 0 if streamed else sum(storage)
        return layers, used

    reuse = _reuse_factors(network, work, reuse_policy, lambda r: _fits(design(r)[1], budget))
    layers, used = design(reuse)
    for layer, bits in zip(layers, storage):
        layer["storage_bits"] = bits
        layer["bram36_for_capacity"] = math.ceil(bits / 36864)
    fits = _fits(used, budget)
    resources = {
        res: {"used": used[res], "available": avail, "cap": cap}
        for res, avail, cap in zip(RESOURCES, _available(target), _caps(target))
    }
    totals: dict = {
        "fits": fits,
        "binding_resource": None,
        "weights_on_chip": on_chip,
        "macs": sum(layer.macs(m) for layer, m in zip(network, used_modes)),
        "memory_traffic_bytes": _weight_bytes(network, used_modes, storage, 1),
        "memory_ports": sum(layer["weight_words_per_cycle"] for layer in layers),
        "memory_bandwidth_bits_per_cycle": sum(layer["memory_bandwidth_bits_per_cycle"] for layer in layers),
        "bram36_for_ports": sum(layer["bram36_for_ports"] for layer in layers),
        "stall_rate": max((layer["stall_rate"] or 0.0 for layer in layers), default=0.0),
    }
    if not fits:
        totals["binding_resource"] = max(RESOURCES, key=lambda res: used[res] / budget[res] if used[res] else 0.0)
        for res in RESOURCES:
            resources[res]["utilisation"] = used[res] / resources[res]["available"]
        unknown = ("latency_s", "throughput_ips", "energy_j", "bound", "offchip_traffic_bytes")
        totals.update({"copies": 0, **dict.fromkeys(unknown), "resources": resources})
        return {"totals": totals, "layers": layers}

    copies = max(1, math.floor(min(budget[res] / used[res] for res in RESOURCES if used[res] > 0)))
    clock = target.clock_mhz * 1e6
    max_ii = max(layer["ii_cycles"] for layer in layers)
    compute_ips = copies * clock / max_ii
    rounds = math.ceil(batch_size / copies)
    pipeline_s = (sum(layer["latency_cycles"] for layer in layers) + (rounds - 1) * max_ii) / clock
    offchip_bytes = 0.0
    throughput, latency, bound = compute_ips, pipeline_s, "compute"
    if streamed:
        offchip_bytes = _weight_bytes(network, used_modes, storage, batch_size)
        bandwidth = target.offchip_bandwidth_gbps * 1e9
        memory_ips = batch_size * bandwidth / offchip_bytes
        if memory_ips < compute_ips:
            throughput, bound = memory_ips, "memory"
        latency = max(pipeline_s, offchip_bytes / bandwidth)
    for res in RESOURCES:
        resources[res]["used"] = used[res] * copies
        resources[res]["utilisation"] = used[res] * copies / resources[res]["available"]
    totals.update(
        {
            "copies": copies,
            "ii_cycles": max_ii,
            "latency_cycles": sum(layer["latency_cycles"] for layer in layers),
            "latency_s": latency,
            "throughput_ips": throughput,
            "energy_j": target.power.typical_w / throughput,
            "bound": bound,
            "offchip_traffic_bytes": offchip_bytes / batch_size,
            "resources": resources,
        }
    )
    return {"totals": totals, "layers": layers}


def _sized_macs(layer: LayerShape, mode: str) -> float:
    """MACs per output position the lanes are sized for: sparse-sparse at the sized input density."""
    if mode == "sparse-sparse" and layer.input_density_sized is not None:
        return layer.nonzero_weights * max(layer.input_density, layer.input_density_sized)
    return layer.macs_per_position(mode)


def _layer_design(layer: LayerShape, mode: str, work: int, reuse: int, precision: str, target: FpgaTarget) -> dict:
    est = target.estimator
    lanes = math.ceil(work / reuse)
    # structure: 16x1-style blocks share an index (targets/structures.py, hardware/README.md)
    word_bits = PRECISION_BITS[precision] + (column_index_bits(layer, target) if mode == "sparse-sparse" else 0)
    lut_per_lane = est.lut_per_multiplier[precision]
    extra_cycles = 0
    if mode == "sparse-sparse":
        lut_per_lane += est.sparse_sparse_lut_per_multiplier
        extra_cycles = est.sparse_sparse_index_cycles
    ii = reuse * layer.output_positions
    return {
        "name": layer.name,
        "kind": layer.kind,
        "mode_used": mode,
        "macs": layer.macs(mode),
        "work": work,
        "reuse_factor": reuse,
        "multipliers": lanes,
        "dsp": math.ceil(lanes / target.macs_per_dsp[precision]),
        "lut": lanes * lut_per_lane + est.lut_per_layer,
        "ff": lanes * est.ff_per_multiplier[precision],
        "ii_cycles": ii,
        "latency_cycles": ii + est.pipeline_overhead_cycles + extra_cycles,
        # every lane reads one stored weight word per cycle: that many memory ports, unless
        # the weights are constants in the logic (dense / sparse-dense at reuse 1)
        "weight_words_per_cycle": lanes,
        "memory_bandwidth_bits_per_cycle": math.ceil(lanes * word_bits),
        "bram36_for_ports": math.ceil(lanes * word_bits / BRAM36_PORT_BITS),
        "active_density_sized": layer.input_density_sized if mode == "sparse-sparse" else None,
        "stall_rate": layer.stall_rate if mode == "sparse-sparse" else None,
    }


def _weight_bytes(network: Sequence[LayerShape], modes: list[str], storage: list[int], batch_size: int) -> float:
    """Weight bytes one batch reads: all stored bits, or the touched columns in sparse-sparse."""
    return sum(
        bits / 8 * (touched_fraction(layer.input_density, batch_size) if mode == "sparse-sparse" else 1)
        for layer, mode, bits in zip(network, modes, storage)
    )


def _storage_bits(layer: LayerShape, mode: str, precision: str, target: FpgaTarget) -> int:
    bits = PRECISION_BITS[precision]
    if mode == "dense":
        return layer.weight_count * bits
    if mode == "sparse-dense":
        return layer.nonzero_weights * bits
    index_bits = column_index_bits(layer, target)  # structure: per weight, shared within a listed block
    return math.ceil(layer.nonzero_weights * (bits + index_bits))


def _reuse_factors(network: Sequence[LayerShape], work: list[int], policy: ReusePolicy, fits) -> list[int]:
    """Reuse factor per layer under `policy`; `auto` binary-searches the smallest interval that fits."""
    if isinstance(policy, str):
        if policy != "auto":
            raise ValueError(f"reuse_policy must be 'auto', a positive integer or a list of them, got {policy!r}")

        def at(interval: int) -> list[int]:
            return [min(w, max(1, interval // layer.output_positions)) for layer, w in zip(network, work)]

        low, high = 1, max(w * layer.output_positions for layer, w in zip(network, work))
        if not fits(at(high)):
            return at(high)  # does not fit even at maximum reuse; caller reports the binding resource
        while low < high:
            mid = (low + high) // 2
            if fits(at(mid)):
                high = mid
            else:
                low = mid + 1
        return at(low)
    values = [policy] * len(network) if isinstance(policy, int) else list(policy)
    valid = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    if len(values) != len(network) or not valid:
        raise ValueError(
            f"reuse_policy must be 'auto', a positive integer or {len(network)} positive integers (one per layer), "
            f"got {policy!r}"
        )
    return [min(v, w) for v, w in zip(values, work)]


# A BRAM36 has two ports of up to 72 bits (UG573, UltraScale Memory Resources).
BRAM36_PORT_BITS = 2 * 72


def _available(target: FpgaTarget) -> tuple:
    """What user logic may use: the shell's leftovers when the target gives them, else the device."""
    r = target.user_resources or target.resources
    memory = target.onchip_memory_bits
    if target.user_resources is not None:
        memory = min(memory, r.bram36 * 36864 + r.uram * 294912)
    return (r.dsp, r.lut, r.ff, memory)


def _caps(target: FpgaTarget) -> tuple:
    c = target.caps
    return (c.dsp, c.lut, c.ff, c.memory)


def _budget(target: FpgaTarget) -> dict[str, float]:
    return {res: cap * avail for res, avail, cap in zip(RESOURCES, _available(target), _caps(target))}


def _fits(used: dict, budget: dict) -> bool:
    return all(used[res] <= budget[res] for res in RESOURCES)
