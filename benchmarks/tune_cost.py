"""Equal-budget, anytime comparison: cost-aware search against full-fidelity TPE, by hypervolume.

Usage: python benchmarks/tune_cost.py [--params params.yaml] [--seeds 5] [--trials 20]
       [--budget-fraction 0.35] [--workers 2] [--json out.json] [--png tune_cost.png] [--peer NAME] [--keep DIR]

The same problem for every search (the params' data, model, objectives, thresholds, search
space and searcher); for each seed (``seed`` drives the samplers and the networks' initial
weights and masks):

- full-fidelity: ``--trials`` configurations, every one trained to ``max_epochs``
  (``tune.min_epochs = max_epochs``, no second phase); its epochs are E;
- cost-aware: the params' own fidelities (``tune.min_epochs``, ``reduction_factor``: multi-
  objective ASHA with one sampler model per fidelity) and second phase, given
  ``--budget-fraction`` x E epochs (``tune.budget.full_trainings``, ``trials: null``: it
  samples until the budget is spent);
- with ``--peer NAME``, an independent library's multi-objective multi-fidelity optimiser on
  the same problem and the same epochs as the cost-aware search (``benchmarks/tune_peer.py``;
  ``pip install -e ".[bench]"``).

The hypervolume is that of the feasible full-fidelity Pareto front, from the thresholds as
reference point (``sparsecli.tuning.analysis``). The anytime curve is the hypervolume of the
front known after each 10% of a search's epochs (in the order the epochs were reported);
it is printed and drawn to ``--png``. Goal: cost-aware hypervolume >= full-fidelity's in
the mean (``hv_ratio >= 1``) and in at least 4 of 5 seeds, at budget fraction 0.35.
All searches run in one Ray session, one after the other, on the same data split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

from sparsecli.atomic import json_text
from sparsecli.errors import SparsecliError
from sparsecli.params import load_params
from sparsecli.stages import data
from sparsecli.stages import tune as stage
from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.pareto import hypervolume, non_dominated
from sparsecli.tuning.session import ray_session

STEPS = [k / 10 for k in range(1, 11)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--trials", type=int, default=20, help="configurations of the full-fidelity search")
    parser.add_argument("--budget-fraction", type=float, default=0.35,
                        help="the cost-aware search's epochs, as a fraction of the full-fidelity search's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--searcher", choices=["tpe", "nsga2", "random"], default=None, help="default: tune.searcher")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--png", type=Path, default=Path("tune_cost.png"), help="the anytime curves")
    parser.add_argument("--peer", default=None, help="also run this library's optimiser (see benchmarks/tune_peer.py)")
    parser.add_argument("--keep", type=Path, default=None, help="keep every search's folder here (default: a temp dir)")
    args = parser.parse_args()
    if not 0 < args.budget_fraction <= 1:
        parser.error("--budget-fraction must be in (0, 1]")

    searcher = [f"tune.searcher={args.searcher}"] if args.searcher else []
    base = load_params(args.params, searcher)
    full = base.tune.max_epochs or base.train.epochs
    objectives = Objectives.from_params(base.tune.objectives)
    peer = _peer(args.peer) if args.peer else None
    rows, curves = [], {}
    with _workdir(args.keep) as tmp, ray_session(Path(tmp), workers=args.workers):
        data_dir = Path(tmp) / "data-split"
        data.run(base, data_dir)
        for seed in range(args.seeds):
            overrides = {
                "full": [f"tune.budget.trials={args.trials}", "tune.budget.full_trainings=null",
                         f"tune.min_epochs={full}", "tune.second_phase=false"],
            }
            hv_full, e_full, curves[seed, "full"] = _search(args.params, searcher + overrides["full"], seed, tmp,
                                                            "full", data_dir, args.workers, objectives, full)
            budget = args.budget_fraction * e_full / full
            cost = [f"tune.budget.trials=null", f"tune.budget.full_trainings={budget!r}"]
            hv_cost, e_cost, curves[seed, "cost_aware"] = _search(args.params, searcher + cost, seed, tmp,
                                                                  "cost_aware", data_dir, args.workers, objectives, full)
            row = {"seed": seed, "full_hv": hv_full, "full_epochs": e_full, "cost_aware_hv": hv_cost,
                   "cost_aware_epochs": e_cost}
            if peer is not None:
                params = load_params(args.params, searcher + [f"seed={seed}"])
                hv_peer, e_peer, curves[seed, "peer"] = peer(params, data_dir, Path(tmp) / f"peer-{seed}",
                                                             budget * full, seed)
                row |= {"peer_hv": hv_peer, "peer_epochs": e_peer}
            rows.append(row)
            print(_line(row, peer is not None), flush=True)
            for name in ("full", "cost_aware", *(("peer",) if peer else ())):
                print(f"     anytime {name:<10} " + "  ".join(f"{hv:.5f}" for _, hv in curves[seed, name]), flush=True)

    hv_full = statistics.mean(r["full_hv"] for r in rows)
    hv_cost = statistics.mean(r["cost_aware_hv"] for r in rows)
    out = {
        "budget_fraction": args.budget_fraction,
        "seeds": [{k: r[k] for k in ("seed", "full_hv", "full_epochs", "cost_aware_hv", "cost_aware_epochs")}
                  for r in rows],
        "hv_ratio": hv_cost / hv_full if hv_full > 0 else float("inf"),
        "seeds_matched": sum(r["cost_aware_hv"] >= r["full_hv"] for r in rows),
    }
    print(f"\nfull-fidelity: {args.trials} configurations x {full} epochs; cost-aware: {args.budget_fraction:.0%} "
          f"of its epochs; searcher {base.tune.searcher}, {args.workers} workers")
    print(_header(peer is not None))
    for row in rows:
        print(_line(row, peer is not None))
    print(f"\nhv_ratio (mean cost-aware / mean full-fidelity): {out['hv_ratio']:.3f} (goal >= 1.0); "
          f"seeds matched: {out['seeds_matched']} of {len(rows)} (goal >= 4 of 5); "
          f"max cost-aware / full epochs: {max(r['cost_aware_epochs'] / r['full_epochs'] for r in rows):.3f}")
    print("anytime hypervolume (mean over seeds) at " + " ".join(f"{s:.0%}" for s in STEPS) + " of each search's epochs:")
    for name in ("full", "cost_aware", *(("peer",) if peer else ())):
        means = [statistics.mean(curves[seed, name][k][1] for seed in range(args.seeds)) for k in range(len(STEPS))]
        print(f"  {name:<10} " + " ".join(f"{m:.5f}" for m in means))
    if peer is not None:
        hv_peer = statistics.mean(r["peer_hv"] for r in rows)
        print(f"peer {args.peer}: mean hypervolume {hv_peer:.6f} at the cost-aware search's epochs "
              f"(cost-aware / peer: {hv_cost / hv_peer if hv_peer > 0 else float('inf'):.3f}; "
              f"cost-aware >= peer in {sum(r['cost_aware_hv'] >= r['peer_hv'] for r in rows)} of {len(rows)} seeds)")
    _plot(curves, args.seeds, args.png, args.peer)
    print(f"anytime curves: {args.png}")
    if args.json:
        args.json.write_text(json_text(out))


def _workdir(keep: Path | None):
    """A temp dir, or ``keep`` (created empty) to look at the searches afterwards."""
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="tune-cost-")
    keep.mkdir(parents=True)
    return contextlib.nullcontext(str(keep.resolve()))


def _search(params_path, overrides, seed, tmp, name, data_dir, workers, objectives, full):
    """One tuning run; returns its final hypervolume, its epochs and its anytime curve."""
    params = load_params(params_path, overrides + [f"seed={seed}"])
    workdir = Path(tmp) / f"{name}-{seed}"
    workdir.mkdir()
    (workdir / "data").symlink_to(data_dir / "data")
    try:
        metrics = stage.run(params, workdir, workers=workers)
        hv = metrics["hypervolume"]
    except SparsecliError as e:  # e.g. no feasible full-fidelity trial: hypervolume 0
        print(f"seed {seed} {name}: {e}")
        hv = 0.0
    events = ray_events(stage.ray_dir(workdir))
    return hv, sum(delta for _, delta, _ in events), anytime(events, objectives, full)


def ray_events(folder: Path) -> list[tuple[float, int, dict]]:
    """(time, epochs spent, result) for every result a trial reported, in time order."""
    events = []
    for path in sorted(folder.glob("*/*/result.json")):
        spent = 0
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            result = json.loads(line)
            cost = int(result.get("cost_epochs", spent))
            events.append((float(result.get("reported_at", result.get("timestamp", 0))), cost - spent, result))
            spent = cost
    return sorted(events, key=lambda e: e[0])


def anytime(events, objectives: Objectives, full: int, steps=STEPS) -> list[tuple[int, float]]:
    """(epochs, hypervolume of the feasible full-fidelity front so far) after each fraction of the epochs."""
    total = sum(delta for _, delta, _ in events)
    curve, points, spent, k = [], [], 0, 0
    reference = objectives.reference()
    for _, delta, result in events:
        spent += delta
        if result.get("epoch", 0) >= full and all(m in result for m in objectives.metrics) \
                and objectives.feasible(result):
            points.append(objectives.vector(result))
        while k < len(steps) and spent >= steps[k] * total - 1e-9:
            front = [points[i] for i in non_dominated(points)]
            curve.append((spent, hypervolume(front, reference)))
            k += 1
    while len(curve) < len(steps):
        curve.append((spent, curve[-1][1] if curve else 0.0))
    return curve


def _peer(name: str):
    try:
        from tune_peer import PEERS
    except ImportError as e:
        raise SystemExit(f"--peer {name}: {e}; install the benchmark extra: pip install -e '.[bench]'") from None
    if name not in PEERS:
        raise SystemExit(f"--peer {name}: unknown; one of {', '.join(PEERS)}")
    return PEERS[name]


def _header(peer: bool) -> str:
    text = f"{'seed':>4} {'full_hv':>9} {'full_epochs':>11} {'cost_aware_hv':>13} {'cost_aware_epochs':>17} {'epochs%':>7}"
    return text + (f" {'peer_hv':>9} {'peer_epochs':>11}" if peer else "")


def _line(row: dict, peer: bool) -> str:
    text = (f"{row['seed']:>4} {row['full_hv']:>9.5f} {row['full_epochs']:>11} {row['cost_aware_hv']:>13.5f} "
            f"{row['cost_aware_epochs']:>17} {row['cost_aware_epochs'] / max(row['full_epochs'], 1):>7.1%}")
    return text + (f" {row['peer_hv']:>9.5f} {row['peer_epochs']:>11}" if peer else "")


def _plot(curves, seeds: int, path: Path, peer: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"full": ("tab:blue", "full-fidelity TPE"), "cost_aware": ("tab:green", "cost-aware"),
              "peer": ("tab:orange", f"peer: {peer}")}
    for name, (color, label) in styles.items():
        for seed in range(seeds):
            if (seed, name) in curves:
                xs, ys = zip(*curves[seed, name])
                ax.plot(xs, ys, color=color, alpha=0.6, marker=".", label=label if seed == 0 else None)
    ax.set_xlabel("epochs spent")
    ax.set_ylabel("hypervolume of the feasible full-fidelity front")
    ax.set_title("Anytime hypervolume, one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
