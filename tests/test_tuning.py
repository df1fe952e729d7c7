"""The tuning library without Ray: objectives, Pareto front, hypervolume, selection, rungs, searcher."""

import itertools
import math
import random

import pytest

from sparsecli.params import TuneObjective
from sparsecli.tune_metrics import HARDWARE_NAMES, METRICS, NAMES
from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.pareto import constrained_order, dominates, hypervolume, non_dominated, nondomination_ranks
from sparsecli.tuning.scheduler import promote, rungs
from sparsecli.tuning.select import knee, select

ACC_WS = Objectives.from_params([TuneObjective(metric="accuracy", threshold=0.94),
                                 TuneObjective(metric="weight_sparsity", threshold=0.85)])


def brute_front(points):
    return [i for i, p in enumerate(points)
            if not any(all(q[k] >= p[k] for k in range(len(p))) and q != p for q in points)]


def brute_hypervolume(points, ref):
    """Inclusion-exclusion over every subset: the union of boxes [ref, p], exactly."""
    boxes = [p for p in points if all(x > r for x, r in zip(p, ref))]
    total = 0.0
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            corner = [min(p[k] for p in subset) for k in range(len(ref))]
            total += (-1) ** (size + 1) * math.prod(c - r for c, r in zip(corner, ref))
    return total


def test_one_list_of_trial_metrics():
    """Every module takes the trial metrics' names from ``sparsecli.tune_metrics``; none spells them again."""
    import inspect
    import re
    import typing

    import sparsecli.params as params
    import sparsecli.report.sections as report
    import sparsecli.stages.tune as stage
    import sparsecli.tuning.monitor as monitor
    import sparsecli.tuning.objectives as objectives
    import sparsecli.tuning.search as search

    assert NAMES == tuple(METRICS)
    assert typing.get_args(params.TuneObjective.model_fields["metric"].annotation) == NAMES + HARDWARE_NAMES
    assert stage.METRIC_COLUMNS == NAMES and monitor.SHOWN == NAMES
    assert search.HISTORY_KEYS[1:1 + len(NAMES)] == NAMES
    # no module lists two or more of the names in one literal tuple/dict any more
    for module in (params, stage, monitor, objectives, search):
        source = inspect.getsource(module)
        listed = re.findall(r'[({][^(){}]*"activation_sparsity"[^(){}]*"mac_reduction"', source)
        assert not listed, f"{module.__name__} repeats the metric names: {listed}"
    assert report  # the report reads columns by name from trials.csv, not a list of them


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_front_and_hypervolume_match_brute_force(dims):
    rng = random.Random(dims)
    for _ in range(20):
        points = [tuple(round(rng.random(), 2) for _ in range(dims)) for _ in range(rng.randint(1, 8))]
        ref = tuple(0.1 for _ in range(dims))
        assert non_dominated(points) == brute_front(points)
        assert hypervolume(points, ref) == pytest.approx(brute_hypervolume(points, ref), abs=1e-12)


def test_hypervolume_by_hand():
    assert hypervolume([(0.96, 0.90), (0.98, 0.87)], (0.94, 0.85)) == pytest.approx(0.02 * 0.05 + 0.02 * 0.02)
    assert hypervolume([(0.94, 0.99)], (0.94, 0.85)) == 0.0  # on the threshold: feasible, adds no volume


def test_objectives_constraints_and_min_mode():
    result = {"accuracy": 0.93, "weight_sparsity": 0.9}
    assert ACC_WS.constraints(result) == pytest.approx({"accuracy": 0.01 / 0.94, "weight_sparsity": -0.05 / 0.85})
    assert not ACC_WS.feasible(result) and ACC_WS.violation(result) == pytest.approx(0.01 / 0.94)
    assert ACC_WS.reference() == (0.94, 0.85)
    mixed = Objectives(("accuracy", "mac_reduction"), ("max", "min"), (None, 20.0))
    assert mixed.vector({"accuracy": 0.9, "mac_reduction": 10}) == (0.9, -10.0)
    assert mixed.reference() == (0.0, -20.0)
    assert mixed.feasible({"accuracy": 0.1, "mac_reduction": 19}) and not mixed.feasible({"accuracy": 1, "mac_reduction": 21})
    assert Objectives(("mac_reduction",), ("min",), (None,)).missing_reference() == 0


