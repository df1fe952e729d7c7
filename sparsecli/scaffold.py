"""``sparsecli init``: a ready experiment repository from a template in ``sparsecli/templates/``.

A template is a folder with ``dvc.yaml`` + ``params.yaml``; ``init`` copies it with the
hardware targets (``templates/hardware``), the project's ``.gitignore`` and ``.dvcignore``
(``templates/project``) and a short README, then runs ``git init`` (unless the
folder is already inside a git repository) and ``dvc init`` with analytics off. It never
overwrites a file: a non-empty folder is refused unless ``force`` is given, and even then
existing files are kept.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

from sparsecli.errors import SparsecliError

# Package data, so `init` works from a wheel. In the source tree `hardware` and `project/*`
# are links to the repository's own hardware/, .gitignore and .dvcignore (one copy of each).
TEMPLATES = files("sparsecli") / "templates"
HARDWARE = TEMPLATES / "hardware"
PROJECT = TEMPLATES / "project"


class InitError(SparsecliError):
    exit_code = 2


def templates() -> dict[str, str]:
    """Template name -> its one-line description (the first comment line of its params.yaml)."""
    found = {}
    for folder in sorted(TEMPLATES.iterdir(), key=lambda f: f.name):
        params = folder / "params.yaml"
        if params.is_file() and (folder / "dvc.yaml").is_file():
            first = params.read_text().splitlines()[0] if params.read_text() else ""
            found[folder.name] = first.lstrip("# ").strip()
    return found


def init(target: Path, pipeline: str = "default", force: bool = False) -> dict:
    available = templates()
    if pipeline not in available:
        raise InitError(f"--pipeline {pipeline}: no such template; choose one of: {', '.join(available)}")
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InitError(f"{target}: exists and is not a directory; choose a new directory name")
    if target.is_dir() and any(p.name != ".git" for p in target.iterdir()) and not force:
        raise InitError(f"{target}: directory is not empty; choose a new directory, or pass --force "
                        "to add the template's files (existing files are kept)")
    _require_tools()
    files = dict(_tree(TEMPLATES / pipeline))  # params.yaml, dvc.yaml and any folder the pipeline reads
    files |= {
        ".gitignore": (PROJECT / "gitignore").read_text(),  # the same outputs are generated there
        ".dvcignore": (PROJECT / "dvcignore").read_text(),
        "README.md": _readme(pipeline, available[pipeline]),
    }
    files |= {f"hardware/{p.name}": p.read_text() for p in sorted(HARDWARE.iterdir(), key=lambda p: p.name)
              if p.is_file() and (p.name.endswith(".yaml") or p.name == "README.md")}
    target.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for name, text in files.items():
        path = target / name
        if path.exists():
            kept.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(name)
    if not _inside_git(target):
        _run(["git", "init", "-q"], target)
    if not (target / ".dvc").is_dir():
        subdir = [] if (target / ".git").is_dir() else ["--subdir"]
        _run(["dvc", "init", "-q", *subdir], target)
    _run(["dvc", "config", "core.analytics", "false"], target)
    return {"directory": str(target), "pipeline": pipeline, "written": written, "kept": kept}


def _tree(folder, prefix: str = ""):
    """(relative path, text) of every file under a template folder."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _tree(entry, f"{prefix}{entry.name}/")
        elif entry.is_file():
            yield f"{prefix}{entry.name}", entry.read_text()


def _require_tools() -> None:
    for tool in ("git", "dvc"):
        if shutil.which(tool) is None:
            raise SparsecliError(f"`{tool}` not found on PATH; install it (pip install -e . installs dvc)")


def _inside_git(folder: Path) -> bool:
    result = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=folder, capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "true"


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SparsecliError(f"`{' '.join(command)}` failed in {cwd}: {last[0]}")


def _readme(pipeline: str, description: str) -> str:
    return f"""# A sparsecli experiment ({pipeline})

{description}

```bash
dvc repro                              # run the pipeline
dvc exp run -S train.lr=0.01           # an experiment with one param changed
dvc exp show                           # compare experiments
tensorboard --logdir runs              # training curves
open reports/index.html                # the report (self-contained, works offline)
```

Params are in `params.yaml`; hardware targets in `hardware/` (schema in `hardware/README.md`).
"""
