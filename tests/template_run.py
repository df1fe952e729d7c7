"""Run a template end to end: `sparsecli init`, its tiny-settings overlay, a real `dvc repro`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import apply_overlay, template_overlay


def sh(*args, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def init_template(name: str, folder: Path, before_commit=None) -> Path:
    sh("sparsecli", "init", str(folder), "--pipeline", name, cwd=folder.parent)
    apply_overlay(folder / "params.yaml", template_overlay(name))
    if before_commit is not None:
        before_commit(folder)
    sh("git", "config", "user.email", "test@example.com", cwd=folder)
    sh("git", "config", "user.name", "sparsecli test", cwd=folder)
    sh("git", "add", "-A", cwd=folder)
    sh("git", "commit", "-qm", "init", cwd=folder)
    return folder
