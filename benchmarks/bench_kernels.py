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

import torch

from sparsecli.kernels.measure import BATCHES, INNER, SETTINGS, STRUCTURES, TARGETS, Row, bench_setting, gsc_network, reference_input
from sparsecli.kernels.timing import max_threads


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
                    rows += bench_setting(specs, label, percent_on, reference_input(batch), threads, repeats[batch], INNER[batch], failures)
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
