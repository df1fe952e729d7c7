"""Accuracy of each pruning method on the dense MLP, at matched weight sparsity.

Usage: python benchmarks/prune_methods.py [--params params.yaml] [--sparsity 0.9] [--finetune-epochs 20]

Trains the params' model made dense (every weights.sparsity = 0, kwta = null: on the
default params the 64-256-256-10 MLP on digits) with the `train` stage, then runs the
real `prune` stage on it once per method, every layer included (head too, so the whole
model reaches the target), layerwise, fine-tuning for the same number of epochs:
magnitude, gmp (s_i = 0 from epoch 0 to 3/4 of fine-tuning, an update every 10 steps),
nm 2:4 and 1:8 (their sparsity is fixed by the pattern: 50% and 87.5%) and block 1x16.
Prints a markdown table: test accuracy and its change against the dense model.
Acceptance: gmp to 90% loses at most 1.5 points of test accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_train import dense_overrides

from sparsecli.params import load_params
from sparsecli.stages import data, prune, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    args = parser.parse_args()

    base = load_params(args.params)
    dense = dense_overrides(base)
    epochs = args.finetune_epochs
    common = [f"prune.sparsity={args.sparsity}", f"prune.finetune_epochs={epochs}", "prune.exclude=[]"]
    methods = {
        "magnitude": ["prune.method=magnitude"],
        "gmp": ["prune.method=gmp", "prune.initial_sparsity=0", "prune.start_epoch=0",
                f"prune.end_epoch={max(1, epochs * 3 // 4)}", "prune.frequency=10"],
        "nm 2:4": ["prune.method=nm", "prune.n=2", "prune.m=4"],
        "nm 1:8": ["prune.method=nm", "prune.n=1", "prune.m=8"],
        "block 1x16": ["prune.method=block", "prune.block=1x16"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        params = load_params(args.params, dense)
        data.run(params, workdir)
        dense_metrics = train.run(params, workdir)
        rows.append(("dense (train)", dense_metrics["weight_sparsity"], dense_metrics["test_accuracy"], 0.0, 0.0))
        for name, overrides in methods.items():
            start = time.perf_counter()
            metrics = prune.run(load_params(args.params, dense + common + overrides), workdir)
            assert metrics["pattern_satisfied"] and metrics["resurrected_weights"] == 0
            rows.append((name, metrics["weight_sparsity"], metrics["test_accuracy"],
                         metrics["test_accuracy"] - dense_metrics["test_accuracy"], time.perf_counter() - start))
    print(f"digits, dense MLP trained {params.train.epochs} epochs; every layer pruned, layerwise, "
          f"{epochs} fine-tuning epochs at prune.lr={params.prune.lr}\n")
    print("| method | weight sparsity | test accuracy | change vs dense (points) | prune + fine-tune time |")
    print("|---|---|---|---|---|")
    for name, sparsity, accuracy, change, seconds in rows:
        print(f"| {name} | {sparsity:.4f} | {accuracy:.4f} | {change * 100:+.2f} | {seconds:.1f} s |")
    gmp = next(r for r in rows if r[0] == "gmp")
    print(f"\ngmp at {gmp[1]:.2%} weight sparsity: {gmp[3] * 100:+.2f} points (acceptance: >= -1.50)")


if __name__ == "__main__":
    main()
