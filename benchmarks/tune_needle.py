"""The "4 of 1,000" setting: a 12-dimensional space where few configurations meet every threshold.

Usage: python benchmarks/tune_needle.py [--params params.yaml] [--random-configs 100] [--configs 40]
       [--workers 2] [--json out.json]

The default network of ``--params`` (its data, model and training) with a search space of 12
of its hyperparameters (``SPACE``: learning rate, weight decay, batch size, each hidden
layer's weight sparsity, ``percent_on`` and boost strength, the boost decay factor and
``k_inference_factor``) and three thresholds (``OBJECTIVES``) tight enough that few random
configurations trained at full length (``max_epochs`` of the params) meet them all.

1. ``--random-configs`` random configurations trained at full length (seed 1000): the feasible
   rate, printed (goal <= 3%).
2. At equal epochs (``--configs`` x max_epochs, seed 0): feasible configurations found and the
   hypervolume of the feasible front (reference: the thresholds) for random search, full-
   fidelity TPE (every configuration trained to max_epochs) and the cost-aware search (the
   params' fidelities and second phase, ``tune.budget.full_trainings = --configs``).
   Goal: cost-aware finds >= 3x random's feasible count and more than full-fidelity TPE's.

``--json PATH`` writes ``{"random_feasible_rate", "epochs", "found": {"random", "tpe_full",
"cost_aware"}, "hv": {...}}`` (plus the thresholds and counts behind them).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tune_cost import anytime, ray_events

from sparsecli.atomic import json_text
from sparsecli.errors import SparsecliError
from sparsecli.params import load_params
from sparsecli.stages import data
from sparsecli.stages import tune as stage
from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.session import ray_session

SPACE = [
    {"key": "train.lr", "dist": "loguniform", "low": 0.0003, "high": 0.03},
    {"key": "train.weight_decay", "dist": "loguniform", "low": 1e-6, "high": 1e-2},
    {"key": "train.batch_size", "dist": "choice", "values": [32, 64, 128, 256]},
    {"key": "model.layers.0.weights.sparsity", "dist": "uniform", "low": 0.5, "high": 0.98},
    {"key": "model.layers.1.weights.sparsity", "dist": "uniform", "low": 0.5, "high": 0.98},
    {"key": "model.layers.0.kwta.percent_on", "dist": "uniform", "low": 0.03, "high": 0.5},
    {"key": "model.layers.1.kwta.percent_on", "dist": "uniform", "low": 0.03, "high": 0.5},
    {"key": "model.layers.0.kwta.boost_strength", "dist": "uniform", "low": 0.0, "high": 3.0},
    {"key": "model.layers.1.kwta.boost_strength", "dist": "uniform", "low": 0.0, "high": 3.0},
    {"key": "model.layers.0.kwta.boost_strength_factor", "dist": "uniform", "low": 0.5, "high": 1.0},
    {"key": "model.layers.1.kwta.boost_strength_factor", "dist": "uniform", "low": 0.5, "high": 1.0},
    {"key": "model.layers.0.kwta.k_inference_factor", "dist": "uniform", "low": 1.0, "high": 2.0},
]
OBJECTIVES = [
    {"metric": "accuracy", "mode": "max", "threshold": 0.95},
    {"metric": "weight_sparsity", "mode": "max", "threshold": 0.9},
    {"metric": "activation_sparsity", "mode": "max", "threshold": 0.85},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--random-configs", type=int, default=100, help="random full-length configurations for the rate")
    parser.add_argument("--configs", type=int, default=40, help="the equal budget, in full-length trainings")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.random_configs < 100:
        parser.error("--random-configs: the feasible rate is measured on at least 100 configurations")

    overlay = {"tune.space": SPACE, "tune.objectives": OBJECTIVES}
    base = load_params(args.params, overlays=[overlay])
    full = base.tune.max_epochs or base.train.epochs
    objectives = Objectives.from_params(base.tune.objectives)
    at_full = ["tune.budget.full_trainings=null", f"tune.min_epochs={full}", "tune.second_phase=false"]
    searches = {
        "random": at_full + [f"tune.budget.trials={args.configs}", "tune.searcher=random"],
        "tpe_full": at_full + [f"tune.budget.trials={args.configs}", "tune.searcher=tpe"],
        "cost_aware": ["tune.budget.trials=null", f"tune.budget.full_trainings={args.configs}", "tune.searcher=tpe"],
    }
    found, hv, epochs = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="tune-needle-") as tmp, ray_session(Path(tmp), workers=args.workers):
        data_dir = Path(tmp) / "data-split"
        data.run(base, data_dir)

        def run(name: str, overrides: list[str], seed: int):
            params = load_params(args.params, overrides + [f"seed={seed}"], overlays=[overlay])
            workdir = Path(tmp) / name
            workdir.mkdir()
            (workdir / "data").symlink_to(data_dir / "data")
            try:
                stage.run(params, workdir, workers=args.workers)
            except SparsecliError as e:  # no feasible full-fidelity trial: nothing found
                print(f"{name}: {e}")
            events = ray_events(stage.ray_dir(workdir))
            finals = [r for _, _, r in events if r.get("epoch", 0) >= full and all(m in r for m in objectives.metrics)]
            feasible = sum(objectives.feasible(r) for r in finals)
            if name == "rate":  # how tight each threshold is on its own
                for o in OBJECTIVES:
                    values = sorted(r[o["metric"]] for r in finals)
                    quartiles = [values[int(q * (len(values) - 1))] for q in (0.1, 0.5, 0.9, 0.97)]
                    print(f"  {o['metric']}: 10/50/90/97% quantiles " + " ".join(f"{v:.4f}" for v in quartiles)
                          + f"; {sum(v >= o['threshold'] for v in values)} of {len(values)} >= {o['threshold']}")
            return feasible, len(finals), sum(d for _, d, _ in events), anytime(events, objectives, full)[-1][1]

        feasible, trained, _, _ = run("rate", at_full + [f"tune.budget.trials={args.random_configs}",
                                                         "tune.searcher=random"], 1000)
        rate = feasible / max(trained, 1)
        print(f"random configurations at full length ({full} epochs): {feasible} of {trained} feasible "
              f"= {rate:.1%} (goal <= 3%)", flush=True)
        for name, overrides in searches.items():
            found[name], _, epochs[name], hv[name] = run(name, overrides, 0)
            print(f"{name:<10} epochs {epochs[name]:>5}  feasible found {found[name]:>3}  hypervolume {hv[name]:.6f}",
                  flush=True)

    budget = args.configs * full
    print(f"\n12 hyperparameters; thresholds "
          + ", ".join(f"{o['metric']} >= {o['threshold']}" for o in OBJECTIVES)
          + f"; equal budget {budget} epochs ({args.configs} full trainings), {args.workers} workers")
    print(f"{'search':<10} {'epochs':>6} {'found':>5} {'hypervolume':>11}")
    for name in searches:
        print(f"{name:<10} {epochs[name]:>6} {found[name]:>5} {hv[name]:>11.6f}")
    print(f"random feasible rate {rate:.1%}; cost-aware found {found['cost_aware']} vs random {found['random']} "
          f"(goal >= 3x: {found['cost_aware'] >= 3 * found['random']}) and tpe_full {found['tpe_full']} "
          f"(goal more: {found['cost_aware'] > found['tpe_full']})")
    if args.json:
        args.json.write_text(json_text({
            "random_feasible_rate": rate, "epochs": budget, "found": found, "hv": hv,
            "epochs_spent": epochs, "random_configs": trained, "random_feasible": feasible,
            "thresholds": {o["metric"]: o["threshold"] for o in OBJECTIVES},
        }))


if __name__ == "__main__":
    main()
