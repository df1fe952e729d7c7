"""Timing whole sparse networks against dense torch, checked first: shared by the ``benchmark``
stage and ``benchmarks/bench_kernels.py``.

Per layer: one layer's linear map alone (no kWTA). Dense torch and sparse-dense get a
dense input; sparse-sparse gets the active units of the same input (for the first layer a
synthetic input at the activation density ``ad``). ``kwta`` compares torch topk + scatter
with ``k_winners``. End to end: the whole network including kWTA. Repetitions are
interleaved across contenders, median and IQR per call; speedup = dense median / kernel
median; ideal = dense multiply-adds / the multiply-adds a kernel must do. Every kernel's
output is checked against dense first: one that disagrees gets no timing (None) and its
failure is recorded.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparsecli.kernels.check import check_against_dense
from sparsecli.kernels.conv import ConvSpec
from sparsecli.kernels.engine import DenseCNNEngine, DenseEngine, LayerSpec, SparseCNNEngine, SparseEngine
from sparsecli.kernels.kwinners import k_winners, kwta_dense_torch, scatter_dense
from sparsecli.kernels.timing import interleaved_timings, max_threads, set_threads

# The reference network: a Google-Speech-Commands-sized MLP head.
SIZES = (1600, 1500, 1500, 12)
SETTINGS = ((0.90, 0.10), (0.95, 0.05))  # (weight sparsity, fraction of units active)
STRUCTURES = ("unstructured", "blocks16")
BATCHES = (1, 64)
# Calls per timed sample (the sample is their mean): a serving loop's steady state, where
# a layer's weights are still cached from the previous call. Samples alternate between
# contenders, so each burst starts after the others have swept the caches.
INNER = {1: 10, 64: 2}
# ... but a sample need not be longer than this: where one call takes as long (the reference
# CNN at batch 64, about 60 ms in dense torch), one call is a sample (its row: 9-10 s -> 6 s)
SAMPLE_S = 0.05
TARGETS = {  # (weight sparsity, structure, batch) -> end-to-end sparse-sparse speedup to reach
    (0.90, "blocks16", 1): 10.0,
    (0.90, "blocks16", 64): 4.0,
    (0.95, "blocks16", 1): 20.0,
}


def mask(rng, n_out: int, n_in: int, density: float, structure: str) -> np.ndarray:
    """Exactly ``round(density * n_in)`` non-zeros per output row (per 16-row block for blocks16)."""
    per_row = round(density * n_in)
    rows = -(-n_out // 16) if structure == "blocks16" else n_out
    cols = np.argsort(rng.random((rows, n_in)), axis=1)[:, :per_row]
    kept = np.zeros((rows, n_in), bool)
    np.put_along_axis(kept, cols, True, axis=1)
    return np.repeat(kept, 16, axis=0)[:n_out] if structure == "blocks16" else kept


def gsc_network(weight_sparsity: float, percent_on: float, structure: str) -> list[LayerSpec]:
    rng = np.random.default_rng(0)
    density = 1.0 - weight_sparsity
    specs = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        head = i == len(SIZES) - 2
        m = np.ones((n_out, n_in), bool) if head else mask(rng, n_out, n_in, density, structure)
        fan_in = n_in if head else round(density * n_in)
        w = (rng.standard_normal((n_out, n_in)) * m / np.sqrt(fan_in)).astype(np.float32)
        b = (0.01 * rng.standard_normal(n_out)).astype(np.float32)
        specs.append(LayerSpec(w, b, None if head else round(percent_on * n_out)))
    return specs


@dataclass
class Row:
    setting: str
    batch: int
    threads: int
    stage: str
    ideal_sd: float | None  # None: no such kernel, or no MACs to compare (kWTA)
    ideal_ss: float | None
    times: dict  # contender -> TimingStats or None


def checked(fn, reference, label: str, failures: list):
    """``fn`` if its output agrees with ``reference``, else None (and the failure is recorded)."""
    check = check_against_dense(fn(), reference)
    if check.ok:
        return fn
    failures.append(f"{label}: {check}")
    return None


@dataclass
class Companions:
    """Callables timed in the same interleaved rounds as a measurement's contenders (so under the
    same load), reported apart in ``stats`` (name -> ``TimingStats``): the cost model's layer table."""

    fns: dict
    stats: dict | None = None


