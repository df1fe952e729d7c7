"""Sparse-sparse CPU inference against dense torch: the reference MLP and the reference CNN.

    python benchmarks/bench_kernels.py --json out.json    # full run (about 2 minutes on 2 cores)
    python benchmarks/bench_kernels.py --quick            # fewer repetitions (about a minute)

Networks (random weights, masks from ``np.random.default_rng(0)``):

* ``mlp``: the GSC-sized MLP 1600 -> 1500 -> 1500 -> 12, kWTA on both hidden layers, a dense
  head; hidden weights 90% / 95% zero with 10% / 5% of units active; unstructured (exact
  non-zeros per output row) or 16x1 blocks (per 16-row block).
* ``cnn``: the paper's GSC sparse CNN (1x32x32; conv 64 5x5 50% non-zero -> max-pool 2 ->
  kWTA 1200; conv 64 5x5 20% non-zero -> max-pool 2 -> kWTA 200; linear 1600 -> 1000 40%
  non-zero, kWTA 100; head 12), unstructured or 16x1 blocks over output channels.

One JSON row per (network, structure, weight sparsity, active fraction, batch, threads,
precision, path): ``speedup`` = dense torch median / sparse-sparse median, end to end with
kWTA, same process, same threads; ``ideal`` = dense multiply-adds / the multiply-adds
sparse-sparse must do (the first layer's dense input included); ``fraction_of_ideal``;
``argmax_agreement`` of sparse-sparse against dense fp32 torch on 256 random inputs, and for
reduced precision ``argmax_agreement_torch_rounded``: dense torch on the same rounded weights
against fp32 torch (what the rounding costs whatever kernel runs it; column ``torch-r``);
``precision``: fp32, or bf16 / int8 (per-output-channel scale; MLP only, conv layers have no
int8 kernels) weights in the sparse kernels (one thread; sums stay fp32); ``path``:
``avx512`` (numba compiled for this CPU) or ``avx2`` (the same kernels compiled for Haswell,
in a subprocess). Method: warm-up, then interleaved samples (rotating order), each the mean
of a short burst of calls (10 at batch 1, 2 at batch 64), median and IQR. Every kernel's
output is checked against dense first; one that disagrees gets no timing. Timings on a
shared machine are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from sparsecli.kernels.cpu import AVX2_ENV, cpu_info, simd_path
from sparsecli.kernels.measure import (
    BATCHES,
    INNER,
    SETTINGS,
    STRUCTURES,
    bench_network,
    network_input,
    reference_cnn,
    reference_mlp,
)
from sparsecli.kernels.timing import max_threads

# Goals from issue 13, as fractions of the ideal: (network, structure, batch) -> fraction.
GOALS = {("mlp", "blocks16", 1): 1.0, ("mlp", "blocks16", 64): 0.7, ("mlp", "unstructured", 1): 0.6,
         ("cnn", "blocks16", 1): 0.6, ("cnn", "unstructured", 1): 0.6}


def networks():
    for weight_sparsity, percent_on in SETTINGS:
        for structure in STRUCTURES:
            yield reference_mlp(weight_sparsity, percent_on, structure), structure, weight_sparsity, percent_on
    for structure in STRUCTURES:
        net = reference_cnn(structure)
        m = net.macs()
        yield net, structure, 1 - m["sparse-dense"] / m["dense"], None


def measure(path: str, quick: bool, threads_list, batches, precisions=("fp32", "bf16", "int8")) -> tuple[list[dict], list[str]]:
    repeats = {1: 20, 64: 5} if quick else {1: 60, 64: 12}
    rows, failures = [], []
    for net, structure, weight_sparsity, percent_on in networks():
        agreement_x = network_input(net, 256, seed=2)
        for batch in batches:
            x = network_input(net, batch)
            runs = [(threads, "fp32") for threads in threads_list] + [
                (1, p) for p in precisions if p != "fp32" and (p != "int8" or net.kind == "mlp")]
            for threads, precision in runs:
                r = bench_network(net, x, threads, repeats[batch], INNER[batch], failures, agreement_x, precision)
                t = r["times"]
                rows.append({
                    "network": net.kind, "label": net.label, "structure": structure,
                    "weight_sparsity": round(weight_sparsity, 4),
                    "active_fraction": percent_on,
                    "batch": batch, "threads": threads, "precision": precision, "path": path,
                    "speedup": r["speedup"]["sparse-sparse"], "ideal": r["ideal"]["sparse-sparse"],
                    "fraction_of_ideal": r["fraction_of_ideal"]["sparse-sparse"],
                    "argmax_agreement": r["argmax_agreement"],
                    # dense torch on the same rounded weights against fp32 torch (None for fp32 rows)
                    "argmax_agreement_torch_rounded": r.get("argmax_agreement_torch_rounded"),
                    "speedup_sparse_dense": r["speedup"]["sparse-dense"],
                    "ideal_sparse_dense": r["ideal"]["sparse-dense"],
                    "times_s": {k: (v.as_dict() if v else None) for k, v in t.items()},
                })
    return rows, failures


def print_table(rows: list[dict]) -> None:
    head = (f"{'network':<30} {'path':<6} {'prec':<4} {'b':>3} {'t':>2} {'dense µs':>9} {'s-d µs':>8} {'s-s µs':>8} "
            f"{'speedup':>8} {'ideal':>6} {'of ideal':>8} {'argmax':>7} {'torch-r':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r["times_s"]

        def us(name):
            return f"{t[name]['median_s'] * 1e6:.1f}" if t.get(name) else "—"

        speed = f"{r['speedup']:.1f}x" if r["speedup"] else "—"
        frac = f"{r['fraction_of_ideal']:.2f}" if r["fraction_of_ideal"] else "—"
        torch_r = r.get("argmax_agreement_torch_rounded")
        rounded = "—" if torch_r is None else f"{torch_r:.3f}"
        print(f"{r['label']:<30} {r['path']:<6} {r['precision']:<4} {r['batch']:>3} {r['threads']:>2} {us('dense'):>9} "
              f"{us('sparse-dense'):>8} {us('sparse-sparse'):>8} {speed:>8} {r['ideal']:>6.1f} {frac:>8} "
              f"{r['argmax_agreement']:>7.3f} {rounded:>7}")


def goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        goal = GOALS.get((r["network"], r["structure"], r["batch"]))
        if goal is None or r["threads"] != 1 or r["precision"] != "fp32":
            continue
        frac = r["fraction_of_ideal"] or 0.0
        verdict = "met" if frac >= goal and r["argmax_agreement"] >= 0.99 else "MISSED"
        lines.append(f"goal {r['label']} {r['path']} batch {r['batch']}: {frac:.2f} of ideal >= {goal} {verdict}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a fast check")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--no-avx2", action="store_true", help="skip the AVX2 rows (a subprocess)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the AVX2 subprocess
    args = parser.parse_args(argv)
    path = simd_path()
    load_before = os.getloadavg()[0]
    if args.child:  # AVX2 rows: batch 1 and 64 at one thread
        rows, failures = measure(path, args.quick, [1], BATCHES, ("fp32",))
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "check_failures": failures}, f)
        return 0
    threads_all = max_threads()
    rows, failures = measure(path, args.quick, sorted({1, threads_all}), BATCHES)
    if not args.no_avx2 and path != "avx2":
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "avx2.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--json", out] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, env={**os.environ, **AVX2_ENV}, capture_output=True, text=True)
            if done.returncode == 0:
                child = json.load(open(out))
                rows += child["rows"]
                failures += child["check_failures"]
            else:
                failures.append(f"avx2 subprocess failed: {done.stderr.strip().splitlines()[-1:]}")
    import numba
    import torch

    cpu = cpu_info()
    load_after = os.getloadavg()[0]
    print(f"{cpu['cpu']}, {cpu['cores']} cores ({' '.join(cpu['simd_flags'])}); torch {torch.__version__}, "
          f"numba {numba.__version__} ({numba.threading_layer()} threads); load average {load_before:.2f} before, "
          f"{load_after:.2f} after (other processes skew timings)")
    print("end to end incl. kWTA; speedup = dense torch median / sparse-sparse median; ideal = dense MACs / "
          "sparse-sparse MACs\n")
    print_table(rows)
    print()
    for line in goal_lines(rows):
        print(line)
    for failure in failures:
        print(f"CHECK FAILED (no timing reported): {failure}")
    if args.json:
        payload = {"cpu": cpu, "torch": torch.__version__, "numba": numba.__version__,
                   "load_average": [load_before, load_after], "rows": rows, "check_failures": failures}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
