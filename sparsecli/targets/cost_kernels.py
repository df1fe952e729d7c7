"""Latency model of sparsecli's own CPU engines (dense torch, sparse-dense, sparse-sparse).

The roofline in ``cost_cpu.py`` describes a CPU; this describes what the benchmark stage
measures on it: the engines of ``sparsecli.kernels``, whose time at the sizes sparse
networks have is mostly per-call overhead, kWTA, and the kernels' per-multiply-add cost
in the cache level the weights sit in. Every coefficient comes from a calibration
(``sparsecli.kernels.calibrate``: a microbenchmark of the same kernels on synthetic
layers, run in the same process just before the measurement), per batch size:

    dense (torch), per linear layer:
        t = torch_call_s + s_per_mac_dense(weight_bytes) * macs * batch
        s_per_mac_dense(b): calibrated at a small weight (in cache) and a large one (from
        memory), interpolated in log(weight bytes) between them, constant beyond: the
        cache-to-bandwidth regime change
    dense kWTA (torch topk + scatter): t = topk_call_s + topk_s_per_unit * units * batch
    dense conv: t = call_s["conv-torch"] + s_per_mac["conv-torch"] * macs * batch;  max-pool: + pool_s_per_unit * units * batch
    sparse engines, per call: engine_call_s; per layer:
        t = call_s[kernel] + s_per_mac[kernel] * work * batch   (+ kwta_s_per_unit * units * batch with kWTA)
        work: sparse-dense blocks16 = stored block entries (16 per kept block);
              sparse-dense CSR = non-zeros; sparse-sparse = stored entries per input
              column * active inputs; a dense head = as dense torch
        sparse-dense mode also scatters winners back: + scatter_call_s + scatter_s_per_unit * units * batch
    sparse conv: dense input = s_per_mac["conv-dense"] * stored block entries * positions;
                 sparse input = s_per_mac["conv-sparse"] * active inputs * taps * out channels,
                 or with 16x1-block weights s_per_mac["conv-sparse-blocks"] * active inputs *
                 16 * (kept blocks per input channel over all taps)
    latency = engine_call_s + sum of layer terms     (dense: sum of layer terms)

The layer descriptions are plain dicts (``sparsecli.kernels.calibrate.describe_network``),
so this module needs neither torch nor numba.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MODES = ("dense", "sparse-dense", "sparse-sparse")


def dense_s_per_mac(weight_bytes: float, c: Mapping) -> float:
    """Seconds per multiply-add of torch's linear for a weight of ``weight_bytes`` (cache regime)."""
    (b0, r0), (b1, r1) = c["dense_points"]  # (weight bytes, s per MAC) small and large
    if weight_bytes <= b0:
        return r0
    if weight_bytes >= b1:
        return r1
    f = math.log(weight_bytes / b0) / math.log(b1 / b0)
    return r0 + f * (r1 - r0)


def _dense_linear(layer: Mapping, c: Mapping, batch: int) -> float:
    weight_bytes = 4 * layer["n_in"] * layer["n_out"]
    return c["torch_call_s"] + dense_s_per_mac(weight_bytes, c) * layer["n_in"] * layer["n_out"] * batch


def _dense_kwta(units: int, c: Mapping, batch: int) -> float:
    return c["topk_call_s"] + c["topk_s_per_unit"] * units * batch


def layer_latency(layer: Mapping, c: Mapping, mode: str, batch: int) -> float:
    """Seconds one layer takes in ``mode`` at ``batch`` under calibration ``c``."""
    units = layer["units_out"]
    has_kwta = layer.get("k") is not None
    if mode == "dense":
        if layer["kind"] == "conv":
            t = c["call_s"]["conv-torch"] + layer["dense_macs"] * batch * c["s_per_mac"]["conv-torch"]
            t += c["pool_s_per_unit"] * layer["conv_units"] * batch if layer.get("pool", 1) > 1 else 0.0
        else:
            t = _dense_linear(layer, c, batch)
        return t + (_dense_kwta(units, c, batch) if has_kwta else 0.0)
    kernel = layer["kernel_sd"] if mode == "sparse-dense" else layer["kernel_ss"]
    if kernel == "torch":  # a dense layer: torch's GEMM inside the sparse engine
        t = _dense_linear(layer, c, batch)
    else:
        work = layer["work_sd"] if mode == "sparse-dense" else layer["work_ss"]
        t = c["call_s"][kernel] + c["s_per_mac"][kernel] * work * batch
        if layer["kind"] == "conv" and layer.get("pool", 1) > 1:
            t += c["pool_s_per_unit"] * layer["conv_units"] * batch
    if has_kwta:
        t += c["kwta_s_per_unit"] * layer["kwta_units"] * batch
        if mode == "sparse-dense" and not layer.get("last", False):
            t += c.get("scatter_call_s", 0.0) + c["scatter_s_per_unit"] * units * batch
    return t


def predict_latency(layers: Sequence[Mapping], calibration: Mapping, mode: str, batch: int) -> dict:
    """Per-layer and total predicted latency (seconds per call of ``batch`` rows)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    c = calibration[str(batch)] if str(batch) in calibration else calibration[batch]
    per_layer = [layer_latency(layer, c, mode, batch) for layer in layers]
    total = sum(per_layer) + (c["engine_call_s"] if mode != "dense" else c["dense_call_s"])
    return {"latency_s": total, "layers_s": per_layer}
