"""Where the CPU cost model is wrong: predicted vs measured latency layer by layer.

    python benchmarks/cost_layers.py                       # reference MLPs and CNNs, batch 1 and 64
    python benchmarks/cost_layers.py --model models/pruned.pt --networks model
    python benchmarks/cost_layers.py --networks cnn --batches 64 --json out.json

For each network, mode (dense torch, sparse-dense, sparse-sparse) and batch: every layer of
the engine timed alone on the input it gets inside the network (interleaved across modes,
median), beside ``sparsecli.targets.cost_kernels``'s prediction for that layer (the same
layer of a synthetic twin, timed in the same rounds, as the benchmark stage does), then the
whole network end to end. The calibration is run once, in this process, at one thread, as
the benchmark stage runs it. A diagnostic: numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sparsecli.kernels.calibrate import calibrate, layer_clocks, twin_network
from sparsecli.kernels.measure import INNER, SETTINGS, STRUCTURES, network_input, reference_cnn, reference_mlp
from sparsecli.kernels.timing import interleaved_timings, set_threads
from sparsecli.targets.cost_kernels import MODES, predict_latency


def networks(which: str, model_path: str | None):
    if which in ("all", "mlp"):
        for ws, on in SETTINGS:
            for s in STRUCTURES:
                yield reference_mlp(ws, on, s), None
    if which in ("all", "cnn"):
        for s in STRUCTURES:
            yield reference_cnn(s), None
    if which == "model":
        from sparsecli import checkpoint
        from sparsecli.kernels.from_model import model_network

        model, _, _ = checkpoint.load(model_path)
        yield model_network(model), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", default="all", choices=("all", "mlp", "cnn", "model"))
    ap.add_argument("--model", default="models/pruned.pt")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    set_threads(1)
    calibration = calibrate(batches)
    out = []
    for net, _ in networks(args.networks, args.model):
        for batch in batches:
            x = network_input(net, batch)
            twin = twin_network(net)
            inner = INNER.get(batch, 1)
            real, twins = layer_clocks(net, x, 3, inner), layer_clocks(twin, network_input(twin, batch), 3, inner)
            engines = {"dense": net.dense(), "sparse-dense": net.sparse("dense"), "sparse-sparse": net.sparse("sparse")}
            fns = {f"{m} e2e": (lambda e=e: e(x)) for m, e in engines.items()}
            fns |= {f"{m} layers": c for m, c in real.items()} | {f"{m} twin": c for m, c in twins.items()}
            t = interleaved_timings(fns, repeats=args.repeats, warmup=3, inner=inner)
            measured = {m: {"layers": real[m].layers_s(), "end_to_end": t[f"{m} e2e"].median_s} for m in MODES}
            table = {str(batch): {m: twins[m].layers_s() for m in MODES}}
            print(f"\n{net.label}  batch {batch}   (predicted / measured us, ratio)")
            for mode in MODES:
                cells = []
                prediction = predict_latency(table, calibration, mode, batch)
                for i, (p, m) in enumerate(zip(prediction["layers_s"], measured[mode]["layers"])):
                    cells.append(f"L{i + 1} {p * 1e6:7.1f}/{m * 1e6:7.1f} {p / m:4.2f}")
                    out.append({"network": net.label, "batch": batch, "mode": mode, "layer": i + 1,
                                "predicted_s": p, "measured_s": m})
                total = prediction["latency_s"]
                e2e = measured[mode]["end_to_end"]
                sum_layers = float(np.sum(measured[mode]["layers"]))
                print(f"  {mode:13s} " + " | ".join(cells)
                      + f" || e2e {total * 1e6:7.1f}/{e2e * 1e6:7.1f} {total / e2e:4.2f}"
                      + f" (sum of layers {sum_layers * 1e6:.1f})")
                out.append({"network": net.label, "batch": batch, "mode": mode, "layer": "end-to-end",
                            "predicted_s": total, "measured_s": e2e, "sum_of_layers_s": sum_layers})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
