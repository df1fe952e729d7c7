"""Hardware objectives in ``tune.objectives``: bad ones fail before Ray starts, trials are costed by
hardware-map's own functions, and the selected trial's figures are the ones hardware-map then predicts."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, snapshot
from sparsecli.cli import app

runner = CliRunner()
LATENCY = "latency_us:fpga-zu3eg"


def hardware_project(project: Path) -> Path:
    shutil.copytree(ROOT / "hardware", project / "hardware", ignore=shutil.ignore_patterns("measured"))
    return project


def tiny_target(hardware: Path) -> None:
    """A ZU3EG with 400 LUTs: one layer's control logic (500 LUTs) already exceeds it."""
    text = (hardware / "fpga-zu3eg.yaml").read_text().replace("name: fpga-zu3eg", "name: fpga-tiny")
    (hardware / "fpga-tiny.yaml").write_text(text.replace("lut: 70560 ", "lut: 400 "))


BAD = [
    ("{metric: latency_us, target: fpga-nope}",
     "error: tune.objectives.1.target = 'fpga-nope': no hardware/fpga-nope.yaml; available: cpu-avx2, cpu-avx512"),
    ("{metric: latency_us, target: cpu-local, precision: int8}",
     "error: tune.objectives.1.precision = 'int8': cpu-local supports fp32 (see hardware/cpu-local.yaml)"),
    ("{metric: energy_uj, target: fpga-zu3eg, precision: fp32}",
     "error: tune.objectives.1.precision = 'fp32': fpga-zu3eg supports int8, int16, fixed16"),
    ("{metric: fits, target: fpga-zu3eg, mode: max}",
     "error: params.yaml: tune.objectives.1.mode = 'max': fits is a constraint only (1 = fits): remove mode"),
    ("{metric: fits, target: fpga-zu3eg, threshold: 1}",
     "error: params.yaml: tune.objectives.1.threshold = 1: fits is a constraint only"),
    ("{metric: cpu_latency_us, target: fpga-zu3eg}",
     "error: tune.objectives.1.target = 'fpga-zu3eg': cpu_latency_us is measured on this machine's CPU"),
    ("{metric: latency_us, target: fpga-zu3eg, execution: sparse}",
     "error: params.yaml: tune.objectives.1.execution = 'sparse': must be one of: dense, sparse-dense, sparse-sparse"),
    ("{metric: accuracy, target: fpga-zu3eg}",
     "error: params.yaml: tune.objectives.1.target = 'fpga-zu3eg': accuracy is not a hardware metric; remove target"),
    ("{metric: latency_us}",
     "error: params.yaml: tune.objectives.1.target = null: latency_us is computed on a target"),
]


