import json
import subprocess
import sys

from typer.testing import CliRunner

from conftest import snapshot
from sparsecli import __version__
from sparsecli.cli import app

runner = CliRunner()


def test_help_and_version():
    for flag in ("--help", "-h"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0, result.output
        assert "data" in result.output and "train" in result.output
    assert runner.invoke(app, ["--version"]).output.strip() == f"sparsecli {__version__}"


def test_help_imports_no_heavy_library():
    code = "import sys; from sparsecli.cli import app\ntry: app(['--help'])\nexcept SystemExit: pass\n" \
           "print(sorted(m for m in ('torch', 'ray', 'dvc', 'numba', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "sparsecli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sparsecli {__version__}"


def test_bad_params_exit_2_with_one_line_and_write_nothing(project, monkeypatch):
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["train", "--set", "model.layers.0.kwta.percent_on=1.5"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: params.yaml: model.layers.0.kwta.percent_on = 1.5: must be in (0, 1)"
    result = runner.invoke(app, ["data", "--params", "missing.yaml"])
    assert result.exit_code == 2 and "missing.yaml: params file not found" in result.output
    assert snapshot(project) == before


def test_missing_data_is_a_runtime_error(tmp_path, monkeypatch, tiny_params_path):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--params", str(tiny_params_path)])
    assert result.exit_code == 1
    assert "data/meta.json: not found; run `sparsecli data`" in result.output
    assert list(tmp_path.iterdir()) == []


def test_corrupted_data_is_a_clear_error(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "data" / "train.npz").write_bytes(b"garbage")
    before = snapshot(project)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1 and "data/train.npz: unreadable or corrupted" in result.output
    assert "Traceback" not in result.output
    assert snapshot(project) == before


def test_data_command_prints_json(project, monkeypatch):
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["data", "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["classes"] == 10


def test_train_command_summary_lines_without_a_terminal(project, monkeypatch):
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["train", "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("train: epoch   1") and lines[1].startswith("train: epoch   2")
    assert lines[-1].startswith("train: done. test_accuracy")
    quiet = runner.invoke(app, ["train", "-q", "--set", "train.epochs=1"])
    assert quiet.output == ""
