"""Every shipped template runs end to end: `sparsecli init X --pipeline NAME`, its tiny overlay, `dvc repro`.

A template NAME has a tiny-settings overlay ``tests/assets/template_overlays/NAME.yaml`` (dotted key ->
value, the `dvc exp run -S` syntax) applied onto the copied params.yaml before `dvc repro`. A template
whose end-to-end run is tested in another file is listed in COVERED_ELSEWHERE with that file (which
must use its overlay); a template that needs input data gets a SETUP step that writes it (``template_run.SETUP``); the
templates are built in the background from the session's start (conftest, ``template`` marker).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from conftest import OVERLAYS, ROOT
from sparsecli import scaffold
from sparsecli.cli import app
from template_run import ENV, built

# template -> the test file that runs it end to end (and applies its overlay)
COVERED_ELSEWHERE = {
    "default": "tests/test_dvc.py",  # the root dvc.yaml (= the template's plus code deps) on the root params.yaml
    "paper": "tests/test_paper.py",  # its own pipeline (networks x seeds, then the aggregate)
    "speech": "tests/test_speech.py",  # on WAV files the test writes
}


def here() -> list:
    """The templates run here, each marked to be built in the background (conftest)."""
    return [pytest.param(name, marks=pytest.mark.template(name)) for name in scaffold.templates()
            if name not in COVERED_ELSEWHERE]


def test_every_template_has_an_overlay_and_an_end_to_end_test():
    names = set(scaffold.templates())
    assert {"default", "smoke", "mnist", "gsc-head"} <= names
    assert {p.stem for p in OVERLAYS.glob("*.yaml")} == names
    for name, test_file in COVERED_ELSEWHERE.items():
        assert name in names
        text = (ROOT / test_file).read_text().replace('"', "'")
        # it applies the overlay itself, or through template_run.init_template (which does)
        assert f"template_overlay({name!r})" in text or f"init_template({name!r}" in text, test_file


@pytest.mark.parametrize("name", here())
def test_template_runs_end_to_end(name, template_builds):
    project, run = built(template_builds, name)
    for path in ("params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", "README.md", ".git", "hardware/cpu-local.yaml"):
        assert (project / path).exists(), path
    assert "analytics = false" in (project / ".dvc" / "config").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("data", "tune", "train", "prune", "hardware-map", "benchmark", "report"):
        assert f"Running stage '{stage}'" in run.stdout, stage
    train = json.loads((project / "metrics" / "train.json").read_text())
    assert 0 < train["weight_sparsity"] < 1 and train["test_accuracy"] > 0
    assert "data:image/png;base64," in (project / "reports" / "index.html").read_text()
    if name == "mnist":  # the CNN pipeline model is benchmarked, checked, and sparse-sparse beats dense
        entry = json.loads((project / "metrics" / "benchmark.json").read_text())["networks"]["pipeline model"]
        assert entry["network"] == "cnn" and "skipped" not in entry
        ends = [r for r in entry["rows"] if r["stage"].startswith("end-to-end")]
        assert ends and all(r["speedup"]["sparse-sparse"] for r in ends), ends  # every check passed (ties too)
        assert all(r["speedup"]["sparse-sparse"] > 1 for r in ends if r["batch"] == 1), ends
    status = subprocess.run(["dvc", "status"], cwd=project, capture_output=True, text=True, env=ENV)
    assert "up to date" in status.stdout, status.stdout


def test_init_force_keeps_the_users_files(tmp_path):
    target = tmp_path / "exp"
    target.mkdir()
    (target / "params.yaml").write_text("# mine\n")
    result = CliRunner().invoke(app, ["init", str(target), "--pipeline", "smoke", "--force"])
    assert result.exit_code == 0 and "kept existing: params.yaml" in result.output
    assert (target / "params.yaml").read_text() == "# mine\n" and (target / "dvc.yaml").is_file()


@pytest.mark.template("smoke")
def test_compare_shows_every_stage_and_marks_pareto_experiments(template_builds, monkeypatch):
    """Experiments that change only prune: their rows differ in prune's metrics, not train's."""
    project, run = built(template_builds, "smoke")
    assert run.returncode == 0
    for args in (["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=project, check=True, env=ENV)
    for name, sparsity in (("p50", 0.5), ("p90", 0.9)):
        out = subprocess.run(["dvc", "exp", "run", "-n", name, "-S", f"prune.sparsity={sparsity}"], cwd=project,
                             capture_output=True, text=True, env=ENV)
        assert out.returncode == 0 and "Running stage 'train'" not in out.stdout, out.stdout + out.stderr
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["report", "--compare", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    headers, rows = table["headers"], {row[0]: row for row in table["rows"]}
    assert {"p50", "p90"} <= set(rows)
    assert "prune.sparsity" in headers and not any(h.startswith("tune.space") for h in headers)
    column = headers.index("prune.weight_sparsity")
    assert float(rows["p90"][column]) > float(rows["p50"][column])
    assert rows["p90"][headers.index("train.test_accuracy")] == rows["p50"][headers.index("train.test_accuracy")]
    assert "p90" in table["pareto"]  # nothing else is as sparse


@pytest.mark.template("hardware-aware")
def test_hardware_aware_selects_a_fitting_trial_whose_latency_hardware_map_confirms(template_builds):
    """The template's answer: a trial that fits the PYNQ-Z2, the fastest feasible one, and the same
    predicted latency (within 10%) when hardware-map's functions cost the trained model on the test
    split; the pruned model hardware-map maps in this pipeline is at most as slow."""
    import csv

    from sparsecli import checkpoint
    from sparsecli.targets import load_target, network_from_model, predict
    from sparsecli.training import read_splits

    project, run = built(template_builds, "hardware-aware")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    latency, fits = "latency_us:fpga-pynq-z2", "fits:fpga-pynq-z2"
    front = list(csv.DictReader((project / "tune" / "pareto.csv").open()))
    selected = next(r for r in front if r["selected"] == "True")
    assert float(selected[fits]) == 1.0
    assert float(selected[latency]) == min(float(r[latency]) for r in front)
    model, _, _ = checkpoint.load(project / "models" / "train.pt")
    network = network_from_model(model, read_splits(project)[0]["test"].x, quantile=0.99)
    trained = predict(network, load_target(project / "hardware" / "fpga-pynq-z2.yaml"), ("sparse-sparse",), (1,),
                      "fixed16")["modes"]["sparse-sparse"]["1"]["totals"]
    assert trained["fits"] and float(selected[latency]) == pytest.approx(trained["latency_s"] * 1e6, rel=0.10)
    pruned = json.loads((project / "metrics" / "hardware_map.json").read_text())["targets"]["fpga-pynq-z2"]
    assert pruned["batch_1"]["sparse-sparse"]["fits"]
    assert pruned["batch_1"]["sparse-sparse"]["latency_s"] <= trained["latency_s"] * 1.10
    report = (project / "reports" / "index.md").read_text()
    assert f"Constraints: {fits} (sparse-sparse, batch 1, fixed16)" in report
