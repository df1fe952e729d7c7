"""Run a template end to end: `sparsecli init`, its tiny-settings overlay, a real `dvc repro`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from conftest import ASSETS

OVERLAYS = ASSETS / "template_overlays"


def sh(*args, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def apply_overlay(params_path: Path, overlay: Path) -> None:
    """The overlay's dotted keys (the `dvc exp run -S` syntax) set in params.yaml."""
    from sparsecli.params import set_key

    raw = yaml.safe_load(params_path.read_text())
    for key, value in (yaml.safe_load(overlay.read_text()) or {}).items():
        set_key(raw, str(key), value, str(overlay))
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))


def init_template(name: str, folder: Path, before_commit=None) -> Path:
    sh("sparsecli", "init", str(folder), "--pipeline", name, cwd=folder.parent)
    apply_overlay(folder / "params.yaml", OVERLAYS / f"{name}.yaml")
    if before_commit is not None:
        before_commit(folder)
    sh("git", "config", "user.email", "test@example.com", cwd=folder)
    sh("git", "config", "user.name", "sparsecli test", cwd=folder)
    sh("git", "add", "-A", cwd=folder)
    sh("git", "commit", "-qm", "init", cwd=folder)
    return folder