def time_contenders(fns: dict, repeats: int, inner: int, companions: Companions | None = None) -> dict:
    live = {name: fn for name, fn in fns.items() if fn is not None}
    extra = {f"companion {k}": f for k, f in companions.fns.items()} if companions else {}
    stats = interleaved_timings(live | extra, repeats=repeats, warmup=3, inner=inner, sample_s=SAMPLE_S)
    if companions:
        companions.stats = {k: stats[f"companion {k}"] for k in companions.fns}
    return {name: stats.get(name) for name in fns}


def reference_input(batch: int, features: int = SIZES[0]) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, features)).astype(np.float32)


def bench_setting(specs, label, ad, x, threads, repeats, inner, failures,
                  companions: Companions | None = None) -> list[Row]:
    """Rows for one network, input ``x`` (its batch size) and thread count; see the module docstring.
    ``companions`` are timed interleaved with the end-to-end contenders."""
    set_threads(threads)
    batch = len(x)
    tag = f"{label} b{batch} t{threads}"
    rows = []
    torch_w = [(torch.from_numpy(s.weight), torch.from_numpy(s.bias)) for s in specs]

    def dense_layer(i, xin):
        xt = torch.from_numpy(xin)
        w, b = torch_w[i]

        def run():
            with torch.inference_mode():
                return F.linear(xt, w, b)

        return run

    # Layer inputs: the first layer's synthetic sparse input, then each kWTA's winners.
    k_in = max(1, round(ad * specs[0].n_in))
    inputs = [k_winners(x, k_in)]
    h = x
    for spec in specs[:-1]:
        pre = F.linear(torch.from_numpy(h), torch.from_numpy(spec.weight), torch.from_numpy(spec.bias))
        h = kwta_dense_torch(pre, spec.k).numpy()
        inputs.append(k_winners(h, spec.k))
    for i, spec in enumerate(specs):
        alone = LayerSpec(spec.weight, spec.bias, None)
        idx, val = inputs[i]
        x_sparse = scatter_dense(idx, val, spec.n_in)
        x_dense = x if i == 0 else x_sparse  # what dense torch and sparse-dense get
        reference = dense_layer(i, x_sparse)()
        ss_engine = SparseEngine.from_layers([alone], input_k=idx.shape[1])
        fns = {"dense": dense_layer(i, x_dense)}
        layer_wd = spec.density
        if layer_wd < 1.0:
            sd_engine = SparseEngine.from_layers([alone])
            fns["sparse-dense"] = checked(
                lambda e=sd_engine, xd=x_dense: e(xd),
                dense_layer(i, x_dense)(),
                f"{tag} layer{i + 1} sparse-dense",
                failures,
            )
        else:
            fns["sparse-dense"] = None
        fns["sparse-sparse"] = checked(
            lambda e=ss_engine, a=idx, v=val: e.forward_active(a, v),
            reference,
            f"{tag} layer{i + 1} sparse-sparse",
            failures,
        )
        a_in = idx.shape[1] / spec.n_in
        rows.append(
            Row(
                label,
                batch,
                threads,
                f"layer{i + 1} {spec.n_in}->{spec.n_out}",
                1.0 / layer_wd if layer_wd < 1.0 else None,
                1.0 / (layer_wd * a_in),
                time_contenders(fns, repeats, inner),
            )
        )
    # kWTA alone on the second hidden layer's output (networks with two hidden kWTA layers).
    if len(specs) > 2 and specs[1].k is not None:
        pre = dense_layer(1, scatter_dense(*inputs[1], specs[0].n_out))().numpy()
        pre_t = torch.from_numpy(pre)
        k = specs[1].k
        fns = {
            "dense": lambda: kwta_dense_torch(pre_t, k),
            "sparse-dense": None,
            "sparse-sparse": checked(
                lambda: scatter_dense(*k_winners(pre, k), specs[1].n_out), kwta_dense_torch(pre_t, k), f"{tag} kwta", failures
            ),
        }
        rows.append(Row(label, batch, threads, f"kwta {specs[1].n_out} k={k}", None, None, time_contenders(fns, repeats, inner)))
    # End to end.
    dense = DenseEngine.from_layers(specs)
    reference = DenseEngine.from_layers(specs, lowest_ties=True)(x)
    sd = SparseEngine.from_layers(specs, activations="dense")
    ss = SparseEngine.from_layers(specs)
    fns = {
        "dense": lambda: dense(x),
        "sparse-dense": checked(lambda: sd(x), reference, f"{tag} end-to-end sparse-dense", failures),
        "sparse-sparse": checked(lambda: ss(x), reference, f"{tag} end-to-end sparse-sparse", failures),
    }
    macs = [s.n_in * s.n_out for s in specs]
    macs_sd = sum(m * s.density for m, s in zip(macs, specs))
    acts = [1.0] + [s.k / s.n_out for s in specs[:-1]]
    macs_ss = sum(m * s.density * a for m, s, a in zip(macs, specs, acts))
    stats = time_contenders(fns, repeats, inner, companions)
    rows.append(Row(label, batch, threads, "end-to-end (incl. kWTA)", sum(macs) / macs_sd, sum(macs) / macs_ss, stats))
    return rows


