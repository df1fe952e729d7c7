"""Sparse-sparse CPU inference against dense torch on the GSC-sized MLP.

    python benchmarks/bench_kernels.py            # full run (a few minutes)
    python benchmarks/bench_kernels.py --quick    # fewer repetitions (under a minute)

Network: 1600 -> 1500 -> 1500 -> 12, kWTA on both hidden layers, a dense head.
Hidden weights at 90% and 95% sparsity (exact non-zeros per output row, or per
16-row block for the 16x1 block structure), 10% and 5% of units active; masks
and values from ``np.random.default_rng(0)``.

Per layer: one layer's linear map alone (no kWTA). Dense torch and sparse-dense
get a dense input; sparse-sparse gets the active units of the same input (for
the first layer a synthetic input at the activation density). ``kwta`` compares
torch topk + scatter with ``k_winners``. End to end: the whole network including
kWTA; the network's input is dense, so its first layer is sparse-dense in every
sparse engine.

Method: warm-up, then samples interleaved across dense / sparse-dense /
sparse-sparse (rotating order), each sample the mean of a short burst of
back-to-back calls (10 at batch 1, 2 at batch 64: the steady state of a serving
loop, where a layer's weights are still cached from the previous call); median
and IQR over samples; both libraries on the same number of threads. speedup = dense median / kernel median. ideal =
dense multiply-adds / multiply-adds the kernel must do (1 / (weight density x
activation density) for a single layer); "of ideal" = speedup / ideal (above
1 where dense is memory-bound). Every kernel's output is checked against the
dense result first; a kernel that disagrees gets no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparsecli.kernels import (
    DenseEngine,
    LayerSpec,
    SparseEngine,
    check_against_dense,
    interleaved_timings,
    k_winners,
    kwta_dense_torch,
    scatter_dense,
    set_threads,
)
from sparsecli.kernels.timing import max_threads

SIZES = (1600, 1500, 1500, 12)
SETTINGS = ((0.90, 0.10), (0.95, 0.05))  # (weight sparsity, fraction of units active)
STRUCTURES = ("unstructured", "blocks16")
BATCHES = (1, 64)
# Calls per timed sample (the sample is their mean): a serving loop's steady state, where
# a layer's weights are still cached from the previous call. Samples alternate between
# contenders, so each burst starts after the others have swept the caches.
INNER = {1: 10, 64: 2}
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


def time_contenders(fns: dict, repeats: int, inner: int) -> dict:
    live = {name: fn for name, fn in fns.items() if fn is not None}
    stats = interleaved_timings(live, repeats=repeats, warmup=3, inner=inner)
    return {name: stats.get(name) for name in fns}


def bench_setting(specs, label, ad, batch, threads, repeats, inner, failures) -> list[Row]:
    set_threads(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
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
    k_in = round(ad * SIZES[0])
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
    # kWTA alone on a hidden layer's output.
    pre = dense_layer(1, scatter_dense(*inputs[1], SIZES[1]))().numpy()
    pre_t = torch.from_numpy(pre)
    k = specs[1].k
    fns = {
        "dense": lambda: kwta_dense_torch(pre_t, k),
        "sparse-dense": None,
        "sparse-sparse": checked(
            lambda: scatter_dense(*k_winners(pre, k), SIZES[2]), kwta_dense_torch(pre_t, k), f"{tag} kwta", failures
        ),
    }
    rows.append(Row(label, batch, threads, f"kwta {SIZES[2]} k={k}", None, None, time_contenders(fns, repeats, inner)))
    # End to end.
    dense = DenseEngine.from_layers(specs)
    reference = dense(x)
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
    stats = time_contenders(fns, repeats, inner)
    rows.append(Row(label, batch, threads, "end-to-end (incl. kWTA)", sum(macs) / macs_sd, sum(macs) / macs_ss, stats))
    return rows


def fmt_time(stats) -> str:
    if stats is None:
        return "—"
    return f"{stats.median_s * 1e6:9.1f} ±{stats.iqr_s * 1e6:6.1f}"


def fmt_speed(dense, stats, ideal) -> str:
    if stats is None:
        return f"{'—':>7} {'':>6} {'':>5}"
    s = dense.median_s / stats.median_s
    ideal_txt = f"{ideal:6.1f}" if ideal else f"{'—':>6}"
    frac = f"{s / ideal:5.2f}" if ideal else f"{'—':>5}"
    return f"{s:6.1f}x {ideal_txt} {frac}"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'setting':<24} {'b':>3} {'t':>2} {'stage':<24} "
        f"{'dense µs ±IQR':>17} | {'sparse-dense µs':>17} {'speedup':>7} {'ideal':>6} {'ofid':>5} | "
        f"{'sparse-sparse µs':>17} {'speedup':>7} {'ideal':>6} {'ofid':>5}"
    )
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        key = (r.setting, r.batch, r.threads)
        if last is not None and key != last:
            print()
        last = key
        d = r.times["dense"]
        print(
            f"{r.setting:<24} {r.batch:>3} {r.threads:>2} {r.stage:<24} {fmt_time(d):>17} | "
            f"{fmt_time(r.times['sparse-dense']):>17} {fmt_speed(d, r.times['sparse-dense'], r.ideal_sd)} | "
            f"{fmt_time(r.times['sparse-sparse']):>17} {fmt_speed(d, r.times['sparse-sparse'], r.ideal_ss)}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a fast check")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    repeats = {1: 20, 64: 10} if args.quick else {1: 100, 64: 40}
    load_before = os.getloadavg()[0]
    threads_all = max_threads()
    thread_counts = sorted({1, threads_all})
    rows: list[Row] = []
    failures: list[str] = []
    for weight_sparsity, percent_on in SETTINGS:
        for structure in STRUCTURES:
            specs = gsc_network(weight_sparsity, percent_on, structure)
            label = f"{weight_sparsity:.0%}w/{percent_on:.0%}a {structure}"
            for batch in BATCHES:
                for threads in thread_counts:
                    rows += bench_setting(specs, label, percent_on, batch, threads, repeats[batch], INNER[batch], failures)
    import numba

    load_after = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, numba {numba.__version__} ({numba.threading_layer()} threads), "
        f"{threads_all} threads max; load average {load_before:.2f} before, {load_after:.2f} after "
        "(other processes skew timings, multi-threaded ones most)"
    )
    print(f"times per call in µs (median ± IQR over samples; a sample = mean of {INNER} back-to-back calls by batch)")
    print("speedup = dense median / kernel median; ideal = dense MACs / kernel MACs; ofid = speedup / ideal\n")
    print_table(rows)
    print()
    ok = True
    for (ws, structure, batch), target in TARGETS.items():
        for threads in thread_counts:
            (row,) = [
                r
                for r in rows
                if r.setting.startswith(f"{ws:.0%}w")
                and r.setting.endswith(structure)
                and (r.batch, r.threads) == (batch, threads)
                and r.stage.startswith("end-to-end")
            ]
            ss = row.times["sparse-sparse"]
            speed = row.times["dense"].median_s / ss.median_s if ss else 0.0
            verdict = "met" if speed >= target else "MISSED"
            ok &= speed >= target
            print(f"target {row.setting} batch {batch} threads {threads}: {speed:.1f}x >= {target:.0f}x {verdict}")
    for failure in failures:
        print(f"CHECK FAILED (no timing reported): {failure}")
    if args.json:
        payload = [
            {
                "setting": r.setting,
                "batch": r.batch,
                "threads": r.threads,
                "stage": r.stage,
                "ideal_sparse_dense": r.ideal_sd,
                "ideal_sparse_sparse": r.ideal_ss,
                "times": {k: (v.as_dict() if v else None) for k, v in r.times.items()},
            }
            for r in rows
        ]
        with open(args.json, "w") as f:
            json.dump({"rows": payload, "check_failures": failures}, f, indent=1)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
