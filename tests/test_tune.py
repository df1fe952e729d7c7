"""`sparsecli tune` on a real Ray cluster: outputs, the Pareto front, train overlay, interrupt and resume.

One local cluster for the module, started as a user would (`ray start --head --block` on
127.0.0.1 with a free port) and stopped through that command's own shutdown (SIGTERM to
the `ray start` process, which drains and stops the processes it started). `ray stop`
would also stop every other Ray process on the machine, which a shared test machine
must not do.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import ASSETS
from sparsecli.cli import app

runner = CliRunner()
TRIAL_LINE = re.compile(r"^tune: \[\s*\d+/\d+\] (search_\d+) ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    import psutil

    temp = Path(tempfile.mkdtemp(prefix="rt"))  # short: Ray's socket paths must stay < 108 characters
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(temp / "start.log", "w")
    proc = subprocess.Popen(
        # `ray start` run by this interpreter (a venv's, where sparsecli is installed): the cluster's
        # workers use the raylet's Python, and a `ray` script found on PATH may be another one's
        [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()",
         "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--temp-dir", str(temp), "--include-dashboard", "false",
         "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while "Ray runtime started" not in (temp / "start.log").read_text():
        assert proc.poll() is None and time.time() < deadline, (temp / "start.log").read_text()
        time.sleep(0.5)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=90)
    log.close()
    leftover = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
    for p in leftover:
        p.kill()
    shutil.rmtree(temp, ignore_errors=True)
    assert not leftover, f"processes of the test cluster survived its shutdown: {leftover}"


def make_project(root: Path, trained_dir: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained_dir / "data", root / "data")
    shutil.copy(ASSETS / "tune_params.yaml", root / "params.yaml")
    return root


@pytest.fixture(scope="module")
def tuned(ray_cluster, trained_dir, tmp_path_factory):
    """The acceptance problem: digits, accuracy >= 0.94 and weight sparsity >= 0.85, one worker (deterministic)."""
    project = make_project(tmp_path_factory.mktemp("tuned") / "p", trained_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        result = runner.invoke(app, ["tune", "--address", ray_cluster, "--workers", "1"])
    assert result.exit_code == 0, result.output
    return project, result.output


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def vec(row: dict) -> tuple[float, float]:
    return float(row["accuracy"]), float(row["weight_sparsity"])


def test_progress_is_one_line_per_trial_with_a_live_count(tuned):
    _, output = tuned
    lines = output.strip().splitlines()
    trial_lines = [line for line in lines if TRIAL_LINE.match(line)]
    assert len(trial_lines) == 10
    assert [int(re.search(r"\[\s*(\d+)/10\]", line).group(1)) for line in trial_lines] == list(range(1, 11))
    assert any("failed: diverged: loss became" in line for line in trial_lines)
    assert lines[-1].startswith("tune: done. front_size")
    assert not any("Trial status" in line or "╭" in line or "INFO" in line for line in lines)


def test_front_is_feasible_full_fidelity_and_non_dominated(tuned):
    project, _ = tuned
    trials = read_csv(project / "tune" / "trials.csv")
    front = read_csv(project / "tune" / "pareto.csv")
    assert len([t for t in trials if t["phase"] == "search"]) == 10
    by_name = {t["trial"]: t for t in trials}
    assert front and all(by_name[f["trial"]]["status"] == "full" for f in front)
    assert all(float(f["accuracy"]) >= 0.94 and float(f["weight_sparsity"]) >= 0.85 for f in front)
    # brute force: the non-dominated subset of every feasible full-fidelity trial
    feasible = [t for t in trials if t["status"] == "full" and vec(t)[0] >= 0.94 and vec(t)[1] >= 0.85]
    expected = {t["trial"] for t in feasible
                if not any(all(a >= b for a, b in zip(vec(o), vec(t))) and vec(o) != vec(t) for o in feasible)}
    assert {f["trial"] for f in front} == expected
    assert {t["trial"] for t in trials if t["on_front"] == "True"} == expected


def test_failed_and_stopped_trials_are_recorded_with_their_cost(tuned):
    project, _ = tuned
    trials = read_csv(project / "tune" / "trials.csv")
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and all(t["error"].startswith("diverged: loss became") and t["train.lr"] == "1000000.0" for t in failed)
    assert all(t["feasible"] == "False" and t["accuracy"] == "" for t in failed)
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped and all(t["epochs"] in ("2", "4", "8") and t["epochs"] == t["cost_epochs"] for t in stopped)
    summary = json.loads((project / "tune" / "summary.json").read_text())
    assert summary["cost_epochs"] == sum(int(t["cost_epochs"]) for t in trials)
    assert summary["cost_full_trainings"] == pytest.approx(summary["cost_epochs"] / 9)
    assert summary["cost_full_trainings"] < 10  # cheaper than training all 10 configurations fully
    assert summary["failed"] == len(failed) and summary["front_size"] == len(read_csv(project / "tune" / "pareto.csv"))
    assert sum(summary["trials_by_epochs"].values()) + summary["failed"] == summary["trials"]
    assert summary["hypervolume_reference"] == {"accuracy": 0.94, "weight_sparsity": 0.85}


def test_best_params_follow_the_knee_rule(tuned):
    project, _ = tuned
    front = read_csv(project / "tune" / "pareto.csv")
    points = [vec(f) for f in front]
    lo = [min(t, *(p[k] for p in points)) for k, t in zip((0, 1), (0.94, 0.85))]  # from the thresholds
    hi = [max(p[k] for p in points) for k in (0, 1)]

    def gap(p, k):
        return 1 - (p[k] - lo[k]) / (hi[k] - lo[k]) if hi[k] > lo[k] else 0.0

    dist = [math.hypot(gap(p, 0), gap(p, 1)) for p in points]
    knee = front[min(range(len(front)), key=lambda i: (dist[i], front[i]["trial"]))]
    assert [f["trial"] for f in front if f["selected"] == "True"] == [knee["trial"]]
    best = yaml.safe_load((project / "tune" / "best_params.yaml").read_text())
    keys = ["train.lr", "model.layers.0.weights.sparsity", "model.layers.1.weights.sparsity"]
    assert list(best) == keys
    assert all(best[k] == pytest.approx(float(knee[k])) for k in keys)


def test_train_reads_best_params_and_reproduces_the_trial(tuned):
    project, _ = tuned
    best = yaml.safe_load((project / "tune" / "best_params.yaml").read_text())
    selected = next(f for f in read_csv(project / "tune" / "pareto.csv") if f["selected"] == "True")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # trials train on one thread each: the same arithmetic, the same result
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(project)
            result = runner.invoke(app, ["train", "--json", "-q", "--set", "train.noise.levels=[0.2]"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["val_accuracy"] == pytest.approx(float(selected["accuracy"]), abs=1e-12)
    assert metrics["weight_sparsity"] == pytest.approx(float(selected["weight_sparsity"]))
    stored = torch.load(project / "models" / "train.pt", weights_only=True)["params"]
    assert stored["train"]["lr"] == best["train.lr"]
    assert stored["model"]["layers"][1]["weights"]["sparsity"] == best["model.layers.1.weights.sparsity"]
    assert stored["train"]["noise"]["levels"] == [0.2]  # --set still applies over the overlay


def test_tensorboard_has_a_run_per_trial_and_an_hparams_table(tuned):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    project, _ = tuned
    trials = read_csv(project / "tune" / "trials.csv")
    runs = project / "runs" / "tune"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == sorted(t["trial"] for t in trials)
    root = EventAccumulator(str(runs))
    root.Reload()
    experiment = plugin_data_pb2.HParamsPluginData.FromString(root.PluginTagToContent("hparams")["_hparams_/experiment"])
    assert {h.name for h in experiment.experiment.hparam_infos} >= {"train.lr", "model.layers.0.weights.sparsity", "phase"}
    assert {m.name.tag for m in experiment.experiment.metric_infos} >= {"accuracy", "weight_sparsity", "cost_epochs"}
    full = next(t for t in trials if t["status"] == "full")
    # a retrained trial's curve continues where the cheap trial it finished stopped
    first = 1 if full["phase"] == "search" else 1 + int(next(t["epochs"] for t in trials if t["trial"] == full["from_trial"]))
    events = EventAccumulator(str(runs / full["trial"]))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/val")] == list(range(first, 10))
    assert events.Scalars("accuracy")[-1].value == pytest.approx(float(full["accuracy"]))
    session = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["train.lr"].number_value == pytest.approx(float(full["train.lr"]))


# Lower thresholds and a wider sparsity range: a real trade-off already at the cheap rung,
# so some stopped trials are feasible and non-dominated there, and the second phase runs.
TRADE_OFF = ["tune.objectives.0.threshold=0.8", "tune.objectives.1.threshold=0.7", "tune.budget.trials=8",
             "tune.space.1.low=0.7", "tune.space.2.low=0.7", "tune.space.1.high=0.97", "tune.space.2.high=0.97"]


def test_a_budget_run_interrupted_between_trials_says_so_instead_of_answering(ray_cluster, trained_dir, tmp_path):
    """With ``trials: null`` nothing counts the configurations, and a Ctrl-C that lands between
    trials leaves none unfinished: the run answered from a cut-short search before."""
    project = make_project(tmp_path / "p", trained_dir)
    sets = [arg for s in [*TRADE_OFF, "tune.budget.trials=null", "tune.budget.full_trainings=6"] for arg in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "sparsecli", "tune", "--address", ray_cluster, "--workers", "1", *sets],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if TRIAL_LINE.match(line):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest
    assert "error: tune interrupted; rerun the same command to resume" in rest
    assert not (project / "tune" / "best_params.yaml").exists()


def test_interrupted_run_resumes_without_rerunning_finished_trials(ray_cluster, trained_dir, tmp_path):
    project = make_project(tmp_path / "p", trained_dir)
    sets = [arg for s in TRADE_OFF for arg in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "sparsecli", "tune", "--address", ray_cluster, "--workers", "1", *sets],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = []
    for line in proc.stdout:
        if TRIAL_LINE.match(line):
            before.append(TRIAL_LINE.match(line).group(1))
            if len(before) == 2:
                proc.send_signal(signal.SIGINT)
                break
    rest = proc.communicate(timeout=120)[0]
    before += [m.group(1) for m in map(TRIAL_LINE.match, rest.splitlines()) if m]
    assert proc.returncode == 130, rest
    assert "error: tune interrupted; rerun the same command to resume" in rest
    assert not (project / "tune" / "best_params.yaml").exists()
    results = {name: (project / "tune" / "ray" / "search" / name / "result.json").read_text() for name in before}

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        resumed = runner.invoke(app, ["tune", "--resume", "--address", ray_cluster, "--workers", "1", *sets])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.startswith("tune: resuming the interrupted run")
    after = [m.group(1) for m in map(TRIAL_LINE.match, resumed.output.splitlines()) if m]
    assert not set(before) & set(after)  # finished trials are not run again ...
    for name, text in results.items():  # ... nor appended to
        assert (project / "tune" / "ray" / "search" / name / "result.json").read_text() == text
    trials = read_csv(project / "tune" / "trials.csv")
    search = [t["trial"] for t in trials if t["phase"] == "search"]
    assert sorted(search) == sorted(set(before) | set(after)) == [f"search_{i:03d}" for i in range(1, 9)]

    # second phase: each retrained trial finished a stopped one, exactly as a full training would have
    retrained = [t for t in trials if t["phase"] == "retrain"]
    assert retrained, "expected the second phase to finish some cheap trials"
    by_name = {t["trial"]: t for t in trials}
    for row in retrained:
        origin = by_name[row["from_trial"]]
        # feasible as far as a short training tells: weight sparsity (settled) meets its threshold
        assert origin["status"] == "stopped" and float(origin["weight_sparsity"]) >= 0.7 and row["status"] == "full"
        assert int(row["cost_epochs"]) == 9 - int(origin["epochs"])
    assert float(retrained[0]["accuracy"]) == pytest.approx(full_training_accuracy(project, retrained[0]), abs=1e-12)


def full_training_accuracy(project: Path, row: dict) -> float:
    """Val accuracy of the row's configuration trained from scratch for 9 epochs on one thread."""
    from sparsecli.models import build_model
    from sparsecli.params import load_params
    from sparsecli.training import fit, read_splits

    keys = ["train.lr", "model.layers.0.weights.sparsity", "model.layers.1.weights.sparsity"]
    params = load_params(project / "params.yaml", overlays=[{k: yaml.safe_load(row[k]) for k in keys}])
    splits, meta = read_splits(project)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        state = fit(build_model(params, meta), params.train, splits, seed=params.seed)
    finally:
        torch.set_num_threads(threads)
    return state.history[-1]["val_accuracy"]


