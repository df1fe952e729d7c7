import re
import shutil

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
    assert "predicted / measured" in html  # cpu-local's cost model against a timing here
    assert html.count("data:image/png;base64,") == result["figures"] >= 5
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from outside
    markdown = (project / "reports" / "index.md").read_text()
    for name in re.findall(r"\]\((figures/[\w.]+)\)", markdown):
        assert (project / "reports" / name).is_file()


def test_sections_are_omitted_when_their_inputs_are_missing(project, tiny_params, monkeypatch):
    assert report.run(tiny_params, project)["sections"] == ["data", "training", "sparsity", "noise", "dense"]
    (project / "metrics" / "train_history.csv").unlink()
    assert report.run(tiny_params, project)["sections"] == ["data", "training", "sparsity", "noise", "dense"]
    shutil.rmtree(project / "metrics")
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: metrics/train.json: no stage's metrics yet, nothing to report; run "
                                     "`dvc repro` (or `sparsecli data` and `sparsecli train`) first")
    assert snapshot(project) == before  # the page and its figures are kept


def test_corrupted_metrics_fail_cleanly(project, monkeypatch):
    (project / "metrics" / "train.json").write_text("{not json")
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: metrics/train.json: not valid JSON; rerun the stage that writes it"
    assert snapshot(project) == before


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


def test_hardware_section_shows_the_hls_csim_accuracy_and_the_cpu_check(tmp_path):
    import json

    from sparsecli.report.sections import hardware_section
    from sparsecli.stages.report import stage_outputs

    out = stage_outputs(tmp_path)
    out["hardware_map"]["metrics"].parent.mkdir(parents=True)
    out["hardware_map"]["metrics"].write_text(json.dumps({
        "model": "models/pruned.pt", "test_accuracy": 0.95, "onnx_argmax_agreement": 1.0,
        "hls_csim_accuracy": 0.93, "hls_relu_float_accuracy": 0.94,
        "targets": {"cpu-local": {"label": "calibrated", "precision": "fp32", "measured_dense_s": {"1": 1e-4},
                                  "predicted_over_measured_dense": {"1": 0.8}}}}))
    section = hardware_section(out)
    assert any("HLS C simulation" in t and "93.0%" in t and "94.0%" in t for t in section.text)
    check = next(t for t in section.tables if "predicted / measured" in t.headers)
    assert check.rows == [["cpu-local", "1", "100 µs", "0.8"]]
