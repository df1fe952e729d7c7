"""The in-run microbenchmark behind ``sparsecli.targets.cost_kernels``: per-layer latency tables.

A network's predicted latency is composed from its layers, each timed on a *synthetic twin*:
a layer of the same geometry (shapes, kernel size, padding, stride, pooling, kWTA ``k`` and
locality) and the same number of stored weights in the same structure, with random weights
(seed 0) fed random inputs, built and dispatched by the sparse engines themselves
(``Network.sparse``, so whatever kernel an engine picks for that layer is the one timed;
dense mode: the torch ops of ``DenseEngine`` / ``DenseCNNEngine``, one by one) -- the
layer-wise latency lookup table of hardware-aware architecture search (FBNet, ProxylessNAS).
Nothing of the scored network's own weights, inputs or timings enters:

    twin weight   unstructured / dense: each output row's non-zero count, at random columns (a CSR
                  kernel's cost follows the row lengths: equal rows of 160 ran 2x faster in the
                  network than rows of 160 +- 12, whose remainders take the scalar loop)
                  16x1 blocks (``formats.detect_structure``): its kept-block count at random
                  block places, its non-zeros at random inside them (so the engine packs the
                  same stored entries and detects the same structure)
    twin input    standard normal rows (``measure.network_input``, seed 1); each later layer
                  gets what the twin's previous layer gives (kWTA winners of random weights)
    layer time    the twin run by each mode's engine as the engine runs it, with a clock around
                  each layer's calls (fused kWTA, densifying the winners in sparse-dense mode,
                  pooling, a CNN's rows in the engine's chunks): per layer, the median over
                  samples of its mean time per call within a sample of ``measure.INNER`` calls
                  (``LayerClock``), the samples taken in the same interleaved rounds as the
                  network's own measurement (``twin_companions``)

``calibrate(batches)`` adds the per-call cost of the engines around their layers, on a tiny
layer (8x8 dense, 32x32 at 25% sparse), median of interleaved samples:

    torch_call_s    one F.linear call on 8x8
    dense_call_s    DenseEngine of that layer minus torch_call_s (numpy <-> torch, inference mode)
    engine_call_s   SparseEngine of a 32x32 layer minus the layer's bound call (input checks, output)

``TwinTable`` holds a network's twin and, per batch, the table (medians, first quartiles) and
the paired ratio per mode: the median over rounds of (call_s + the twin's layers in the round)
/ the network's own sample in that round (``paired_ratio``). ``layer_clocks`` clocks a real
network the same way: the diagnostic ``benchmarks/cost_layers.py`` prints predicted beside
measured per layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sparsecli.kernels.engine import DenseEngine, LayerSpec, SparseEngine
from sparsecli.kernels.formats import BLOCK, detect_structure
from sparsecli.kernels.timing import interleaved_timings

MODES = ("dense", "sparse-dense", "sparse-sparse")


def twin_weight(rng, weight: np.ndarray) -> np.ndarray:
    """Random float32 weight of ``weight``'s shape with its non-zero count per output row, or its 16x1 kept-block count
    (the weight's rows = output units; further axes, e.g. a conv's taps, flattened as columns)."""
    w = np.asarray(weight)
    flat = w.reshape(w.shape[0], -1)
    n_out, n_in = flat.shape
    nnz = int(np.count_nonzero(flat))
    keep = np.zeros(flat.size, bool)
    if detect_structure(flat) == "blocks16":
        kept = (np.pad(flat != 0, ((0, -n_out % BLOCK), (0, 0))).reshape(-1, BLOCK, n_in)).any(axis=1)
        blocks = np.zeros(kept.size, bool)
        blocks[rng.choice(kept.size, int(kept.sum()), replace=False)] = True
        capacity = np.repeat(blocks.reshape(kept.shape), BLOCK, axis=0)[:n_out].reshape(-1)
        places = np.flatnonzero(capacity)
        keep[rng.choice(places, min(nnz, len(places)), replace=False)] = True
    else:  # each row keeps its count: a CSR kernel's cost follows the row lengths, not only their sum
        for i, count in enumerate(np.count_nonzero(flat, axis=1)):
            keep[i * n_in + rng.choice(n_in, count, replace=False)] = True
    fan_in = max(1.0, nnz / n_out)
    values = rng.standard_normal(flat.size) / np.sqrt(fan_in)
    return (values * keep).astype(np.float32).reshape(w.shape)


def twin_network(net, seed: int = 0):
    """``net`` (a ``measure.Network``) with every weight and bias replaced by a random twin."""
    from sparsecli.kernels.measure import Network

    rng = np.random.default_rng(seed)

    def bias(n):
        return (0.01 * rng.standard_normal(n)).astype(np.float32)

    convs = [dataclasses.replace(s, weight=twin_weight(rng, s.weight), bias=bias(s.c_out)) for s in net.convs]
    linears = [dataclasses.replace(s, weight=twin_weight(rng, s.weight), bias=bias(s.n_out)) for s in net.linears]
    return Network(net.kind, f"twin of {net.label}", linears, convs, net.input_shape)


def describe_network(net) -> list[dict]:
    """Each layer's geometry and the kernel each sparse engine runs it with (``engine.describe``)."""
    sd, ss = net.sparse("dense").describe(), net.sparse("sparse").describe()
    return [{"shape": list(a["shape"]), "density": a["density"], "k": a["k"],
             "sparse-dense": f"{a['kernel']} {a['format']}", "sparse-sparse": f"{b['kernel']} {b['format']}"}
            for a, b in zip(sd, ss)]