@pytest.mark.parametrize("objective, message", BAD, ids=[b[0] for b in BAD])
def test_bad_hardware_objectives_are_one_line_errors_before_ray(project, monkeypatch, objective, message):
    hardware_project(project)
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["tune", "--set", f"tune.objectives.1={objective}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert snapshot(project) == before and not (project / "tune").exists()


def test_a_structure_search_stays_within_the_targets_structures(project, monkeypatch):
    hardware_project(project)
    monkeypatch.chdir(project)
    space = "[{key: model.layers.0.weights.structure, dist: choice, values: [unstructured, '2:4']}]"
    result = runner.invoke(app, ["tune", "--set", "tune.objectives.1={metric: latency_us, target: cpu-avx2}",
                                 "--set", f"tune.space={space}", "--set", "model.layers.0.weights.sparsity=0.5"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: tune.space.0.values = ['unstructured', '2:4']: cpu-avx2 executes the "
                                    "structures unstructured, 16x1"), result.output
    assert not (project / "tune").exists()


def test_the_cpu_engine_needs_kwta_in_every_hidden_layer(project, monkeypatch):
    """An execution the target cannot do: the sparse CPU engine has no kernel after a ReLU layer."""
    hardware_project(project)
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["tune", "--set", "tune.objectives.1={metric: cpu_latency_us, target: cpu-local}",
                                 "--set", "model.layers.0.kwta=null"])
    assert result.exit_code == 2, result.output
    assert result.output == ("error: tune.objectives.1.execution = 'sparse-sparse': the CPU engine of cpu_latency_us "
                             "runs networks with kWTA in every hidden layer, model.layers.0 has none (ReLU); give it a "
                             "kwta block or use latency_us on cpu-local (a prediction)\n")


def test_a_trials_figures_come_from_hardware_maps_functions(trained_dir, tiny_params, tmp_path):
    """``measure`` is ``network_from_model`` + ``predict`` on the val split; a design that does not fit has
    no latency; cpu_latency_us is the engine's median time, checked against dense torch."""
    from sparsecli import checkpoint
    from sparsecli.params import set_key, validate
    from sparsecli.targets import network_from_model, predict
    from sparsecli.training import read_splits
    from sparsecli.tuning.hardware import measure, resolve

    hardware = hardware_project(tmp_path) / "hardware"
    tiny_target(hardware)
    raw = tiny_params.model_dump()
    set_key(raw, "tune.objectives", [
        {"metric": "latency_us", "target": "fpga-zu3eg"},
        {"metric": "energy_uj", "target": "fpga-zu3eg", "execution": "dense", "batch": 8, "name": "dense_energy"},
        {"metric": "throughput_ips", "target": "cpu-avx2", "mode": "max"},
        {"metric": "fits", "target": "fpga-tiny"},
        {"metric": "latency_us", "target": "fpga-tiny", "name": "tiny_latency"},
        {"metric": "cpu_latency_us", "target": "cpu-local"},
        {"metric": "accuracy", "threshold": 0.1},
    ], "test")
    params = validate(raw, "test")
    objectives = resolve(params, hardware)
    model, _, _ = checkpoint.load(trained_dir / "models" / "train.pt")
    val = read_splits(trained_dir)[0]["val"]
    got = measure(model, val.x, objectives)
    network = network_from_model(model, val.x, quantile=params.hardware_map.active_quantile)
    by_name = {o.name: o for o in objectives}
    zu3eg = predict(network, by_name[LATENCY].target, ("sparse-sparse",), (1,), "fixed16")
    assert got[LATENCY] == zu3eg["modes"]["sparse-sparse"]["1"]["totals"]["latency_s"] * 1e6 > 0
    dense = predict(network, by_name["dense_energy"].target, ("dense",), (8,), "fixed16")
    assert got["dense_energy"] == dense["modes"]["dense"]["8"]["totals"]["energy_j"] * 1e6
    avx2 = predict(network, by_name["throughput_ips:cpu-avx2"].target, ("sparse-sparse",), (1,), "fp32")
    assert got["throughput_ips:cpu-avx2"] == avx2["modes"]["sparse-sparse"]["1"]["totals"]["throughput_ips"]
    assert got["fits:fpga-tiny"] == 0.0 and got["tiny_latency"] == math.inf
    assert 0 < got["cpu_latency_us:cpu-local"] < 1e5
    assert set(got) == {o.name for o in objectives}


# ---------------------------------------------------------------- acceptance: a smoke project, end to end


@pytest.fixture(scope="module")
def smoke_latency(tmp_path_factory):
    """`sparsecli init X --pipeline smoke`, objectives accuracy >= 0.5 and min latency_us on fpga-zu3eg
    (sparse-sparse, batch 1), then data, tune, train and hardware-map, as a user runs them."""
    import yaml

    project = tmp_path_factory.mktemp("hw") / "X"
    assert runner.invoke(app, ["init", str(project), "--pipeline", "smoke"]).exit_code == 0
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["tune"]["objectives"] = [
        {"metric": "accuracy", "mode": "max", "threshold": 0.5},
        {"metric": "latency_us", "mode": "min", "target": "fpga-zu3eg", "execution": "sparse-sparse", "batch": 1},
    ]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for command in (["data"], ["tune"], ["train"], ["hardware-map"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, (command, result.output)
    return project


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_trials_have_a_positive_latency_column(smoke_latency):
    trials = rows(smoke_latency / "tune" / "trials.csv")
    assert trials and LATENCY in trials[0]
    assert all(float(t[LATENCY]) > 0 for t in trials if t["status"] != "failed")
    summary = json.loads((smoke_latency / "tune" / "summary.json").read_text())
    assert set(summary["selected"]) == {"accuracy", LATENCY}


def test_the_front_is_non_dominated_on_accuracy_and_latency(smoke_latency):
    def point(row):
        return float(row["accuracy"]), -float(row[LATENCY])

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and a != b

    front = [point(r) for r in rows(smoke_latency / "tune" / "pareto.csv")]
    feasible = [point(r) for r in rows(smoke_latency / "tune" / "trials.csv") if r["feasible"] == "True"]
    assert front and all(not dominates(q, p) for p in front for q in feasible)


def test_the_selected_trials_latency_is_what_hardware_map_predicts(smoke_latency):
    """The same number everywhere: they differ only by the val vs the test split's activation density."""
    selected = next(r for r in rows(smoke_latency / "tune" / "pareto.csv") if r["selected"] == "True")
    mapped = json.loads((smoke_latency / "metrics" / "hardware_map.json").read_text())
    predicted = mapped["targets"]["fpga-zu3eg"]["batch_1"]["sparse-sparse"]["latency_s"] * 1e6
    assert float(selected[LATENCY]) == pytest.approx(predicted, rel=0.10)


def test_fits_on_a_target_too_small_for_any_configuration_fails_naming_it(project, monkeypatch):
    """Before Ray starts: the sparsest configuration of the network (``check_fits_possible``) does not fit."""
    tiny_target(hardware_project(project) / "hardware")
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["tune", "--set", "tune.objectives.1={metric: fits, target: fpga-tiny}"])
    assert result.exit_code == 2, result.output
    assert result.output == ("error: tune.objectives.1 (fits:fpga-tiny): no configuration fits on fpga-tiny: even the "
                             "sparsest network of this architecture (one weight per layer) exceeds its lut (see "
                             "hardware/fpga-tiny.yaml); pick a larger target, or fewer layers\n")
    assert snapshot(project) == before


def test_when_no_trial_fits_the_run_fails_naming_the_constraint():
    """A target some configuration could fit, but no trial did: the analysis names the constraint."""
    from sparsecli.errors import SparsecliError
    from sparsecli.params import TuneObjective
    from sparsecli.tuning.analysis import analyse
    from sparsecli.tuning.objectives import Objectives
    from sparsecli.tuning.search import Plan, TrialRecord

    objectives = Objectives.from_params([TuneObjective(metric="accuracy", threshold=0.5),
                                         TuneObjective(metric="fits", target="fpga-pynq-z2")])
    plan = Plan(objectives, ("train.lr",), 1, 3, 3, 2, None, 0.5, "tpe", 2, False, 0)
    records = [TrialRecord(f"search_00{i}", "search", {"train.lr": 0.1}, "full",
                           {"epoch": 3, "accuracy": 0.9, "fits:fpga-pynq-z2": 0.0}) for i in (1, 2)]
    with pytest.raises(SparsecliError, match=r"^tune: constraint fits:fpga-pynq-z2 \(tune.objectives\): the network "
                                             r"of none of the 2 trials fits on fpga-pynq-z2"):
        analyse(records, plan, "max_accuracy", "tune/ray")


def test_cpu_latency_agrees_with_the_benchmark_stage(pipeline_dir, tiny_params):
    """cpu_latency_us times the engine ``sparsecli benchmark`` times (sparse-sparse, batch 1, 1 thread), on
    the val split where the stage uses the test split: within 1.5x of the stage's timing of the same model,
    the two taken in turns (best of three each), so the machine's load is the same for both."""
    from sparsecli import checkpoint
    from sparsecli.kernels.from_model import model_network
    from sparsecli.kernels.measure import INNER, bench_network, tile_batch
    from sparsecli.kernels.timing import threads_restored
    from sparsecli.params import set_key, validate
    from sparsecli.training import read_splits
    from sparsecli.tuning.hardware import measure, resolve

    raw = tiny_params.model_dump()
    set_key(raw, "tune.objectives.1", {"metric": "cpu_latency_us", "target": "cpu-local"}, "test")
    objectives = resolve(validate(raw, "test"), pipeline_dir / "hardware")
    model, _, _ = checkpoint.load(pipeline_dir / "models" / "pruned.pt")
    splits = read_splits(pipeline_dir)[0]
    test_x = splits["test"].x.numpy().reshape(len(splits["test"].x), -1)
    stage_like, got = [], []
    for _ in range(3):
        got.append(measure(model, splits["val"].x, objectives)["cpu_latency_us:cpu-local"])
        with threads_restored():  # as stages/benchmark.py times the pipeline model
            timed = bench_network(model_network(model), tile_batch(test_x, 1), 1, tiny_params.benchmark.repeats,
                                  INNER[1], [])
        stage_like.append(timed["times"]["sparse-sparse"].median_s * 1e6)
    got, measured = min(got), min(stage_like)
    assert measured / 1.5 <= got <= measured * 1.5, (got, measured)
