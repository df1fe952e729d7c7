"""Shared, expensive fixtures: a data folder and a trained tiny model, built once per session."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ASSETS = Path(__file__).parent / "assets"
TINY = ROOT / "sparsecli" / "templates" / "smoke" / "params.yaml"  # the smoke pipeline's params: tiny and fast


# A test marked ``background(argv, env=...)`` has its subprocess started once the session's tests are
# collected and reads its result through the ``background`` fixture. For work that is all one
# process's CPU (the AVX2 path's numba compilation: ~50 s of one core), done on the core the
# single-process tests leave free instead of in line.
_BACKGROUND = pytest.StashKey[tuple]()
# A test marked ``template(name)`` reads that template's `dvc repro` (``template_run.built``): the
# templates the session's tests need are built one after another in one background subprocess
# from the session's start (``template_run.py``), beside the single-process tests, not in line.
_TEMPLATES = pytest.StashKey[tuple]()


def pytest_configure(config):
    config.addinivalue_line("markers", "background(argv, env=None): its subprocess runs from the session's start")
    config.addinivalue_line("markers", "template(name): the template is built in the background from the start")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that will run start one
def pytest_collection_modifyitems(config, items):
    if config.option.collectonly:
        return
    templates = []
    for item in items:
        marker = item.get_closest_marker("background")
        if marker:
            argv, env = marker.args[0], {**os.environ, **(marker.kwargs.get("env") or {})}
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill up
            item.stash[_BACKGROUND] = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True), out, err
        marker = item.get_closest_marker("template")
        if marker and marker.args[0] not in templates:
            templates.append(marker.args[0])
    if templates:
        root = Path(tempfile.mkdtemp(prefix="sparsecli-templates-"))
        argv = [sys.executable, str(ROOT / "tests" / "template_run.py"), str(root), *templates]
        with open(root / "builder.log", "w") as log:  # where a builder that failed to start says why
            config.stash[_TEMPLATES] = root, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                              start_new_session=True)  # its dvc and Ray go with it


def pytest_sessionfinish(session):
    for item in session.items:
        started = item.stash.get(_BACKGROUND, None)
        if started and started[0].poll() is None:  # its test did not run (-x, an interrupt)
            started[0].kill()
    root, builder = session.config.stash.get(_TEMPLATES, (None, None))
    if builder is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(builder.pid, signal.SIGKILL)
        builder.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_builds(request) -> tuple[Path, subprocess.Popen]:
    """Where the background builder builds the session's templates, and the builder
    (``template_run.built`` reads them)."""
    return request.config.stash[_TEMPLATES]


@pytest.fixture()
def background(request) -> subprocess.CompletedProcess:
    """The finished subprocess of this test's ``background`` marker (waits for it)."""
    process, out, err = request.node.stash[_BACKGROUND]
    with out, err:
        try:
            process.wait(timeout=600)
        finally:
            process.kill()
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())


@pytest.fixture(scope="session")
def tiny_params_path() -> Path:
    return TINY


@pytest.fixture(scope="session")
def tiny_params(tiny_params_path):
    from sparsecli.params import load_params

    return load_params(tiny_params_path)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tiny_params) -> Path:
    """A project folder where `data` and `train` have run on the tiny params (read-only for tests)."""
    from sparsecli.stages import data, train

    workdir = tmp_path_factory.mktemp("trained")
    shutil.copy(TINY, workdir / "params.yaml")
    data.run(tiny_params, workdir)
    train.run(tiny_params, workdir)
    return workdir


@pytest.fixture()
def project(tmp_path, trained_dir) -> Path:
    """A writable copy of the trained project."""
    target = tmp_path / "project"
    shutil.copytree(trained_dir, target)
    return target


def snapshot(folder: Path) -> dict[str, float]:
    """Every file under folder with its modification time: to assert nothing was written."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory, trained_dir, tiny_params) -> Path:
    """The tiny project after every later stage too (prune, sensitivity, hardware-map, benchmark; read-only)."""
    from sparsecli.stages import benchmark, hardware_map, prune

    workdir = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(trained_dir, workdir, dirs_exist_ok=True)
    shutil.copytree(ROOT / "hardware", workdir / "hardware", ignore=shutil.ignore_patterns("measured"))
    prune.run(tiny_params, workdir)
    prune.sensitivity(tiny_params, workdir)
    fast = tiny_params.model_copy(deep=True)
    fast.hardware_map.hls.enabled = False
    hardware_map.run(fast, workdir, hardware_dir=workdir / "hardware")
    benchmark.run(fast, workdir)  # the smoke params: pipeline model only, 1 thread, few repeats
    return workdir


OVERLAYS = ASSETS / "template_overlays"


def template_overlay(name: str) -> dict:
    """A template's tiny-settings overlay for the tests: dotted key -> value (the `dvc exp run -S` syntax)."""
    import yaml

    overlay = yaml.safe_load((OVERLAYS / f"{name}.yaml").read_text()) or {}
    assert isinstance(overlay, dict), f"{name}.yaml: expected a mapping of dotted keys"
    return overlay


def apply_overlay(params_file: Path, overlay: dict) -> None:
    """Set each dotted key of ``overlay`` in the params file (as `dvc exp run -S` would)."""
    import yaml

    from sparsecli.params import read_yaml, set_key

    raw = read_yaml(params_file)
    for key, value in overlay.items():
        set_key(raw, str(key), value, str(params_file))
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