def test_report_shows_the_search_when_tune_has_run(tuned, tmp_path):
    import re
    import shutil

    from sparsecli.params import load_params
    from sparsecli.stages import report

    project = tmp_path / "copy"
    shutil.copytree(tuned[0], project, ignore=shutil.ignore_patterns("ray"))
    result = report.run(load_params(project / "params.yaml"), project)
    assert "tune" in result["sections"]
    html = (project / "reports" / "index.html").read_text()
    tune_html = re.search(r'<section id="tune">(.*?)</section>', html, re.S).group(1)
    assert tune_html.count("data:image/png;base64,") == 2  # the front and the cost per fidelity
    assert "Selected" in tune_html
    # the cost table sums what the trials cost: a second-phase trial pays only the epochs it added
    from sparsecli.report.sections import tune_section
    from sparsecli.stages.report import stage_outputs

    summary = json.loads((project / "tune" / "summary.json").read_text())
    cost = tune_section(stage_outputs(project)).tables[-1]
    assert sum(int(row[2]) for row in cost.rows) == summary["cost_epochs"]
    assert sum(int(row[1]) for row in cost.rows) == summary["trials"]
    # a third objective gets its own view: accuracy against it
    summary["objectives"]["activation_sparsity"] = {"metric": "activation_sparsity", "mode": "max", "threshold": 0.5}
    (project / "tune" / "summary.json").write_text(json.dumps(summary))
    figures = [f.name for f in tune_section(stage_outputs(project)).figures]
    assert figures == ["tune_pareto", "tune_front_activation_sparsity", "tune_cost"]


