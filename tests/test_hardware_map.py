"""The hardware-map stage through the CLI, on the tiny trained model and on a GSC-sized one."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import ROOT, snapshot
from sparsecli import checkpoint
from sparsecli.cli import app
from sparsecli.exports.hls_export import hls4ml_version

runner = CliRunner()
HARDWARE = ROOT / "hardware"
ASSETS = ROOT / "tests" / "targets" / "assets"
TINY_TARGETS = ["fpga-alveo-u250", "fpga-zu3eg", "cpu-local"]  # sparsecli/templates/smoke/params.yaml
ONE_FPGA = ["--set", "hardware_map.targets=[fpga-alveo-u250]", "--set", "hardware_map.hls.enabled=false"]


def invoke(folder: Path, *args: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return runner.invoke(app, ["hardware-map", *args])


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, trained_dir):
    """The tiny trained project after one `sparsecli hardware-map`, and the command's output."""
    folder = tmp_path_factory.mktemp("mapped")
    shutil.copytree(trained_dir, folder, dirs_exist_ok=True)
    shutil.copytree(HARDWARE, folder / "hardware")
    result = invoke(folder)
    assert result.exit_code == 0, result.output
    return folder, result.output


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_metrics_report_and_onnx(mapped):
    folder, output = mapped
    metrics = read(folder, "metrics/hardware_map.json")
    assert metrics["model"] == "models/train.pt"
    assert list(metrics["targets"]) == TINY_TARGETS
    assert metrics["onnx_argmax_agreement"] == 1.0 and metrics["onnx_max_abs_diff"] < 1e-4
    u250 = metrics["targets"]["fpga-alveo-u250"]
    assert u250["label"] == "estimated" and u250["precision"] == "fixed16"
    assert set(u250) >= {"batch_1", "batch_8"}
    one = u250["batch_1"]
    assert one["dense"]["speedup"] == 1.0 and one["sparse-sparse"]["speedup"] > one["sparse-dense"]["speedup"] > 1
    local = metrics["targets"]["cpu-local"]
    assert local["label"] == "calibrated"
    assert set(local["measured_dense_s"]) == {"1", "8"} and all(v > 0 for v in local["measured_dense_s"].values())
    assert "cpu-local batch 1: dense predicted" in output and "measured" in output
    report = (folder / "reports" / "hardware_map.md").read_text()
    for name, label in (("fpga-alveo-u250", "estimated"), ("fpga-zu3eg", "estimated"), ("cpu-local", "calibrated")):
        assert f"## `{name}` ({label})" in report
    for text in ("| mode | batch | fits | latency |", "### Worked example", "Predicted vs measured on this machine",
                 "**Dense network: fits**", "## Assumptions", "TopK"):
        assert text in report, text
    graph = read(folder, "reports/hardware_map.json")["onnx"]
    assert {"TopK", "ScatterElements"} <= set(graph["operators"])
    assert (folder / "exports" / "model.onnx").is_file()
    assert not list(folder.glob(".*.tmp")) and not list((folder / "reports").glob(".*"))


def test_hls_projects_or_one_line_without_hls4ml(mapped):
    folder, output = mapped
    detail = read(folder, "reports/hardware_map.json")["hls"]
    if hls4ml_version() is None:
        assert "hls4ml is not installed" in output and detail["projects"] == {}
        return
    assert list(detail["projects"]) == ["fpga-alveo-u250", "fpga-zu3eg"] and detail["csim"] is None
    project = folder / "exports" / "hls" / "fpga-zu3eg"
    assert not list(project.rglob("*.so"))
    config = (project / "hls4ml_config.yml").read_text()
    assert "PytorchModel" not in config and "OutputDir: exports/hls/fpga-zu3eg" in config
    assert "Part: xczu3eg-sbva484-1-e" in config and "ap_fixed<16,6>" in config
    parameters = (project / "firmware" / "parameters.h").read_text()
    assert "n_zeros = 1024;" in parameters  # layers.0: half of 64 x 32 weights are masked
    info = detail["projects"]["fpga-zu3eg"]
    assert info["zero_weights"][0] == 1024
    reuse = [layer["reuse_factor"] for layer in
             read(folder, "reports/hardware_map.json")["targets"]["fpga-zu3eg"]["modes"]["sparse-dense"]["1"]["layers"]]
    assert info["reuse_requested"] == reuse
    assert f"reuse_factor = {info['reuse_used'][0]};" in parameters
    assert (project / "tb_data" / "tb_input_features.dat").is_file()


