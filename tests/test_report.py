import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from conftest import ROOT, snapshot
from sparsecli.cli import app
from sparsecli.params import load_params
from sparsecli.stages import report

runner = CliRunner()


def sections_of(html: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)">', html)


def test_report_has_a_section_per_stage_that_ran_and_is_self_contained(tmp_path, pipeline_dir, tiny_params):
    project = tmp_path / "p"
    shutil.copytree(pipeline_dir, project)
    result = report.run(tiny_params, project)
    html = (project / "reports" / "index.html").read_text()
    assert sections_of(html) == result["sections"] == ["data", "training", "sparsity", "noise", "dense", "prune",
                                                       "hardware", "benchmark"]
    assert "<h3>cpu-local (calibrated, fp32)</h3>" in html
    assert html.count("data:image/png;base64,") == result["figures"] >= 5
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from outside
    markdown = (project / "reports" / "index.md").read_text()
    for name in re.findall(r"\]\((figures/[\w.]+)\)", markdown):
        assert (project / "reports" / name).is_file()


def test_sections_are_omitted_when_their_inputs_are_missing(project, tiny_params):
    assert report.run(tiny_params, project)["sections"] == ["data", "training", "sparsity", "noise", "dense"]
    shutil.rmtree(project / "metrics")
    assert report.run(tiny_params, project)["sections"] == ["data"]
    assert not any((project / "reports" / "figures").glob("*.png"))  # stale figures removed
    shutil.rmtree(project / "data")
    assert report.run(tiny_params, project)["sections"] == []


def test_corrupted_metrics_fail_cleanly(project, monkeypatch):
    (project / "metrics" / "train.json").write_text("{not json")
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: metrics/train.json: not valid JSON; rerun the stage that writes it"
    assert snapshot(project) == before


def test_templates_validate_and_default_matches_the_root_pipeline():
    import yaml

    from sparsecli.scaffold import templates

    names = templates()
    assert set(names) == {"default", "smoke", "mnist", "gsc-head", "paper", "speech"}
    for name in names:
        load_params(ROOT / "sparsecli" / "templates" / name / "params.yaml")
    assert (ROOT / "sparsecli" / "templates" / "default" / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    root = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in root["stages"].values():
        stage["deps"] = [d for d in stage.get("deps", []) if not str(d).startswith("sparsecli/")]
        if not stage["deps"]:
            del stage["deps"]
    for name in set(names) - {"paper", "speech"}:  # those two are other pipelines (tests/test_paper.py, test_speech.py)
        template = yaml.safe_load((ROOT / "sparsecli" / "templates" / name / "dvc.yaml").read_text())
        if name == "mnist":  # its data stage also depends on the IDX files in raw/mnist
            assert template["stages"]["data"].pop("deps") == ["raw/mnist"]
        assert template == root, name


def test_init_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "directory is not empty" in result.output and "--force" in result.output
    assert snapshot(tmp_path) == before
    result = runner.invoke(app, ["init", str(tmp_path / "new"), "--pipeline", "nope"])
    assert result.exit_code == 2 and "no such template; choose one of: default" in result.output
    assert not (tmp_path / "new").exists()


def test_init_smoke_then_dvc_repro_end_to_end(tmp_path):
    target = tmp_path / "my-experiment"
    result = runner.invoke(app, ["init", str(target), "--pipeline", "smoke"])
    assert result.exit_code == 0, result.output
    for name in ("params.yaml", "dvc.yaml", ".gitignore", "README.md", ".dvc/config", ".git", "hardware/cpu-local.yaml"):
        assert (target / name).exists(), name
    assert "analytics = false" in (target / ".dvc" / "config").read_text()
    run = subprocess.run(["dvc", "repro"], cwd=target, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "data:image/png;base64," in (target / "reports" / "index.html").read_text()
    # --force adds missing files and keeps the user's
    (target / "params.yaml").write_text("# mine\n")
    (target / "README.md").unlink()
    result = runner.invoke(app, ["init", str(target), "--force"])
    assert result.exit_code == 0 and "kept existing" in result.output
    assert (target / "params.yaml").read_text() == "# mine\n" and (target / "README.md").exists()


@pytest.fixture()
def experiment_repo(tmp_path):
    target = tmp_path / "exp"
    assert runner.invoke(app, ["init", str(target), "--pipeline", "smoke"]).exit_code == 0
    for args in (["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=target, check=True)
    return target


def test_compare_marks_pareto_experiments(experiment_repo, monkeypatch):
    for name, sparsity in (("dense", 0.0), ("sparse", 0.8)):
        subprocess.run(["dvc", "exp", "run", "-q", "-n", name, "-S", f"model.layers.0.weights.sparsity={sparsity}",
                        "-S", "train.epochs=1"], cwd=experiment_repo, check=True, capture_output=True)
    monkeypatch.chdir(experiment_repo)
    result = runner.invoke(app, ["report", "--compare", "--json"])
    assert result.exit_code == 0, result.output
    import json

    table = json.loads(result.output)
    names = [row[0] for row in table["rows"]]
    assert {"dense", "sparse"} <= set(names)
    assert "model.layers.0.weights.sparsity" in table["headers"]
    assert "sparse" in table["pareto"]  # nothing else has its sparsity