def _grid_trials(ray_cluster, trained_dir, tmp_path, params, key: str, values: list, full_epochs: int):
    """Every value of ``key`` as one trial of the real trainable on the shared Ray cluster."""
    import ray
    from ray import tune

    from sparsecli.training import read_splits
    from sparsecli.tuning.session import RAY_ENV
    from sparsecli.tuning.trainable import run_trial

    os.environ.update(RAY_ENV)
    splits, meta = read_splits(trained_dir)
    trainable = tune.with_parameters(run_trial, base=params.model_dump(), keys=[key], splits=splits, meta=meta,
                                     full_epochs=full_epochs)
    ray.init(address=ray_cluster, log_to_driver=False)
    try:
        return tune.Tuner(trainable, param_space={key: tune.grid_search(values)},
                          tune_config=tune.TuneConfig(max_concurrent_trials=2),
                          run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()


def test_trials_apply_dynamic_sparsity_and_report_every_metric(ray_cluster, trained_dir, tmp_path):
    """`sparsity.*` in the space reaches the trial: SET moves the masks, so results change (as in `train`)."""
    from sparsecli.params import load_params
    from sparsecli.tune_metrics import NAMES

    params = load_params(ASSETS / "tune_params.yaml", ["sparsity.dynamic.update_interval=5",
                                                      "sparsity.dynamic.drop_fraction=0.5"])
    key = "sparsity.dynamic.method"
    results = _grid_trials(ray_cluster, trained_dir, tmp_path, params, key, ["none", "set"], 3)
    by_method = {r.config[key]: r.metrics for r in results}
    assert all(set(NAMES) <= set(m) for m in by_method.values())
    assert by_method["none"]["epoch"] == by_method["set"]["epoch"] == 3
    assert by_method["none"]["accuracy"] != by_method["set"]["accuracy"] or \
        by_method["none"]["val_loss"] != by_method["set"]["val_loss"]
    # SET drops and regrows as many weights as it removes: the sparsity stays, the masks move
    assert by_method["set"]["weight_sparsity"] == pytest.approx(by_method["none"]["weight_sparsity"], abs=1e-3)


def test_short_trials_are_provisional_never_feasible(tuned):
    """Only a full-fidelity result is judged feasible; short of it, `provisional` (or False when a
    settled metric misses its threshold: it never will meet it)."""
    project, _ = tuned
    trials = read_csv(project / "tune" / "trials.csv")
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped and all(t["feasible"] in ("provisional", "False") for t in stopped)
    for t in stopped:
        assert (t["feasible"] == "provisional") == (float(t["weight_sparsity"]) >= 0.85)
    assert all(t["feasible"] in ("True", "False") for t in trials if t["status"] == "full")


def test_trials_train_a_searched_weight_structure(ray_cluster, trained_dir, tmp_path):
    """A `choice` over `model.layers.N.weights.structure` reaches the trial: its checkpoint's mask has that shape."""
    from sparsecli.params import load_params
    from sparsecli.sparse.patterns import as_matrix
    from sparsecli.tuning.trainable import CHECKPOINT_FILE

    key = "model.layers.0.weights.structure"
    results = _grid_trials(ray_cluster, trained_dir, tmp_path, load_params(ASSETS / "tune_params.yaml"), key,
                           ["unstructured", "16x1"], 1)
    for result in results:
        state = torch.load(Path(result.checkpoint.path) / CHECKPOINT_FILE, weights_only=True)["model"]
        filled = as_matrix(state["layers.0.weights.mask"]).reshape(8, 16, 64).sum(dim=1)  # 128 units x 64 inputs
        whole = bool(((filled == 0) | (filled == 16)).all())
        assert whole == (result.config[key] == "16x1"), result.config
        assert result.metrics["weight_sparsity"] > 0.85