def test_constrained_order_puts_feasible_first_then_least_violation():
    points = [(0.99, 0.80), (0.95, 0.90), (0.96, 0.86), (0.95, 0.86), (0.90, 0.95)]
    violations = [ACC_WS.violation({"accuracy": a, "weight_sparsity": w}) for a, w in points]
    order = constrained_order(points, violations)
    assert order[:2] in ([1, 2], [2, 1])  # the feasible front
    assert order[2] == 3  # feasible but dominated by 2
    assert order[3:] == [4, 0]  # infeasible, least violation first: 0.04/0.94 < 0.05/0.85
    assert nondomination_ranks([(1, 1), (0, 0), (1, 0)]) == [0, 2, 1]


def test_rungs_and_promotion_keep_the_best_fraction():
    assert rungs(1, 9, 3) == [1, 3] and rungs(4, 40, 3) == [4, 12, 36] and rungs(9, 9, 3) == []
    arrivals = [(0.90, 0.86), (0.95, 0.90), (0.80, 0.86), (0.96, 0.95), (0.85, 0.80), (0.97, 0.88), (0.99, 0.84)]
    for strict, expected in ((False, [True, True, False, True, False, True, False]),
                             (True, [False, False, False, True, False, True, False])):
        entries, decisions = {}, []
        for i, (acc, ws) in enumerate(arrivals):
            entries[f"t{i}"] = {"accuracy": acc, "weight_sparsity": ws}
            decisions.append(promote(entries, f"t{i}", ACC_WS, 3, strict))
        # among the best n // 3 of the n so far (not strict: at least the best one); accuracy
        # below its threshold does not count at a rung, weight sparsity below its own does (t6)
        assert decisions == expected, strict


def test_promotion_ties_fall_by_entry_order_not_by_trial_id():
    """Ray's trial ids are random: ranking ties by them made a seeded one-worker search differ run to run."""
    tie = {"accuracy": 0.96, "weight_sparsity": 0.9}
    for first, second in (("zz", "aa"), ("aa", "zz")):
        entries = {first: tie, second: tie}
        assert promote(entries, first, ACC_WS, 2, strict=True) and not promote(entries, second, ACC_WS, 2, strict=True)


def test_knee_of_a_two_point_front_is_the_better_trade_off_not_a_tie():
    """Min-max over two points puts both at distance 1 from the ideal; from the thresholds it does not."""
    front = [{"accuracy": 0.98, "weight_sparsity": 0.86}, {"accuracy": 0.97, "weight_sparsity": 0.92}]
    # above the thresholds (0.94, 0.85): the first keeps 100% of the accuracy gain and 1/7 of the
    # sparsity gain, the second 75% and 100%
    assert select(front, ACC_WS, "knee") == 1
    assert select(front[::-1], ACC_WS, "knee") == 0  # the trade-off decides, not the trial order
    assert knee([ACC_WS.vector(r) for r in front]) == 0  # min-max: a tie, broken by order
    mirrored = [{"accuracy": 0.99, "weight_sparsity": 0.91}, {"accuracy": 0.95, "weight_sparsity": 0.92}]
    assert select(mirrored, ACC_WS, "knee") == 0


def test_selection_rules():
    front = [{"accuracy": 0.99, "weight_sparsity": 0.86}, {"accuracy": 0.97, "weight_sparsity": 0.93},
             {"accuracy": 0.95, "weight_sparsity": 0.97}]
    assert select(front, ACC_WS, "max_accuracy") == 0
    assert select(front, ACC_WS, "max_sparsity") == 2
    assert select(front, ACC_WS, "knee") == 1
    assert knee([(1.0, 0.0)]) == 0
    # the knee is the point nearest the ideal after normalising from the reference point, by brute force
    rng = random.Random(5)
    for _ in range(20):
        points = [(rng.random(), rng.random()) for _ in range(5)]
        ref = (rng.random() - 0.5, rng.random() - 0.5)
        lo = [min(ref[k], *(p[k] for p in points)) for k in range(2)]
        hi = [max(p[k] for p in points) for k in range(2)]
        dist = [math.dist([(p[k] - lo[k]) / (hi[k] - lo[k]) for k in range(2)], [1, 1]) for p in points]
        assert knee(points, ref) == dist.index(min(dist))
    # without a reference: min-max normalisation over the front
    rng = random.Random(3)
    for _ in range(20):
        points = [(rng.random(), rng.random(), rng.random()) for _ in range(6)]
        lo = [min(p[k] for p in points) for k in range(3)]
        hi = [max(p[k] for p in points) for k in range(3)]
        dist = [math.dist([(p[k] - lo[k]) / (hi[k] - lo[k]) for k in range(3)], [1, 1, 1]) for p in points]
        assert knee(points) == dist.index(min(dist))


