"""Bad tune params fail in the CLI with one line and a non-zero exit, before Ray starts."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import snapshot
from sparsecli.cli import app

runner = CliRunner()

BAD = [
    (["tune.objectives=[{metric: latency, threshold: 1.0}]"], 2,
     "params.yaml: tune.objectives.0.metric = 'latency': must be one of: accuracy, weight_sparsity, activation_sparsity, mac_reduction"),
    (["tune.objectives.1.threshold=1.5"], 2,
     "params.yaml: tune.objectives.1.threshold = 1.5: weight_sparsity thresholds must be in [0, 1]"),
    (["tune.max_epochs=2", "tune.min_epochs=3"], 2, "params.yaml: tune.min_epochs = 3: must be <= tune.max_epochs (2)"),
    (["tune.min_epochs=4"], 2,
     "params.yaml: tune.min_epochs = 4: must be <= the full training, train.epochs (3), or set tune.max_epochs"),
    (["tune.space.0.key=train.lrr"], 2, "tune.space.0.key = 'train.lrr': unknown key; allowed keys in train: optimizer, lr,"),
    (["tune.space.0.key=model.layers.1.units"], 2,
     "tune.space.0.key = 'model.layers.1.units': model.layers.1: index out of range; model.layers has 1 items (0..0)"),
    (["tune.space.0.key=data.val_fraction"], 2, "tune.space.0.key = 'data.val_fraction': only model.*, sparsity.*, train.* keys can be searched"),
    (["tune.space.0.key=train.epochs"], 2, "tune.space.0.key = 'train.epochs': epochs are the fidelity"),
    (["tune.space=[]"], 2, "tune.space: empty; add at least one entry"),
    (["tune.space.1.high=1.5"], 2,
     "tune.space.1.high = 1.5: impossible: model.layers.0.weights.sparsity = 1.5: must be in [0, 1)"),
    (["tune.space.1.low=0.9", "tune.space.1.high=0.995"], 2,
     "tune.space.1.high = 0.995: impossible: model.layers.0.weights.sparsity = 0.995: leaves"),
    (["tune.space.0.dist=int"], 2, "params.yaml: tune.space.0.low = 0.03: int needs whole numbers"),
    (["tune.objectives.1={metric: mac_reduction, mode: min}"], 2,
     "tune.objectives.1.threshold = null: a min objective needs a threshold"),
    (["train.early_stopping=2"], 2, "train.early_stopping = 2: trials must run exactly the epochs"),
    (["tune.budget.trials=null", "tune.budget.full_trainings=null"], 2,
     "params.yaml: tune.budget.trials = null: needs a budget: set tune.budget.full_trainings"),
    (["tune.budget.search_fraction=0"], 2, "params.yaml: tune.budget.search_fraction = 0: must be in (0, 1]"),
]


@pytest.mark.parametrize("sets, code, message", BAD, ids=[b[0][-1] for b in BAD])
def test_bad_tune_params_one_line_and_nothing_written(project, monkeypatch, sets, code, message):
    monkeypatch.chdir(project)
    before = snapshot(project)
    args = ["tune"] + [arg for s in sets for arg in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert snapshot(project) == before
    assert not (project / ".ray").exists() and not (project / "tune").exists()


def test_resume_without_a_run_is_an_error(project, monkeypatch):
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["tune", "--resume"])
    assert result.exit_code == 1
    assert result.output == "error: tune/ray: no tuning run to resume; run `sparsecli tune` without --resume\n"


def test_bad_params_never_import_ray(project):
    """Validation happens before Ray is even imported, so no Ray process can have started."""
    code = (
        "import sys; from sparsecli.cli import app\n"
        "for sets in " + repr([sets for sets, _, _ in BAD]) + ":\n"
        "    try: app(['tune'] + [a for s in sets for a in ('--set', s)])\n"
        "    except SystemExit as e: assert e.code == 2, (sets, e.code)\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