def calibrate(batches, repeats: int = 15) -> dict:
    """The engines' per-call costs around their layers, keyed by batch size (as a string)."""
    import torch
    import torch.nn.functional as F

    from sparsecli.kernels.measure import INNER

    rng = np.random.default_rng(0)
    tiny = LayerSpec(rng.standard_normal((8, 8)).astype(np.float32))
    w32 = (rng.standard_normal((32, 32)) * (rng.random((32, 32)) < 0.25)).astype(np.float32)
    dense_tiny = DenseEngine([tiny])
    eng32 = SparseEngine.from_layers([LayerSpec(w32)], "unstructured")
    out = {}
    for batch in sorted(set(int(b) for b in batches)):
        x8 = torch.from_numpy(rng.standard_normal((batch, 8)).astype(np.float32))
        x32 = rng.standard_normal((batch, 32)).astype(np.float32)
        w8 = torch.from_numpy(tiny.weight)
        bound = eng32._program(batch)  # the layer's call as the engine binds it

        def sd32(x32=x32, x_in=bound.x_in, layer32=bound.steps[0][0]):  # what the layer clocks time of it
            np.copyto(x_in, x32)
            layer32()

        def torch8(x8=x8):
            with torch.inference_mode():
                return F.linear(x8, w8)

        fns = {"torch8": torch8, "dense_engine8": lambda x8=x8: dense_tiny(x8.numpy()),
               "sd32": sd32, "engine32": lambda x32=x32: eng32(x32)}
        inner = INNER.get(batch, max(1, 64 // batch))
        t = {k: v.median_s for k, v in interleaved_timings(fns, repeats=repeats, warmup=2, inner=inner).items()}
        out[str(batch)] = {"torch_call_s": t["torch8"], "dense_call_s": max(0.0, t["dense_engine8"] - t["torch8"]),
                           "engine_call_s": max(0.0, t["engine32"] - t["sd32"])}
    return out


def average(calibrations: list[dict]) -> dict:
    """Coefficient-wise mean of several calibrations (taken before and after a measurement,
    so a drift of the machine's load in between shows in neither end alone)."""
    def mean(values):
        first = values[0]
        if isinstance(first, dict):
            return {k: mean([v[k] for v in values]) for k in first}
        if isinstance(first, list):
            return [mean([v[i] for v in values]) for i in range(len(first))]
        return sum(values) / len(values)

    return {b: mean([c[b] for c in calibrations]) for b in calibrations[0]}


def _dense_steps(net, x):
    """Dense torch's work per layer (the ``describe_network`` order): the dense engine's own steps, and their input."""
    import torch

    h0 = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return net.dense().steps(), (h0.reshape(len(x), *net.input_shape) if net.convs else h0)


def _sparse_steps(engine):
    """The sparse engine's calls per layer: (layer, densify or None, reuse, sparse input?)."""
    convs = list(zip(getattr(engine, "conv_layers", []), getattr(engine, "_densify", [])))
    tail = engine.tail if convs else engine
    last = len(tail.prepared) - 1
    steps = [(layer, d, True) for layer, d in convs]
    return steps + [(layer, d, i < last) for i, (layer, d) in enumerate(tail.prepared)]


class LayerClock:
    """One mode's engine run as the engine runs it, layer by layer, with each layer's time recorded.

    ``run_layers()`` runs the network once and returns (seconds per layer, its output). The clock
    is a zero-argument callable for ``interleaved_timings`` (``warmup`` untimed calls, then samples
    of ``inner`` calls): ``layers_s()`` is, per layer, the median over samples of the layer's mean
    time per call within the sample, the statistic the benchmark takes of a whole network. Each
    layer thus runs in the network's own sequence (its cache state, its inputs) and the sum of
    the layers is the network's own time less the engine's call overhead.
    """

    def __init__(self, run_layers, n_layers: int, warmup: int, inner: int):
        self._run, self.n_layers, self.warmup, self.inner = run_layers, n_layers, warmup, inner
        self.calls: list[list[float]] = []
        self.output = None  # the last call's result (the rows of every chunk), to check against the engine

    def __call__(self):
        times, self.output = self._run()
        self.calls.append(times)

    def samples(self) -> np.ndarray:
        """``[sample, layer]``: each layer's mean seconds per call in each timed sample, in order."""
        timed = np.asarray(self.calls[self.warmup :], dtype=np.float64)
        n = len(timed) // self.inner * self.inner
        if n == 0:
            raise ValueError("no timed samples recorded (call the clock through interleaved_timings first)")
        return timed[:n].reshape(-1, self.inner, self.n_layers).mean(axis=1)

    def layers_s(self, quantile: float = 0.5) -> list[float]:
        """Per layer, the ``quantile`` (default the median) over samples of its mean time per call."""
        return [float(v) for v in np.quantile(self.samples(), quantile, axis=0)]


def layer_clocks(net, x, warmup: int = 3, inner: int = 1) -> dict:
    """``{mode: LayerClock}`` for ``net``'s three engines on input ``x`` (a CNN engine's rows in its chunks)."""
    import time

    import torch

    clock = time.perf_counter
    steps, h0 = _dense_steps(net, x)

    def dense_layers():
        times, h = [], h0
        with torch.inference_mode():
            for step in steps:
                t0 = clock()
                h = step(h)
                times.append(clock() - t0)
        return times, h

    clocks = {"dense": LayerClock(dense_layers, len(steps), warmup, inner)}
    for mode, activations in (("sparse-dense", "dense"), ("sparse-sparse", "sparse")):
        engine = net.sparse(activations)
        chunk = engine.CHUNK if net.convs else len(x)
        chunks = [np.ascontiguousarray(x[r : r + chunk]) for r in range(0, len(x), chunk)]
        calls = _sparse_steps(engine)
        bound = None if net.convs else engine._program(len(x))
        if bound is not None:  # the engine's bound calls, as its forward runs them
            def sparse_layers(bound=bound, x=chunks[0], engine=engine):
                times = []
                t0 = clock()
                np.copyto(bound.x_in, x)
                for layer_calls in bound.steps:
                    for call in layer_calls:
                        call()
                    times.append(clock() - t0)
                    t0 = clock()
                return times, [engine._output(bound.result, len(x))]

            clocks[mode] = LayerClock(sparse_layers, len(bound.steps), warmup, inner)
            continue

        def sparse_layers(chunks=chunks, calls=calls):
            times, outs = [0.0] * len(calls), []
            for h in chunks:
                for i, (layer, densify, reuse) in enumerate(calls):
                    t0 = clock()
                    h = _call(layer, h, reuse)
                    if densify is not None:
                        h = densify(*h)
                    times[i] += clock() - t0
                outs.append(h)
            return times, outs

        clocks[mode] = LayerClock(sparse_layers, len(calls), warmup, inner)
    return clocks


def _call(layer, h, reuse: bool):
    if isinstance(h, tuple) and hasattr(layer, "n_in"):  # a linear layer fed winners
        return layer(*h, reuse=reuse, checked=True)
    return layer(h, reuse=reuse)


def twin_companions(twin, batch: int):
    """The twin's ``layer_clocks`` at ``batch``, to be timed interleaved with a measurement of the
    network itself (``measure.Companions``: the same rounds, so the same load on the machine);
    ``table_entry`` reads their layer times afterwards."""
    from sparsecli.kernels.measure import INNER, Companions, network_input

    inner = INNER.get(batch, max(1, 64 // batch))
    return Companions(layer_clocks(twin, network_input(twin, batch), warmup=3, inner=inner))


def paired_ratio(clock: LayerClock, call_s: float, measured) -> float:
    """Median over rounds of (call_s + the twin's layers in the round) / the network's sample in the
    same round (``measured``: its ``TimingStats``): a drift of the load between rounds cancels."""
    predicted = call_s + clock.samples().sum(axis=1)
    n = min(len(predicted), len(measured.samples_s))
    return float(np.median(predicted[:n] / np.asarray(measured.samples_s[:n])))


def table_entry(companions, quantile: float = 0.5) -> dict:
    """``{mode: [s per layer]}`` from timed ``twin_companions`` (the ``quantile`` of each layer's samples)."""
    return {mode: companions.fns[mode].layers_s(quantile) for mode in MODES}


class TwinTable:
    """A network's synthetic twin and what timing it beside the network gave, per batch (as a
    string): the layer table (``median``, first quartiles ``q1``) and ``paired`` ratios per mode."""

    def __init__(self, net):
        self.twin = twin_network(net)
        self.median: dict = {}
        self.q1: dict = {}
        self.paired: dict = {}

    def companions(self, batch: int):
        return twin_companions(self.twin, batch)

    def record(self, batch: int, companions, times: dict, calibration: dict) -> None:
        """Read timed ``companions``; ``times``: the network's own ``TimingStats`` per mode, same rounds."""
        from sparsecli.targets.cost_kernels import call_s

        batch = str(batch)
        self.median[batch] = table_entry(companions)
        self.q1[batch] = table_entry(companions, 0.25)
        self.paired[batch] = {m: paired_ratio(companions.fns[m], call_s(calibration[batch], m), times[m])
                              if times.get(m) else None for m in MODES}