# ---------------------------------------------------------------- whole networks, MLP or CNN

# The paper's GSC sparse CNN (nupic.torch's GSCSparseCNN): 1x32x32 input; conv 64 5x5 (50% of
# weights non-zero) -> max-pool 2 -> kWTA 1200 of 12544; conv 64 5x5 (20% non-zero) -> max-pool 2
# -> kWTA 200 of 1600; linear 1600 -> 1000 (40% non-zero), kWTA 100; head 1000 -> 12.
CNN_INPUT = (1, 32, 32)
CNN_CONVS = ((64, 5, 0.5, 1200), (64, 5, 0.2, 200))  # (channels, kernel, weight density, k)
CNN_LINEAR = (1000, 0.4, 100)  # (units, weight density, k)
CLASSES = 12


@dataclass
class Network:
    """A network the kernels run: an MLP (``convs`` empty) or a CNN, with its engines and ideal."""

    kind: str  # "mlp" | "cnn"
    label: str
    linears: list
    convs: list
    input_shape: tuple

    def dense(self, lowest_ties: bool = False):
        """Dense torch: the timed baseline, or (``lowest_ties``) the reference kernels are checked against."""
        if self.convs:
            return DenseCNNEngine.from_specs(self.input_shape, self.convs, self.linears, lowest_ties)
        return DenseEngine.from_layers(self.linears, lowest_ties)

    def sparse(self, activations: str = "sparse", structure: str = "auto", precision: str = "fp32"):
        if self.convs:
            return SparseCNNEngine.from_specs(self.input_shape, self.convs, self.linears, structure,
                                              activations=activations, precision=precision)
        return SparseEngine.from_layers(self.linears, structure, activations=activations, precision=precision)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape))

    def macs(self) -> dict:
        """Multiply-adds per sample: dense, sparse-dense (weights only), sparse-sparse (both).

        A layer fed a dense input (the first, or after a layer without kWTA) counts at its
        weight density only; one fed kWTA winners at weight density x the fraction of its
        input units active (for a conv, the fraction of its input map's units).
        """
        dense = sd = ss = 0.0
        shape = self.input_shape
        active = 1.0
        for spec in self.convs:
            m = spec.dense_macs(shape)
            dense += m
            sd += m * spec.density
            ss += m * spec.density * active
            out = spec.out_shape(shape)
            active = 1.0 if spec.k is None else min(1.0, spec.k * (out[1] * out[2] if spec.local else 1) / np.prod(out))
            shape = out
        for spec in self.linears:
            m = spec.n_in * spec.n_out
            dense += m
            sd += m * spec.density
            ss += m * spec.density * active
            active = 1.0 if spec.k is None else spec.k / spec.n_out
        return {"dense": dense, "sparse-dense": sd, "sparse-sparse": ss}

    def ideal(self) -> dict:
        m = self.macs()
        return {mode: m["dense"] / m[mode] for mode in ("sparse-dense", "sparse-sparse")}


