"""Cost-aware search (ASHA + second phase) against full-fidelity search: epochs spent, hypervolume.

Usage: python benchmarks/tune_cost.py [--params params.yaml] [--seeds 3] [--trials 20] [--workers 2]

The same problem for both (the params' data, model, objectives, thresholds, search space and
searcher) and the same number of sampled configurations; for each seed (``seed`` drives the
sampler and the networks' initial weights and masks):

- cost-aware: the params' ``tune.min_epochs`` and ``reduction_factor`` (multi-objective ASHA)
  plus the second phase;
- full-fidelity: ``tune.min_epochs = max_epochs`` and no second phase, so every sampled
  configuration is trained for the full length.

No cost cap (``tune.budget.full_trainings``) applies to either. The hypervolume is that of the
final feasible Pareto front, from the thresholds as reference point (see
``sparsecli.tuning.analysis``). Goal: equal or better hypervolume at <= 40% of the epochs.
Both searches of a seed run in one Ray session, one after the other, on the same data split.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from sparsecli.errors import SparsecliError
from sparsecli.params import load_params
from sparsecli.stages import data
from sparsecli.stages import tune as stage
from sparsecli.tuning.session import ray_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--trials", type=int, default=None, help="sampled configurations (default: tune.budget.trials)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--searcher", choices=["tpe", "nsga2", "random"], default=None,
                        help="default: tune.searcher (random samples the same configurations in both searches)")
    args = parser.parse_args()

    base = load_params(args.params, [f"tune.searcher={args.searcher}"] if args.searcher else [])
    trials = args.trials or base.tune.budget.trials
    full = base.tune.max_epochs or base.train.epochs
    common = [f"tune.budget.trials={trials}", "tune.budget.full_trainings=null", f"tune.searcher={base.tune.searcher}"]
    variants = {
        "cost-aware": common,
        "full-fidelity": common + [f"tune.min_epochs={full}", "tune.second_phase=false"],
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="tune-cost-") as tmp, ray_session(Path(tmp), workers=args.workers):
        data_dir = Path(tmp) / "data-split"
        data.run(base, data_dir)
        for seed in range(args.seeds):
            for name, overrides in variants.items():
                params = load_params(args.params, overrides + [f"seed={seed}"])
                workdir = Path(tmp) / f"{name}-{seed}"
                workdir.mkdir()
                (workdir / "data").symlink_to(data_dir / "data")
                try:
                    m = stage.run(params, workdir, workers=args.workers)
                    rows.append((seed, name, m["cost_epochs"], m["cost_full_trainings"], m["hypervolume"],
                                 m["front_size"], m["feasible"], m["elapsed_seconds"]))
                except SparsecliError as e:  # e.g. no feasible full-fidelity trial: hypervolume 0
                    print(f"seed {seed} {name}: {e}")
                    rows.append((seed, name, None, None, 0.0, 0, 0, None))
                print(_line(rows[-1]), flush=True)

    print(f"\n{trials} sampled configurations per search, {full} epochs at full fidelity, "
          f"searcher {base.tune.searcher}, {args.workers} workers")
    print(f"{'seed':>4}  {'search':<13} {'epochs':>7} {'full-trainings':>14} {'hypervolume':>12} {'front':>5} "
          f"{'feasible':>8} {'seconds':>8}")
    for row in rows:
        print(_line(row))
    by = {name: [r for r in rows if r[1] == name] for name in variants}
    cheap, dear = by["cost-aware"], by["full-fidelity"]
    epochs_ratio = sum(r[2] or 0 for r in cheap) / sum(r[2] or 0 for r in dear)
    hv = {name: statistics.mean(r[4] for r in runs) for name, runs in by.items()}
    wins = sum(c[4] >= d[4] for c, d in zip(cheap, dear))
    print(f"\ncost-aware / full-fidelity epochs: {epochs_ratio:.1%} (goal <= 40%)")
    print(f"mean hypervolume: cost-aware {hv['cost-aware']:.6f}, full-fidelity {hv['full-fidelity']:.6f} "
          f"(ratio {hv['cost-aware'] / hv['full-fidelity']:.2f}; goal >= 1); "
          f"cost-aware equal or better in {wins} of {len(cheap)} seeds")


def _line(row) -> str:
    seed, name, epochs, fulls, hv, front, feasible, seconds = row
    show = (lambda v, f: format(v, f) if v is not None else "-")
    return (f"{seed:>4}  {name:<13} {show(epochs, '>7')} {show(fulls, '>14.2f')} {hv:>12.6f} {front:>5} "
            f"{feasible:>8} {show(seconds, '>8.1f')}")


if __name__ == "__main__":
    main()
