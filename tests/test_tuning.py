"""The tuning library without Ray: objectives, Pareto front, hypervolume, selection, rungs, searcher."""

import itertools
import math
import random

import pytest

from sparsecli.params import TUNE_METRICS, TuneObjective
from sparsecli.tuning.objectives import METRICS, Objectives
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


def test_metric_registries_agree():
    assert set(METRICS) == set(TUNE_METRICS)


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


def test_selection_rules():
    front = [{"accuracy": 0.99, "weight_sparsity": 0.86}, {"accuracy": 0.97, "weight_sparsity": 0.93},
             {"accuracy": 0.95, "weight_sparsity": 0.97}]
    assert select(front, ACC_WS, "max_accuracy") == 0
    assert select(front, ACC_WS, "max_sparsity") == 2
    assert select(front, ACC_WS, "knee") == 1
    assert knee([(1.0, 0.0)]) == 0
    # the knee is the point nearest the ideal after min-max normalisation, by brute force
    rng = random.Random(3)
    for _ in range(20):
        points = [(rng.random(), rng.random(), rng.random()) for _ in range(6)]
        lo = [min(p[k] for p in points) for k in range(3)]
        hi = [max(p[k] for p in points) for k in range(3)]
        dist = [math.dist([(p[k] - lo[k]) / (hi[k] - lo[k]) for k in range(3)], [1, 1, 1]) for p in points]
        assert knee(points) == dist.index(min(dist))


def test_searcher_tells_optuna_only_full_fidelity_results_as_complete():
    """Low-fidelity results are PRUNED (no values), full ones COMPLETE with constraints, errors FAIL."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from sparsecli.tuning.searcher import FidelitySearch, make_sampler

    search = FidelitySearch({"train.lr": FloatDistribution(0.001, 0.1, log=True)}, ACC_WS, 9,
                            make_sampler("tpe", 0, 4), budget_epochs=30)
    for trial_id in "abcd":
        assert 0.001 <= search.suggest(trial_id)["train.lr"] <= 0.1
    search.on_trial_result("a", {"epoch": 3, "accuracy": 0.99, "weight_sparsity": 0.9, "cost_epochs": 3})
    search.on_trial_complete("a", {"epoch": 3, "accuracy": 0.99, "weight_sparsity": 0.9, "cost_epochs": 3})
    search.on_trial_complete("b", {"epoch": 9, "accuracy": 0.93, "weight_sparsity": 0.9, "cost_epochs": 9})
    search.on_trial_complete("c", None, error=True)
    search.on_trial_complete("d", {"epoch": 2, "diverged": "loss became nan", "cost_epochs": 2})
    trials = search._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].values is None
    assert trials[0].constraints == pytest.approx({"weight_sparsity": -0.05 / 0.85})  # no low-fidelity accuracy
    assert trials[1].values == [0.93, 0.9]
    assert trials[1].constraints == pytest.approx({"accuracy": 0.01 / 0.94, "weight_sparsity": -0.05 / 0.85})
    for trial_id, spent in (("b", 9), ("c", 10), ("d", 8)):
        search.on_trial_result(trial_id, {"cost_epochs": spent})
    assert search.suggest("e") == "FINISHED"  # 3 + 9 + 10 + 8 = 30 epochs: the budget is spent


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