def test_one_fpga_layer_recomputed_from_the_yaml(mapped):
    """The head on the U250, sparse-sparse, batch 1, from the target file and cost_fpga.py's formulas."""
    folder, _ = mapped
    detail = read(folder, "reports/hardware_map.json")
    fields = yaml.safe_load((HARDWARE / "fpga-alveo-u250.yaml").read_text())
    head = next(row for row in detail["network"] if row["name"] == "head")
    cost = detail["targets"]["fpga-alveo-u250"]["modes"]["sparse-sparse"]["1"]
    layer = next(row for row in cost["layers"] if row["name"] == "head")
    nonzero = round(32 * 10 * head["weight_density"])
    work = math.ceil(nonzero * head["input_density"])
    reuse = layer["reuse_factor"]
    lanes = math.ceil(work / reuse)
    est = fields["estimator"]
    assert (head["nonzero_weights"], layer["work"], layer["multipliers"]) == (nonzero, work, lanes)
    assert layer["dsp"] == math.ceil(lanes / fields["macs_per_dsp"]["fixed16"])
    assert layer["lut"] == lanes * (est["lut_per_multiplier"]["fixed16"] + est["sparse_sparse_lut_per_multiplier"]) \
        + est["lut_per_layer"]
    assert layer["ff"] == lanes * est["ff_per_multiplier"]["fixed16"]
    assert layer["latency_cycles"] == reuse + est["pipeline_overhead_cycles"] + est["sparse_sparse_index_cycles"]
    totals = cost["totals"]
    assert totals["throughput_ips"] == pytest.approx(totals["copies"] * fields["clock_mhz"] * 1e6 / totals["ii_cycles"])
    assert totals["energy_j"] == pytest.approx(fields["power"]["typical_w"] / totals["throughput_ips"])


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda raw: raw["resources"].pop("dsp"), "resources.dsp: missing required field"),
        (lambda raw: raw["resources"].update(lut=-5), "resources.lut: Input should be greater than 0 (got -5)"),
        (lambda raw: raw.update(clock_ghz=3.0), "clock_ghz: unknown key"),
    ],
    ids=["missing", "negative", "unknown"],
)
def test_broken_target_file_is_one_line_and_writes_nothing(project, edit, field):
    hardware = project / "hardware"
    shutil.copytree(HARDWARE, hardware)
    path = hardware / "fpga-zu3eg.yaml"
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = snapshot(project)
    result = invoke(project)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hardware/fpga-zu3eg.yaml: ") and field in lines[0]
    assert snapshot(project) == before


@pytest.mark.parametrize(
    "override, expected",
    [
        ("hardware_map.targets=[cpu-local, fpga-nope]", "hardware_map.targets.1 = 'fpga-nope': no "),
        ("hardware_map.precision={fpga: fixed16, cpu-local: int8}",
         "hardware_map.precision.cpu-local = 'int8': cpu-local supports fp32"),
        ("hardware_map.precision.fpga=int8", "hardware_map.hls.precision = 'ap_fixed<16,6>': 16 bits, but "
                                             "fpga-alveo-u250 is costed at int8"),
        ("hardware_map.reuse_factor=[1, 2, 3]", "hardware_map.reuse_factor = [1, 2, 3]: 3 factors for 2 weight layers"),
        ("hardware_map.batch_sizes=[8]", "hardware_map.batch_sizes = [8]: must include 1"),
    ],
)
def test_bad_hardware_map_params_exit_2(project, override, expected):
    before = snapshot(project)
    result = invoke(project, "--hardware", str(HARDWARE), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert snapshot(project) == before


def test_pruned_model_is_preferred(project):
    shutil.copy(project / "models" / "train.pt", project / "models" / "pruned.pt")
    result = invoke(project, "--hardware", str(HARDWARE), "-q", *ONE_FPGA)
    assert result.exit_code == 0, result.output
    assert read(project, "metrics/hardware_map.json")["model"] == "models/pruned.pt"
    assert "HLS export off" in (project / "reports" / "hardware_map.md").read_text()


def test_import_synthesis_report(project):
    hardware = project / "hardware"
    shutil.copytree(HARDWARE, hardware)
    result = invoke(project, "-q", "--import-report", str(ASSETS / "sparsecli_model_csynth.xml"), *ONE_FPGA)
    assert result.exit_code == 0, result.output
    stored = hardware / "measured"
    assert sorted(p.name for p in stored.iterdir()) == ["fpga-alveo-u250.json", "fpga-alveo-u250.xml"]
    synthesis = read(project, "metrics/hardware_map.json")["targets"]["fpga-alveo-u250"]["synthesis"]
    assert synthesis["stale"] is False and synthesis["dsp_estimated_over_measured"] > 0
    measured = read(project, "reports/hardware_map.json")["targets"]["fpga-alveo-u250"]["measured"]
    assert measured["label"] == "measured" and measured["figures"]["latency_cycles"]["measured"] == 9
    assert "### Measured: HLS synthesis report" in (project / "reports" / "hardware_map.md").read_text()

    # the text format replaces the XML; a model with other weights makes the record stale
    model, params, payload = checkpoint.load(project / "models" / "train.pt")
    with torch.no_grad():
        model.head.module.bias.add_(1.0)
    checkpoint.save(project / "models" / "pruned.pt", model, params, payload["meta"])
    result = invoke(project, "-q", "--import-report", str(ASSETS / "sparsecli_model_csynth.rpt"), *ONE_FPGA)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in stored.iterdir()) == ["fpga-alveo-u250.json", "fpga-alveo-u250.rpt"]
    (project / "models" / "pruned.pt").unlink()
    result = invoke(project, "-q", *ONE_FPGA)  # the stored report, now for another model
    assert result.exit_code == 0, result.output
    assert read(project, "metrics/hardware_map.json")["targets"]["fpga-alveo-u250"]["synthesis"]["stale"] is True
    assert "**Stale:** synthesised for another model" in (project / "reports" / "hardware_map.md").read_text()

    before = snapshot(project)
    result = invoke(project, "--import-report", str(ASSETS / "sparsecli_model_csynth.xml"),
                    "--set", "hardware_map.targets=[fpga-zu3eg]")
    assert result.exit_code == 1
    assert "part xcu250-figd2104-2L-e matches no FPGA target in hardware_map.targets" in result.output
    bad = project / "bad_csynth.xml"
    bad.write_text("<profile>")
    before[bad.name] = bad.stat().st_mtime_ns
    result = invoke(project, "--import-report", str(bad), *ONE_FPGA)
    assert result.exit_code == 1 and "bad_csynth.xml: not valid XML" in result.output
    assert snapshot(project) == before