def reference_mlp(weight_sparsity: float, percent_on: float, structure: str) -> Network:
    label = f"mlp {weight_sparsity:.0%}w/{percent_on:.0%}a {structure}"
    return Network("mlp", label, gsc_network(weight_sparsity, percent_on, structure), [], (SIZES[0],))


def reference_cnn(structure: str) -> Network:
    """The GSC sparse CNN with random weights (masks exact per output channel, or per 16
    output channels for blocks16), seed 0."""
    rng = np.random.default_rng(0)
    convs, c_in = [], CNN_INPUT[0]
    for channels, kernel, density, k in CNN_CONVS:
        fan_in = c_in * kernel * kernel
        # mask over [out, kh*kw*in] (the kernels' column order), then back to [out, in, kh, kw]
        m = mask(rng, channels, fan_in, density, structure).reshape(channels, kernel, kernel, c_in).transpose(0, 3, 1, 2)
        w = (rng.standard_normal((channels, c_in, kernel, kernel)) * m / np.sqrt(density * fan_in)).astype(np.float32)
        b = (0.01 * rng.standard_normal(channels)).astype(np.float32)
        convs.append(ConvSpec(w, b, pool=2, k=k, pool_first=True))
        c_in = channels
    shape = CNN_INPUT
    for spec in convs:
        shape = spec.out_shape(shape)
    n_flat = int(np.prod(shape))
    units, density, k = CNN_LINEAR
    m = mask(rng, units, n_flat, density, structure)
    w = (rng.standard_normal((units, n_flat)) * m / np.sqrt(density * n_flat)).astype(np.float32)
    linears = [LayerSpec(w, (0.01 * rng.standard_normal(units)).astype(np.float32), k),
               LayerSpec((rng.standard_normal((CLASSES, units)) / np.sqrt(units)).astype(np.float32),
                         (0.01 * rng.standard_normal(CLASSES)).astype(np.float32), None)]
    label = "cnn gsc " + structure
    return Network("cnn", label, linears, convs, CNN_INPUT)


def compile_network(net: Network, batches) -> None:
    """Call ``net``'s sparse engines and its cost-model twin's layers once per batch, at one
    thread: numba compiles their kernels on first use and caches them on disk, where another
    process calling them later finds them."""
    from sparsecli.kernels.calibrate import TwinTable

    set_threads(1)
    twins = TwinTable(net)
    for batch in batches:
        x = network_input(net, batch)
        for activations in ("dense", "sparse"):
            net.sparse(activations)(x)
        for fn in twins.companions(batch).fns.values():
            fn()


def compile_reference_cnns(batches) -> None:
    for structure in STRUCTURES:
        compile_network(reference_cnn(structure), batches)


@contextmanager
def compiling_beside(fn, *args):
    """Run ``fn(*args)`` in a second (spawned) process while the body runs, where this process
    may use two CPUs, and wait for it. For numba's first compilation, most of a fresh clone's
    benchmark time: what the other process compiles is cached on disk, and this one loads it
    instead of compiling it again. A failure there only costs that: the kernels compile here."""
    if max_threads() < 2:
        yield
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(fn, *args)
        yield
        try:
            future.result()
        except Exception:  # noqa: BLE001 - compiled again, in this process, where its error shows
            pass


def network_input(net: Network, batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, net.n_in)).astype(np.float32)


def argmax_agreement(out, reference) -> float:
    out, reference = np.asarray(out), np.asarray(reference)
    return float((out.argmax(1) == reference.argmax(1)).mean())


# A reduced-precision engine is not expected to match float32 to float32's tolerance (kWTA
# swaps near-tied winners): it is judged by its answers, reported as ``argmax_agreement``
# beside its speed (kernels are checked against bf16-rounded weights in the tests). Beside
# it stands dense torch run on the same rounded weights (fp32 math): what the precision
# itself costs, whatever kernel runs it. On the random-weight reference networks the two
# agree (bf16: MLP 0.92-0.98, CNN ~0.72; int8 with per-channel scale: MLP 0.84-0.92, against
# fp32): the loss is the rounding amplified by kWTA's discontinuity (a unit at the threshold
# is either its value or 0), not the kernels.
BF16_MIN_AGREEMENT = 0.99


