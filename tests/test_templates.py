"""Every shipped template runs end to end: `sparsecli init X --pipeline NAME`, its tiny overlay, `dvc repro`.

A template NAME has a tiny-settings overlay ``tests/assets/template_overlays/NAME.yaml`` (dotted key ->
value, the `dvc exp run -S` syntax) applied onto the copied params.yaml before `dvc repro`. A template
whose end-to-end run is tested in another file is listed in COVERED_ELSEWHERE with that file (which
must use its overlay); a template that needs input data gets a SETUP step that writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import OVERLAYS, ROOT, apply_overlay, template_overlay
from idx_digits import write_digits_as_mnist
from sparsecli import scaffold
from sparsecli.cli import app

# template -> the test file that runs it end to end (and applies its overlay)
COVERED_ELSEWHERE = {
    "default": "tests/test_dvc.py",  # the root dvc.yaml (= the template's plus code deps) on the root params.yaml
}
# template -> writes the input data a new user would bring
SETUP = {
    "mnist": lambda project: write_digits_as_mnist(project / "raw" / "mnist"),
}


def here() -> list[str]:
    return [name for name in scaffold.templates() if name not in COVERED_ELSEWHERE]


def test_every_template_has_an_overlay_and_an_end_to_end_test():
    names = set(scaffold.templates())
    assert {"default", "smoke", "mnist", "gsc-head"} <= names
    assert {p.stem for p in OVERLAYS.glob("*.yaml")} == names
    for name, test_file in COVERED_ELSEWHERE.items():
        assert name in names
        assert f"template_overlay({name!r})" in (ROOT / test_file).read_text().replace('"', "'"), test_file


@pytest.mark.parametrize("name", here())
def test_template_runs_end_to_end(name, tmp_path, monkeypatch):
    project = tmp_path / name
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init", name, "--pipeline", name])
    assert result.exit_code == 0, result.output
    apply_overlay(project / "params.yaml", template_overlay(name))
    if name in SETUP:
        SETUP[name](project)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("data", "tune", "train", "prune", "hardware-map", "benchmark", "report"):
        assert f"Running stage '{stage}'" in run.stdout, stage
    train = json.loads((project / "metrics" / "train.json").read_text())
    assert 0 < train["weight_sparsity"] < 1 and train["test_accuracy"] > 0
    assert (project / "reports" / "index.html").is_file()
    status = subprocess.run(["dvc", "status"], cwd=project, capture_output=True, text=True, env=env)
    assert "up to date" in status.stdout, status.stdout
