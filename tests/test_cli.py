import json
import subprocess
import sys

import pytest
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


# ---------------------------------------------------------------- edge cases a new user hits: one line, nothing written


def _fails(project, args, code, message):
    """Run a command; it must fail with `code`, print exactly one line containing `message`, write nothing."""
    before = snapshot(project)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert snapshot(project) == before
    return lines[0]


def _edit_params(project, **sections):
    import yaml

    raw = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section] |= values
    (project / "params.yaml").write_text(yaml.safe_dump(raw))


def test_an_empty_params_file_is_refused_by_every_stage(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "params.yaml").write_text("# nothing yet\n")
    for command in ("data", "train", "prune", "report"):
        _fails(project, [command], 2, "params.yaml: empty; write the params file's sections (seed, data, model, ...)")


def test_params_file_is_validated_before_tunes_choice_and_errors_name_their_file(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "tune").mkdir()
    (project / "tune" / "best_params.yaml").write_text("train.lr: 0.01\n")
    _edit_params(project, train={"lr": "fast"})
    _fails(project, ["train"], 2, "error: params.yaml: train.lr = 'fast': must be a number")
    _edit_params(project, train={"lr": 0.01})
    (project / "tune" / "best_params.yaml").write_text("train.lr: fast\n")
    _fails(project, ["train"], 2, "error: tune/best_params.yaml: train.lr = 'fast': must be a number")


@pytest.mark.parametrize("args, message", [
    (["--set", "train.epochs=6.0"], "params.yaml: train.epochs = 6.0: must be an integer"),
    (["--set", "train.batch_size='32'"], "params.yaml: train.batch_size = '32': must be an integer"),
    (["--set", "train.lr=true"], "params.yaml: train.lr = True: must be a number"),
    (["--set", "model.layers.0.kwta.foo=1"], "params.yaml: model.layers.0.kwta.foo: unknown key; allowed keys in "
     "model.layers.0.kwta: percent_on, boost_strength, boost_strength_factor, duty_cycle_period, k_inference_factor, local"),
])
def test_no_silent_coercion_and_unknown_keys_list_the_allowed_ones(project, monkeypatch, args, message):
    monkeypatch.chdir(project)
    _fails(project, ["train", *args], 2, message)


def test_a_quoted_number_in_the_params_file_is_not_an_integer(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("batch_size: 128", 'batch_size: "32"'))
    _fails(project, ["data"], 2, "error: params.yaml: train.batch_size = '32': must be an integer")


def test_a_sections_cross_checks_apply_to_the_stages_that_read_it(project, monkeypatch):
    monkeypatch.chdir(project)
    _edit_params(project, tune={"min_epochs": 2})
    result = runner.invoke(app, ["train", "-q", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    (project / "models" / "train.pt").unlink()
    _fails(project, ["tune", "--set", "train.epochs=1"], 2,
           "params.yaml: tune.min_epochs = 2: must be <= the full training, train.epochs (1), or set tune.max_epochs")


@pytest.mark.parametrize("args, message", [
    (["train", "--bogus"], "No such option: --bogus"),
    (["trian"], "No such command 'trian'. Did you mean 'train'? (see `sparsecli --help`)"),
    (["tune", "--workers", "0"], "Invalid value for '--workers' / '-w'"),
    (["train", "--set"], "Option '--set' requires an argument"),
])
def test_usage_errors_are_one_line(project, monkeypatch, args, message):
    monkeypatch.chdir(project)
    _fails(project, args, 2, message)


def test_a_second_run_of_a_stage_in_the_same_folder_refuses(project, monkeypatch):
    import os

    from sparsecli.atomic import stage_lock

    monkeypatch.chdir(project)
    with stage_lock(project, "train"):
        line = _fails(project, ["train"], 1, "another `sparsecli train` (pid")
        assert f"(pid {os.getpid()})" in line and "wait for it to finish or stop it" in line
        result = runner.invoke(app, ["data", "-q"])  # another stage's outputs are not locked
        assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["train", "-q", "--set", "train.epochs=1"]).exit_code == 0  # released


def test_blocked_outputs_are_found_before_any_work(project, monkeypatch):
    import shutil

    monkeypatch.chdir(project)
    shutil.rmtree(project / "metrics")
    (project / "metrics").write_text("not a folder")
    _fails(project, ["train"], 1, "error: metrics: is a file, but metrics/train.json goes inside a folder of that "
                                  "name; move it away")
    (project / "metrics").unlink()
    (project / "metrics" / "train.json").mkdir(parents=True)
    _fails(project, ["train"], 1, "error: metrics/train.json: exists and is a folder, but this stage writes a file "
                                  "there; move it away")


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes through any permission")
def test_an_unwritable_output_folder_is_found_before_any_work(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "models").chmod(0o555)
    try:
        _fails(project, ["train"], 1, "error: models: not writable, so models/train.pt cannot be written")
    finally:
        (project / "models").chmod(0o755)
