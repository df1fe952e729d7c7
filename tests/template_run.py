"""Run a template end to end: `sparsecli init`, its tiny-settings overlay, a real `dvc repro`.

As a script (``python tests/template_run.py ROOT NAME ...``), it builds each named template in
turn in ``ROOT/NAME`` (`sparsecli init`, the overlay, the SETUP step, `dvc repro`), writing
`dvc repro`'s output to ``ROOT/NAME.out``/``.err`` and then its exit code to ``ROOT/NAME.rc``:
conftest starts it when the session's tests are collected (``template`` marker), and ``built``
waits for a template's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # conftest, idx_digits: also when run as a script

from conftest import apply_overlay, template_overlay  # noqa: E402
from idx_digits import write_digits_as_mnist  # noqa: E402

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}
# template -> writes the input data a new user would bring
SETUP = {
    "mnist": lambda project: write_digits_as_mnist(project / "raw" / "mnist"),
}


def sh(*args, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def init_with_overlay(name: str, folder: Path) -> None:
    sh("sparsecli", "init", str(folder), "--pipeline", name, cwd=folder.parent)
    apply_overlay(folder / "params.yaml", template_overlay(name))


def init_template(name: str, folder: Path, before_commit=None) -> Path:
    init_with_overlay(name, folder)
    if before_commit is not None:
        before_commit(folder)
    sh("git", "config", "user.email", "test@example.com", cwd=folder)
    sh("git", "config", "user.name", "sparsecli test", cwd=folder)
    sh("git", "add", "-A", cwd=folder)
    sh("git", "commit", "-qm", "init", cwd=folder)
    return folder


def build(root: Path, name: str) -> None:
    """``ROOT/NAME``: init, overlay, setup, `dvc repro` (output and exit code beside it)."""
    project, code = root / name, 1
    try:
        init_with_overlay(name, project)
        if name in SETUP:
            SETUP[name](project)
        with open(root / f"{name}.out", "w") as out, open(root / f"{name}.err", "w") as err:
            code = subprocess.run(["dvc", "repro"], cwd=project, stdout=out, stderr=err, text=True, env=ENV).returncode
    except Exception as e:  # noqa: BLE001 - the test that waits for it shows the failure
        (root / f"{name}.out").write_text("")
        (root / f"{name}.err").write_text(f"building {name} failed: {e!r}")
    (root / f"{name}.rc.tmp").write_text(str(code))
    (root / f"{name}.rc.tmp").rename(root / f"{name}.rc")  # whole, or not there


def built(builds: tuple[Path, subprocess.Popen], name: str,
          timeout_s: float = 900) -> tuple[Path, subprocess.CompletedProcess]:
    """The template's project and its `dvc repro`, once the background build (conftest's
    ``template_builds``: its folder and the builder) wrote its exit code."""
    root, builder = builds
    rc = root / f"{name}.rc"
    deadline = time.monotonic() + timeout_s
    while not rc.is_file():
        stopped = builder.poll() is not None and not rc.is_file()
        assert not stopped, f"the template builder stopped: {(root / 'builder.log').read_text()}"
        assert time.monotonic() < deadline, f"the background build of {name} did not finish in {timeout_s:.0f} s"
        time.sleep(0.5)
    run = subprocess.CompletedProcess(["dvc", "repro"], int(rc.read_text()), (root / f"{name}.out").read_text(),
                                      (root / f"{name}.err").read_text())
    return root / name, run


if __name__ == "__main__":
    for template in sys.argv[2:]:
        build(Path(sys.argv[1]), template)
