"""Connecting to Ray: a local cluster kept inside the project, or an existing one.

Nothing is written outside the project: token authentication and usage stats are off (no
files in the home directory), and a local cluster's temp dir (sockets, logs) is
``<project>/.ray``. Ray's unix socket paths must stay under ~107 characters and it nests
~60 characters below its temp dir, so when the project path is too long the temp dir is
``/tmp/sparsecli-ray-<hash of the project path>`` instead. Ray's own console output (status
tables, info logs, worker output) is silenced: progress goes through ``Progress``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparsecli.errors import SparsecliError

MAX_TEMP_DIR = 40  # characters; Ray appends ~62 to reach its longest socket path
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the legacy reporter prints nothing
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/TensorBoard per trial: runs/tune is ours
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # a diverged trial reports no objective values
}
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "ray.data")


def temp_dir(workdir: Path) -> Path:
    inside = Path(workdir).resolve() / ".ray"
    if len(str(inside)) <= MAX_TEMP_DIR:
        return inside
    digest = hashlib.sha256(str(inside).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"sparsecli-ray-{digest}"


def local_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def ray_session(workdir: Path, address: str | None = None, workers: int | None = None) -> Iterator[int]:
    """Connect to (or start) Ray for the duration of the block; yields the CPUs available for trials.

    An already initialised Ray (e.g. a benchmark running several searches) is used as is
    and left running.
    """
    os.environ.update(RAY_ENV)
    import ray

    if ray.is_initialized():
        with quiet_ray():
            yield int(ray.cluster_resources().get("CPU", 1))
        return
    local = address is None
    tmp = temp_dir(workdir)
    kwargs = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False}
    try:
        if local:
            ray.init(num_cpus=workers or local_cpus(), _temp_dir=str(tmp), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise SparsecliError(f"--address {address}: no Ray cluster there ({e}); start one with "
                             "`ray start --head` or drop --address to run locally") from None
    ok = False
    try:
        with quiet_ray():
            yield int(ray.cluster_resources().get("CPU", 1))
        ok = True
    finally:
        ray.shutdown()
        if local and ok:
            shutil.rmtree(tmp, ignore_errors=True)  # sockets and logs; kept after a failure to debug it


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray's and Optuna's loggers and warnings off for the block (trial failures are reported by us)."""
    import optuna

    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    optuna_level = optuna.logging.get_verbosity()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            optuna.logging.set_verbosity(optuna_level)
