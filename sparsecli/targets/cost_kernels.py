"""Latency model of sparsecli's own CPU engines (dense torch, sparse-dense, sparse-sparse).

The roofline in ``cost_cpu.py`` describes a CPU; this describes what the benchmark stage
measures on it: the engines of ``sparsecli.kernels``. A network's latency is the sum of
its layers' latencies plus the engine's per-call cost, each layer's latency read from a
table of layers timed in the same run on synthetic twins (same geometry and stored-weight
count, random weights and inputs: ``sparsecli.kernels.calibrate``), per batch size:

    latency(mode, batch) = call_s(mode, batch) + sum over layers l of table[batch][mode][l]
    call_s: dense = dense_call_s (DenseEngine around torch: numpy <-> torch, inference mode);
            sparse modes = engine_call_s (SparseEngine around its layers: checks, buffers)
    table[batch][mode][l]: layer l as that mode's engine runs it (fused kWTA; sparse-dense
            also densifies the winners; pooling; a CNN's rows in the engine's chunks)

Why a table and not seconds per multiply-add: measured layer by layer
(``benchmarks/cost_layers.py``, on a loaded machine), one coefficient per kernel did not
carry across layer geometries -- torch's conv costs 41 ps per MAC with 25-tap single-channel filters and 17
ps with 1,600-tap ones, torch's max-pool after the GSC CNN's first conv costs more than
the conv, its topk costs twice as much at k = 1,200 as at k = 120 over the same 12,544
units, and a CNN engine runs a batch of 64 as 8 chunks of 8 rows, where the CSR kernel
takes its untiled path at ~5x the batch-64 cost per MAC. The model leaves out the cache
interference between a network's layers (each is timed with its own weights warm, as
inside a serving loop's bursts) and the data dependence of kWTA and of the active inputs'
columns (the twin's are random).

The layer descriptions and tables are plain dicts, so this module needs neither torch nor numba.
"""

from __future__ import annotations

from collections.abc import Mapping

MODES = ("dense", "sparse-dense", "sparse-sparse")


def call_s(calibration: Mapping, mode: str) -> float:
    """The engine's own seconds per call around its layers in ``mode``."""
    return calibration["dense_call_s"] if mode == "dense" else calibration["engine_call_s"]


def predict_latency(table: Mapping, calibration: Mapping, mode: str, batch: int) -> dict:
    """Per-layer and total predicted latency (seconds per call of ``batch`` rows).

    ``table``: ``{batch: {mode: [s per layer]}}`` (``calibrate.table_entry`` per batch); ``calibration``:
    ``calibrate.calibrate``'s ``{batch: {...}}``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    key = str(batch)
    if key not in table or key not in calibration:
        raise ValueError(f"no calibration at batch {batch}; calibrated: {', '.join(sorted(table, key=int))}")
    per_layer = list(table[key][mode])
    return {"latency_s": call_s(calibration[key], mode) + sum(per_layer), "layers_s": per_layer}