def test_gsc_sized_network_on_the_u250(tmp_path):
    """Acceptance: 1600 -> 1500 -> 1500 -> 12, 95% zero weights, 10% active units (templates/gsc-head)."""
    shutil.copy(ROOT / "sparsecli" / "templates" / "gsc-head" / "params.yaml", tmp_path / "params.yaml")
    small = ["--set", "data.synthetic.samples=300", "--set", "train.epochs=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        for command in ("data", "train"):
            result = runner.invoke(app, [command, "-q", *small])
            assert result.exit_code == 0, result.output
    result = invoke(tmp_path, "-q", "--hardware", str(HARDWARE), *small,
                    "--set", "hardware_map.targets=[fpga-alveo-u250, fpga-zu3eg]")
    assert result.exit_code == 0, result.output
    detail = read(tmp_path, "reports/hardware_map.json")
    network = {row["name"]: row for row in detail["network"]}
    assert network["layers.1"]["weight_density"] == pytest.approx(0.05)
    assert network["layers.1"]["input_density"] == pytest.approx(0.1)
    u250 = detail["targets"]["fpga-alveo-u250"]["modes"]
    gain = u250["sparse-sparse"]["1"]["speedup_over_dense"]["throughput"]
    assert 10 <= gain <= 1000
    zu3eg = detail["targets"]["fpga-zu3eg"]["modes"]["dense"]["1"]["totals"]
    assert zu3eg["fits"] is True and zu3eg["weights_on_chip"] is False
    report = (tmp_path / "reports" / "hardware_map.md").read_text()
    assert "exceed cap × onchip_memory_bits" in report


def test_without_hls4ml_one_line_and_the_model_only(project, monkeypatch):
    from sparsecli.exports import hls_export

    monkeypatch.setattr(hls_export, "hls4ml_version", lambda: None)  # as if the fpga extra were not installed
    result = invoke(project, "--hardware", str(HARDWARE), "--set", "hardware_map.targets=[fpga-zu3eg]")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "hls4ml" in line]
    assert lines == ["hardware-map: hls4ml is not installed: no HLS project (pip install 'sparsecli[fpga]'); "
                     "continuing with the model only"]
    assert (project / "exports" / "model.onnx").is_file() and not (project / "exports" / "hls").exists()
    assert "hls_csim_accuracy" not in read(project, "metrics/hardware_map.json")


def test_listed_in_help_with_its_options():
    assert "hardware-map" in runner.invoke(app, ["--help"]).output
    result = runner.invoke(app, ["hardware-map", "--help"])
    assert result.exit_code == 0 and "--import-report" in result.output and "--hardware" in result.output