def rounded_network(net: Network, precision: str) -> Network:
    """``net`` with every weight rounded to ``precision`` and widened back to float32."""
    import dataclasses

    from sparsecli.kernels.precision import round_weight

    if precision == "fp32":
        return net

    def r(w):
        return round_weight(w.reshape(w.shape[0], -1), precision).reshape(w.shape)

    return Network(net.kind, net.label, [dataclasses.replace(s, weight=r(s.weight)) for s in net.linears],
                   [dataclasses.replace(s, weight=r(s.weight)) for s in net.convs], net.input_shape)


def bench_network(net: Network, x: np.ndarray, threads: int, repeats: int, inner: int, failures: list,
                  agreement_x: np.ndarray | None = None, precision: str = "fp32",
                  companions: Companions | None = None) -> dict:
    """End to end (kWTA included): dense torch, sparse-dense and sparse-sparse, checked first.

    Returns times per contender (``TimingStats`` or None), speedups, the ideal speedups and
    ``argmax_agreement`` of sparse-sparse against dense on ``agreement_x`` (default ``x``).
    fp32 engines must match dense within ``check_against_dense``'s tolerance or get no timing;
    bf16/int8 ones are timed and their argmax agreement reported (goal: ``BF16_MIN_AGREEMENT``).
    ``companions`` are timed interleaved with the contenders.
    """
    set_threads(threads)
    tag = f"{net.label} {precision} b{len(x)} t{threads}"
    dense = net.dense()
    engines = {"sparse-dense": net.sparse("dense", precision=precision),
               "sparse-sparse": net.sparse("sparse", precision=precision)}
    checker = net.dense(lowest_ties=True)  # kWTA ties broken as the kernels do
    reference = checker(x)
    ax = x if agreement_x is None else agreement_x
    fns = {"dense": lambda: dense(x)}
    for mode, engine in engines.items():
        if precision == "fp32":
            fns[mode] = checked(lambda e=engine: e(x), reference, f"{tag} end-to-end {mode}", failures)
            continue
        fns[mode] = lambda e=engine: e(x)  # timed whatever its agreement: the row reports both
    stats = time_contenders(fns, repeats, inner, companions)
    reference_ax = checker(ax)
    agreement = argmax_agreement(engines["sparse-sparse"](ax), reference_ax)
    ideal = net.ideal()
    speedup = {m: (stats["dense"].median_s / stats[m].median_s if stats.get(m) else None) for m in engines}
    out = {"times": stats, "speedup": speedup, "ideal": ideal, "argmax_agreement": agreement,
           "fraction_of_ideal": {m: (speedup[m] / ideal[m] if speedup[m] else None) for m in engines}}
    if precision != "fp32":  # what the rounding itself costs: torch on the same rounded weights
        rounded = rounded_network(net, precision).dense(lowest_ties=True)
        out["argmax_agreement_torch_rounded"] = argmax_agreement(rounded(ax), reference_ax)
    return out


def tile_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` rows of ``x`` (repeated if it has fewer), float32 C-contiguous."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:batch], dtype=np.float32)


def onnxruntime_timings(path, net: Network, x: np.ndarray, batches, threads, repeats: int, inner: dict) -> list[dict]:
    """onnxruntime on the dense exported model vs dense torch, interleaved, same threads."""
    import onnxruntime as ort

    dense = net.dense()
    out = []
    for t in threads:
        set_threads(t)
        options = ort.SessionOptions()
        options.intra_op_num_threads = t
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in batches:
            xb = tile_batch(x, batch)
            stats = interleaved_timings({"dense": lambda: dense(xb), "onnxruntime": lambda: session.run(None, {name: xb})},
                                        repeats=repeats, warmup=3, inner=inner[batch])
            out.append({"batch": batch, "threads": t, "times_s": {k: v.as_dict() for k, v in stats.items()},
                        "dense_over_onnxruntime": stats["dense"].median_s / stats["onnxruntime"].median_s})
    return out


