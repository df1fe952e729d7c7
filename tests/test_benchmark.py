"""The benchmark stage: measured speedups only for kernels that match dense; clear errors."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import snapshot
from sparsecli.cli import app
from sparsecli.params import load_params
from sparsecli.stages import benchmark
from sparsecli.targets.cost_kernels import MODES

runner = CliRunner()


def test_pipeline_model_is_measured_against_dense(pipeline_dir):
    metrics = json.loads((pipeline_dir / "metrics" / "benchmark.json").read_text())
    assert metrics["check_failures"] == []
    entry = metrics["networks"]["pipeline model"]
    assert entry["model"] == "models/pruned.pt"
    assert entry["fidelity"]["argmax_agreement"] > 0.9
    end_to_end = [r for r in entry["rows"] if r["stage"].startswith("end-to-end")]
    assert {(r["batch"], r["threads"]) for r in end_to_end} == {(1, 1), (16, 1)}
    for row in end_to_end:
        assert row["speedup"]["sparse-sparse"] > 0 and row["ideal"]["sparse-sparse"] > 1
    assert {o["batch"] for o in entry["onnxruntime"]} == {1, 16}
    ratios = entry["prediction_ratio"]  # the cost model beside each measurement, every mode and batch
    assert {m: set(b) for m, b in ratios.items()} == {m: {"1", "16"} for m in MODES}
    assert all(r[k] > 0 for b in ratios.values() for r in b.values() for k in ("ratio", "ratio_of_medians", "ratio_q1"))
    assert "cpu-local" in metrics["hardware_map"]
    assert "predicted_over_measured" in metrics["hardware_map"]["cpu-local"]
    assert (pipeline_dir / "reports" / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    report = (pipeline_dir / "reports" / "benchmark.md").read_text()
    assert "| this CPU, 1 thread | measured |" in report and "## Cost model vs measurement" in report


def test_a_kernel_that_disagrees_gets_no_speedup(tmp_path, pipeline_dir, tiny_params, monkeypatch):
    from sparsecli.kernels.engine import SparseEngine

    project = tmp_path / "p"
    shutil.copytree(pipeline_dir, project)
    real = SparseEngine.forward
    monkeypatch.setattr(SparseEngine, "__call__", lambda self, x: real(self, x) + 1.0)  # a wrong kernel
    metrics = benchmark.run(tiny_params, project)
    assert any("end-to-end sparse-sparse" in f for f in metrics["check_failures"])
    for row in metrics["networks"]["pipeline model"]["rows"]:
        if row["stage"].startswith("end-to-end"):
            assert row["speedup"]["sparse-sparse"] is None and row["times_s"]["sparse-sparse"] is None
    assert "disagreed with dense" in (project / "reports" / "benchmark.md").read_text()


def test_a_cnn_pipeline_model_is_measured(tmp_path, pipeline_dir, tiny_params_path):
    from sparsecli.stages import train

    project = tmp_path / "p"
    shutil.copytree(pipeline_dir, project)
    (project / "models" / "pruned.pt").unlink()
    params = load_params(tiny_params_path, ["model.arch=cnn", "train.epochs=1",
                                            "model.conv=[{channels: 16, pool: 2, weights: {sparsity: 0.5}, "
                                            "kwta: {percent_on: 0.1}}]"])
    train.run(params, project)
    metrics = benchmark.run(params, project)
    entry = metrics["networks"]["pipeline model"]
    assert "skipped" not in entry and entry["network"] == "cnn"
    assert metrics["check_failures"] == []
    assert entry["fidelity"]["argmax_agreement"] > 0.9
    for row in entry["rows"]:
        assert row["speedup"]["sparse-sparse"] > 0 and row["ideal"]["sparse-sparse"] > 1



def test_bad_benchmark_params_exit_2_and_write_nothing(project, monkeypatch):
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["benchmark", "--set", "benchmark.threads=[]"])
    assert result.exit_code == 2
    assert "benchmark.threads = []: list at least one thread count" in result.output
    result = runner.invoke(app, ["benchmark", "--set", "benchmark.repeats=0"])
    assert result.exit_code == 2 and "benchmark.repeats = 0: must be in [1, inf)" in result.output
    assert snapshot(project) == before


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch, tiny_params_path):
    shutil.copy(tiny_params_path, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["benchmark"])
    assert result.exit_code == 1 and "models/train.pt: checkpoint not found" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]
