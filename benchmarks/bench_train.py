"""Per-epoch training time of the sparse model (masks + kWTA) relative to the same model dense.

Usage: python benchmarks/bench_train.py [--params params.yaml] [--epochs 5]

Both models are built from the same params (the dense one with weights.sparsity = 0 and
kwta = null on every layer), on the same data, in one process; epochs alternate
(sparse, dense, sparse, dense, ...) so machine drift hits both alike. The first epoch of
each is a warm-up and is not timed. Target: sparse <= 1.5x dense.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sparsecli.models import build_model
from sparsecli.params import load_params
from sparsecli.stages import data
from sparsecli.training import fit, read_splits


def dense_overrides(params) -> list[str]:
    out = []
    for i, _ in enumerate(params.model.conv):
        out += [f"model.conv.{i}.weights.sparsity=0", f"model.conv.{i}.kwta=null"]
    for i, _ in enumerate(params.model.layers):
        out += [f"model.layers.{i}.weights.sparsity=0", f"model.layers.{i}.kwta=null"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per model")
    args = parser.parse_args()

    variants = {"sparse": load_params(args.params)}
    variants["dense"] = load_params(args.params, dense_overrides(variants["sparse"]))
    with tempfile.TemporaryDirectory() as tmp:
        data.run(variants["sparse"], Path(tmp))
        splits, meta = read_splits(Path(tmp))
    models = {name: build_model(p, meta) for name, p in variants.items()}
    states = {name: None for name in variants}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for epoch in range(1, args.epochs + 2):
        for name, params in variants.items():
            start = time.perf_counter()
            states[name] = fit(models[name], params.train, splits, seed=params.seed, epochs=args.epochs + 1,
                               state=states[name], on_epoch=lambda record, state: True)  # one epoch per call
            if epoch > 1:
                times[name].append(time.perf_counter() - start)
    for name in variants:
        print(f"{name:>6}: median {statistics.median(times[name]) * 1000:.1f} ms/epoch "
              f"(IQR {_iqr(times[name]) * 1000:.1f} ms, {len(times[name])} epochs)")
    ratio = statistics.median(times["sparse"]) / statistics.median(times["dense"])
    print(f"sparse / dense per-epoch time: {ratio:.2f}x (target <= 1.5x)")


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


if __name__ == "__main__":
    main()