def test_searcher_learns_at_every_fidelity_and_tells_only_full_results_as_final():
    """One study per fidelity: rung results go to their rung's study (settled thresholds only as
    constraints), full ones to the full study (every threshold); errors end as FAIL; sampling moves
    to the highest fidelity with enough evaluations; the budget stops it."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from sparsecli.tuning.searcher import FidelitySearch

    search = FidelitySearch({"train.lr": FloatDistribution(0.001, 0.1, log=True)}, ACC_WS, [3, 9], "tpe", 0, 2,
                            budget_epochs=40)
    for trial_id in "abcd":
        assert 0.001 <= search.suggest(trial_id)["train.lr"] <= 0.1
    assert all(search.trials[t]["drawn_from"] == 3 for t in "abcd")  # no study has 2 evaluations yet
    a3 = {"epoch": 3, "accuracy": 0.99, "weight_sparsity": 0.9, "cost_epochs": 3}
    search.on_trial_result("a", a3)
    search.on_trial_complete("a", a3)
    for epoch in range(1, 10):
        search.on_trial_result("b", {"epoch": epoch, "accuracy": 0.9 + epoch / 1000, "weight_sparsity": 0.8,
                                     "cost_epochs": epoch})
    search.on_trial_complete("b", {"epoch": 9, "accuracy": 0.909, "weight_sparsity": 0.8, "cost_epochs": 9})
    search.on_trial_complete("c", None, error=True)
    search.on_trial_complete("d", {"epoch": 2, "diverged": "loss became nan", "cost_epochs": 2})
    cheap, full = search.studies[3].get_trials(deepcopy=False), search.studies[9].get_trials(deepcopy=False)
    # in the rung-3 study: a and b (at epoch 3) COMPLETE with rung values, c and d FAIL
    assert [t.state for t in cheap] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert cheap[0].values == [0.99, 0.9] and cheap[1].values == [0.903, 0.8]
    assert cheap[0].constraints == pytest.approx({"weight_sparsity": -0.05 / 0.85})  # no low-fidelity accuracy
    assert cheap[1].constraints == pytest.approx({"weight_sparsity": 0.05 / 0.85})
    # in the full study: only b, with its full values and every threshold
    assert [t.state for t in full] == [TrialState.COMPLETE] and full[0].values == [0.909, 0.8]
    assert full[0].constraints == pytest.approx({"accuracy": 0.031 / 0.94, "weight_sparsity": 0.05 / 0.85})
    assert search.model_fidelity() == 3  # rung 3 holds 2 evaluations, the full study 1
    assert search.suggest("e") != "FINISHED" and search.trials["e"]["drawn_from"] == 3
    search.on_trial_result("c", {"cost_epochs": 10})
    search.on_trial_result("d", {"cost_epochs": 8})
    search.on_trial_result("e", {"cost_epochs": 10})  # 3 + 9 + 10 + 8 + 10 = 40 epochs: the budget is spent
    assert search.suggest("f") == "FINISHED"
    capped = FidelitySearch({"train.lr": FloatDistribution(0.001, 0.1, log=True)}, ACC_WS, [9], "random", 0, 2,
                            max_trials=1)
    assert capped.suggest("a") != "FINISHED" and capped.suggest("b") == "FINISHED"


def test_searcher_samples_from_the_highest_fidelity_with_enough_evaluations(tmp_path):
    from optuna.distributions import FloatDistribution

    from sparsecli.tuning.searcher import FidelitySearch

    search = FidelitySearch({"x": FloatDistribution(0, 1)}, ACC_WS, [1, 3, 9], "tpe", 0, 2)
    for i, trial_id in enumerate("abc"):
        search.suggest(trial_id)
        for epoch in (1, 3, 9)[:i + 1]:
            search.on_trial_result(trial_id, {"epoch": epoch, "accuracy": 0.95, "weight_sparsity": 0.9})
    assert search.model_fidelity() == 3  # rung 1: 3 evaluations, rung 3: 2, full: 1
    search.on_trial_result("b", {"epoch": 9, "accuracy": 0.95, "weight_sparsity": 0.9})
    assert search.model_fidelity() == 9
    search.suggest("d")
    assert search.trials["d"]["drawn_from"] == 9
    wide = FidelitySearch({k: FloatDistribution(0, 1) for k in "xyz"}, ACC_WS, [1, 9], "tpe", 0, 2)
    assert wide.min_evaluations == 4  # BOHB's d + 1 points before a model of 3 keys is trusted
    # saved and restored with the experiment: a resumed run continues the same studies and ledger
    search.save(str(tmp_path / "searcher.pkl"))
    again = FidelitySearch({"x": FloatDistribution(0, 1)}, ACC_WS, [1, 3, 9], "tpe", 0, 2)
    again.restore(str(tmp_path / "searcher.pkl"))
    again.on_trial_result("d", {"epoch": 9, "accuracy": 0.96, "weight_sparsity": 0.9})
    assert [t.values for t in again.studies[9].get_trials(deepcopy=False)][-1] == [0.96, 0.9]


def test_searcher_stops_when_the_first_trials_all_crash_and_the_run_says_why(tmp_path):
    """Crashed trials cost no epochs, so without this stop a broken setup samples forever."""
    from optuna.distributions import FloatDistribution

    from sparsecli.errors import SparsecliError
    from sparsecli.tuning.search import TrialRecord, check_not_all_crashed
    from sparsecli.tuning.searcher import FAILED_START, FidelitySearch

    space = {"x": FloatDistribution(0, 1)}
    broken = FidelitySearch(space, ACC_WS, [1, 9], "random", 0, 2, budget_epochs=100)
    for i in range(FAILED_START):
        assert broken.suggest(str(i)) != "FINISHED"
        broken.on_trial_complete(str(i), None, error=True)
    assert broken.suggest("next") == "FINISHED"
    # once any trial has reported, a crash is a bad region of the space, not a broken setup
    working = FidelitySearch(space, ACC_WS, [1, 9], "random", 0, 2, budget_epochs=100)
    working.suggest("a"), working.on_trial_result("a", {"epoch": 1, "accuracy": 0.9, "weight_sparsity": 0.9,
                                                        "cost_epochs": 1})
    for i in range(2 * FAILED_START):
        assert working.suggest(str(i)) != "FINISHED"
        working.on_trial_complete(str(i), None, error=True)

    folder = tmp_path / "search"
    folder.mkdir()
    crashed = [TrialRecord(f"search_{i:05d}", "search", {"x": 0.5}, "failed", error="TypeError: boom")
               for i in range(FAILED_START)]
    with pytest.raises(SparsecliError, match=r"^tune: all 4 trials failed.*search_00000: TypeError: boom; fix"):
        check_not_all_crashed(crashed, folder)
    assert not folder.exists()  # the rerun after the fix starts over instead of resuming the crashes
    check_not_all_crashed(crashed + [TrialRecord("search_00009", "search", {"x": 0.1}, "stopped")], tmp_path)


def _two_workers(arrival_seed: int, lag: int | None):
    """A cheap phase on two workers whose results arrive in a random order (any running trial may
    report next): the searcher and the scheduler as Ray drives them. Returns the configurations
    drawn, in order, and the trials promoted past the rung."""
    from types import SimpleNamespace

    from optuna.distributions import FloatDistribution
    from ray.tune.schedulers import TrialScheduler

    from sparsecli.tuning.scheduler import ParetoASHA
    from sparsecli.tuning.searcher import FidelitySearch

    search = FidelitySearch({"x": FloatDistribution(0, 1)}, ACC_WS, [1, 4], "tpe", 0, 3, max_trials=14, lag=lag)
    scheduler = ParetoASHA(ACC_WS, 1, 4, 4, lag=lag)
    arrivals, running, drawn, promoted = random.Random(arrival_seed), {}, [], set()
    for attempt in itertools.count():
        while len(running) < 2:
            config = search.suggest(f"id{attempt}-{len(running)}")
            if config is None or config == "FINISHED":
                break
            trial = SimpleNamespace(trial_id=f"id{attempt}-{len(running)}", status="RUNNING", last_result={},
                                    experiment_tag=f"{len(drawn) + 1}_x={config['x']}")  # as Ray tags trials
            scheduler.on_trial_add(None, trial)
            running[trial.trial_id] = (trial, config["x"], [0])
            drawn.append(config["x"])
        if not running:
            return drawn, promoted
        trial, x, epoch = running[arrivals.choice(sorted(running))]
        epoch[0] += 1
        result = {"epoch": epoch[0], "accuracy": 0.95 + 0.04 * math.sin(9 * x) * epoch[0] / 4,
                  "weight_sparsity": 0.8 + 0.15 * x, "cost_epochs": epoch[0]}
        if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            search.on_trial_complete(trial.trial_id, result)
            del running[trial.trial_id]
        else:
            promoted.add(x)
            search.on_trial_result(trial.trial_id, result)


def test_two_workers_draw_and_promote_the_same_trials_whatever_order_their_results_arrive_in():
    """With a lag of two, the i-th draw and each promotion depend only on trials drawn at least two
    before, told in order: so the same search comes out of every interleaving. Without it,
    they depend on which result came first."""
    runs = [_two_workers(seed, lag=2) for seed in range(4)]
    assert len(runs[0][0]) == 14 and runs[0][1]
    assert all(run == runs[0] for run in runs[1:])
    assert any(_two_workers(seed, lag=None) != _two_workers(0, lag=None) for seed in range(1, 4))


def test_second_phase_on_two_workers_finishes_the_same_trials_whatever_order_they_end_in():
    def finishes(end_seed: int, lag: int | None) -> list[str]:
        pool = [(f"c{i}", (0.94 + 0.004 * ((i * 7) % 5), 0.86 + 0.012 * i)) for i in range(8)]
        search = finisher(pool, [(0.975, 0.86)], [], budget=5 * 38)
        search.lag = lag
        ends, running, picked = random.Random(end_seed), {}, []
        for attempt in itertools.count():
            while len(running) < 2:
                choice = search.suggest(f"id{attempt}-{len(running)}")
                if choice is None or choice == "FINISHED":
                    break
                running[f"id{attempt}-{len(running)}"] = dict(pool)[choice["from_trial"]]
                picked.append(choice["from_trial"])
            if not running:
                return picked
            trial_id = ends.choice(sorted(running))
            acc, ws = running.pop(trial_id)
            search.on_trial_complete(trial_id, {"epoch": 40, "accuracy": acc + 0.03 - 0.3 * (ws - 0.9) ** 2,
                                                "weight_sparsity": ws})

    runs = [finishes(seed, lag=2) for seed in range(4)]
    assert len(runs[0]) == 5 and all(run == runs[0] for run in runs[1:])


def test_trial_errors_become_one_line():
    from sparsecli.errors import ParamsError
    from sparsecli.tuning.monitor import error_text

    class Wrapped(Exception):  # what Ray raises for a trial: the trainable's exception as .cause
        def __init__(self, cause):
            super().__init__("RayTaskError(...)\nTraceback ...\n  File ...")
            self.cause = cause

    assert error_text(Wrapped(ValueError("Expected more than 1 value per channel"))) == \
        "ValueError: Expected more than 1 value per channel"
    assert error_text(Wrapped(ParamsError("tune trial: model.layers.0.units = 0"))) == \
        "invalid params: tune trial: model.layers.0.units = 0"
    assert error_text("Failure # 1\nTraceback (most recent call last):\nRuntimeError: boom\n") == "RuntimeError: boom"
    assert error_text(None).startswith("unknown error")


def test_budget_split_leaves_whole_finishing_trainings_and_counts_running_trials():
    from optuna.distributions import FloatDistribution

    from sparsecli.params import load_params
    from sparsecli.tuning.search import Plan
    from sparsecli.tuning.searcher import FidelitySearch

    from conftest import ROOT

    plan = Plan.from_params(load_params(ROOT / "params.yaml", ["tune.budget.full_trainings=7", "tune.min_epochs=2",
                                                               "tune.budget.search_fraction=0.5"]))
    assert plan.budget_epochs == 280 and plan.reserve_epochs == 4 * 38 and plan.search_epochs == 128
    assert Plan.from_params(load_params(ROOT / "params.yaml", ["tune.second_phase=false"])).reserve_epochs == 0
    search = FidelitySearch({"x": FloatDistribution(0, 1)}, ACC_WS, [2, 40], "random", 0, 2, budget_epochs=10)
    search.suggest("a"), search.suggest("b"), search.suggest("c")
    search.on_trial_result("a", {"epoch": 1, "cost_epochs": 1})  # will spend 1 more to reach the rung
    search.on_trial_complete("b", {"epoch": 2, "cost_epochs": 2})  # stopped at the rung
    search.on_trial_result("c", {"epoch": 2, "cost_epochs": 2})  # told at a rung only if promoted: 38 more
    assert search.committed() == 1 + 1 + 2 + 2 + 38
    search.on_trial_result("c", {"epoch": 3, "cost_epochs": 3})
    assert search.committed() == 1 + 1 + 2 + 3 + 37
    search.on_trial_complete("c", {"epoch": 3, "cost_epochs": 3})
    assert search.committed() == 1 + 1 + 2 + 3
    assert search.suggest("d") != "FINISHED"  # 7 committed + 2 for its first rung fit in 10
    search.on_trial_result("d", {"epoch": 1, "cost_epochs": 1})
    assert search.suggest("e") == "FINISHED"  # 9 committed + 2 do not


def test_second_phase_pool_is_ranked_by_rung_hypervolume_gain():
    """At the rung, extremes of the front add little area: the knee-side points rank first
    (the finisher's tie-break order); settled-infeasible trials are never candidates."""
    from sparsecli.tuning.search import Plan, TrialRecord, greedy_hypervolume_order, second_phase_candidates

    points = [(0.9, 0.86), (0.85, 0.92), (0.8, 0.95), (0.7, 0.96)]
    order = greedy_hypervolume_order(points, (0.6, 0.85))
    assert order[0] == max(range(4), key=lambda i: (points[i][0] - 0.6) * (points[i][1] - 0.85))
    assert sorted(order) == [0, 1, 2, 3]

    def record(name, acc, ws):
        row = {"epoch": 2, "accuracy": acc, "weight_sparsity": ws, "cost_epochs": 2}
        return TrialRecord(name, "search", {}, "stopped", row, [row], checkpoint=f"/ckpt/{name}")

    records = [record(f"t{i}", *p) for i, p in enumerate(points)] + [record("low", 0.99, 0.8)]
    plan = Plan(ACC_WS, (), 2, 40, 20, None, 2 * 38 + 10 + sum(2 for _ in records), 0.5, "tpe", 2, True, 0)
    chosen = [r.name for r in second_phase_candidates(records, plan)]
    order = greedy_hypervolume_order(points, (0.7, 0.85))  # the rung's reference: its worst accuracy, the settled threshold
    assert chosen == [f"t{i}" for i in order] and chosen[:2] == ["t1", "t2"]  # 'low' misses the settled threshold


def finisher(pool, full, pairs, budget):
    from sparsecli.tuning.finish import Candidate, FinishSearch

    candidates = [Candidate(name, {"from_trial": name}, 2, vector) for name, vector in pool]
    return FinishSearch(candidates, ACC_WS, 40, budget, full, [(2, r, f) for r, f in pairs])


def test_second_phase_finishes_beyond_the_known_front_not_behind_a_dominant_point(tmp_path):
    """A full-length point (0.975, 0.95) is known. The finisher predicts full-length accuracy
    from the rung (here about +0.025) and first finishes the candidate sparser than the
    front's end (it adds area whenever it meets the accuracy threshold), then the one whose
    predicted accuracy beats the known point most; never one the known point dominates as
    predicted ('behind'); a budget of two finishes ends it."""
    pool = [("dense_good", (0.953, 0.93)), ("behind", (0.945, 0.94)), ("sparse", (0.945, 0.97)),
            ("close", (0.952, 0.948))]
    pairs = [((0.95, 0.90), (0.975, 0.90)), ((0.94, 0.92), (0.965, 0.92)), ((0.96, 0.95), (0.985, 0.95)),
             ((0.955, 0.95), (0.975, 0.95))]
    search = finisher(pool, [(0.975, 0.95)], pairs, budget=2 * 38 + 37)
    assert search.suggest("a") == {"from_trial": "sparse"}
    assert search.suggest("b") == {"from_trial": "dense_good"}  # the believed 'sparse' point does not shadow it
    assert search.suggest("c") == "FINISHED"  # 37 epochs left: no finish of 38 fits
    # a full-length result joins the known front and the predictor's pairs; saved and restored with Ray's experiment
    search.on_trial_complete("a", {"epoch": 40, "accuracy": 0.97, "weight_sparsity": 0.97})
    assert (0.97, 0.97) in search.full and len(search.pairs) == 5 and "a" not in search.running
    search.save(str(tmp_path / "finish.pkl"))
    again = finisher([], [], [], budget=0)
    again.restore(str(tmp_path / "finish.pkl"))
    assert again.full == search.full and [c.name for c in again.pool] == ["behind", "close"]


def test_second_phase_without_budget_finishes_every_candidate_once():
    search = finisher([("x", (0.95, 0.9)), ("y", (0.96, 0.88))], [], [], budget=None)
    picks = [search.suggest(t) for t in "abc"]
    assert sorted(p["from_trial"] for p in picks[:2]) == ["x", "y"] and picks[2] == "FINISHED"


def test_hardware_objectives_constraints_nadir_reference_and_min_latency():
    """fits is a requirement, not a coordinate; a min hardware objective without threshold is referenced
    at the worst point; min_latency picks the lowest latency (ties: the more accurate)."""
    objectives = Objectives.from_params([
        TuneObjective(metric="accuracy", threshold=0.9),
        TuneObjective(metric="fits", target="fpga-pynq-z2"),
        TuneObjective(metric="latency_us", target="fpga-pynq-z2"),
    ], frozenset({"weight_sparsity", "activation_sparsity"}))  # kWTA everywhere
    assert objectives.metrics == ("accuracy", "latency_us:fpga-pynq-z2") and objectives.modes == ("max", "min")
    assert objectives.requirements == ("fits:fpga-pynq-z2",) and objectives.missing_reference() is None
    fast = {"accuracy": 0.92, "latency_us:fpga-pynq-z2": 0.5, "fits:fpga-pynq-z2": 1.0, "weight_sparsity": 0.9}
    slow = {"accuracy": 0.95, "latency_us:fpga-pynq-z2": 2.0, "fits:fpga-pynq-z2": 1.0, "weight_sparsity": 0.9}
    tie = {**slow, "latency_us:fpga-pynq-z2": 0.5, "accuracy": 0.93}
    assert objectives.vector(fast) == (0.92, -0.5)
    assert objectives.feasible(fast) and not objectives.feasible({**fast, "fits:fpga-pynq-z2": 0.0})
    assert objectives.feasible({**fast, "fits:fpga-pynq-z2": 0.0, "accuracy": 0.95}, final=False) is False  # settled
    points = [objectives.vector(r) for r in (fast, slow)]
    assert objectives.reference(points) == (0.9, -2.0)
    with pytest.raises(ValueError):
        objectives.reference()
    assert select([fast, slow, tie], objectives, "min_latency") == 2
    relu = Objectives.from_params([TuneObjective(metric="accuracy"), TuneObjective(metric="fits", target="x"),
                                   TuneObjective(metric="latency_us", target="x", threshold=1.0)])
    assert relu.constraints({**fast, "fits:x": 0.0, "latency_us:x": 3.0}, final=False) == {}  # ReLU: not settled


def test_kwta_activation_sparsity_is_settled_after_one_epoch(trained_dir, tiny_params):
    """Under kWTA (every hidden layer), the measured activation sparsity is the same before
    training, after one epoch and after several, with boosting and k_inference_factor: a rung can
    judge its threshold. A ReLU layer, or a searched key that could make one, unsettles it."""
    from sparsecli.models import build_model
    from sparsecli.sparse.stats import activity
    from sparsecli.training import fit, read_splits
    from sparsecli.tune_metrics import settled
    from sparsecli.tuning.space import trial_params

    splits, meta = read_splits(trained_dir)
    base = tiny_params.model_dump()
    params = trial_params(base, {"model.layers.0.kwta.k_inference_factor": 1.5,
                                 "model.layers.0.kwta.boost_strength": 2.5, "train.epochs": 3})
    assert all(layer.kwta is not None for layer in params.model.layers)
    model = build_model(params, meta)
    measured = [activity(model, splits["val"].x)["activation_sparsity"]]
    fit(model, params.train, splits, seed=0, epochs=3,
        on_epoch=lambda record, state: measured.append(activity(model, splits["val"].x)["activation_sparsity"]))
    assert len(measured) == 4 and len(set(measured)) == 1, measured
    assert "activation_sparsity" in settled(params.model, ["model.layers.0.kwta.percent_on"])
    assert "activation_sparsity" not in settled(params.model, ["model.layers.0.kwta"])  # may become ReLU
    relu = trial_params(base, {"model.layers.0.kwta": None})
    assert settled(relu.model) == {"weight_sparsity"}
    threshold = [TuneObjective(metric="activation_sparsity", threshold=0.99)]
    short = {"activation_sparsity": 0.9}
    assert not Objectives.from_params(threshold, settled(params.model)).feasible(short, final=False)  # ruled out at a rung
    assert Objectives.from_params(threshold, settled(relu.model)).feasible(short, final=False)  # ReLU: may still get there


def test_a_resumed_trials_repeated_epochs_count_once_in_its_history():
    """Ray keeps a trial's last few checkpoints (not only the newest), so a trial resumed after an
    interruption may repeat an epoch or two; its history has one row per epoch."""
    from types import SimpleNamespace

    import pandas as pd

    from sparsecli.tuning.search import HISTORY_KEYS, Plan, _record

    plan = Plan(ACC_WS, ("x",), 2, 4, 2, None, None, 0.5, "tpe", 2, False, 0)
    rows = [{**dict.fromkeys(HISTORY_KEYS, 0.5), "epoch": e, "accuracy": 0.9 + e / 100, "cost_epochs": c}
            for e, c in ((1, 1), (2, 2), (3, 3), (2, 2), (3, 3), (4, 4))]
    result = SimpleNamespace(metrics_dataframe=pd.DataFrame(rows), metrics=rows[-1], config={"x": 0.5}, error=None,
                             path="/ray/search/search_007", checkpoint=None)
    record = _record(result, "search", plan)
    assert [row["epoch"] for row in record.history] == [1, 2, 3, 4] and record.status == "full"


def test_cheap_phase_keeps_back_only_what_finishing_its_feasible_stopped_trials_takes():
    """The second phase finishes stopped trials feasible so far; where none are, the cheap phase
    samples on rather than leave that share of the budget unspent."""
    from optuna.distributions import FloatDistribution

    from sparsecli.tuning.searcher import FidelitySearch

    def drawn(weight_sparsity: float) -> int:
        search = FidelitySearch({"x": FloatDistribution(0, 1)}, ACC_WS, [2, 40], "random", 0, 2, budget_epochs=100,
                                finishes=2, finish_epochs=38)
        for n in itertools.count():
            if search.suggest(f"t{n}") == "FINISHED":
                return n
            search.on_trial_complete(f"t{n}", {"epoch": 2, "accuracy": 0.9, "weight_sparsity": weight_sparsity,
                                               "cost_epochs": 2})

    assert drawn(0.9) == 12  # 2 x 12 + 2 for one more + 2 x 38 to finish two would pass 100
    assert drawn(0.8) == 50  # below the settled threshold: none to finish, so all 100 go to sampling
