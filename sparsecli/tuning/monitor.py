"""Progress of a tuning run: one line per finished trial and a live count, through ``Progress``.

Ray pickles its callbacks with the experiment (to resume it) and a ``Progress`` writes to a
terminal, which cannot be pickled; so the callback holds only a key, and the live
``Progress`` is looked up by that key while a run is attached (``attach``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray.tune import Callback

from sparsecli.progress import Progress
from sparsecli.tune_metrics import NAMES
from sparsecli.tuning.trainable import DIVERGED_KEY

_ATTACHED: dict[str, Progress] = {}
SHOWN = NAMES


@contextmanager
def attach(key: str, progress: Progress) -> Iterator[None]:
    _ATTACHED[key] = progress
    try:
        yield
    finally:
        _ATTACHED.pop(key, None)


class TrialMonitor(Callback):
    def __init__(self, key: str, task: str, total: int, full_epochs: int, extra: tuple[str, ...] = ()):
        self.key, self.task, self.total, self.full_epochs = key, task, total, full_epochs
        self.extra = extra  # the hardware objectives' names, shown after the model metrics

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if DIVERGED_KEY in result:
            self._report(trials, trial, f"{trial_name(trial)} failed: diverged: {result[DIVERGED_KEY]}")
        else:
            self._report(trials, trial, f"{trial_name(trial)} {describe(result, self.full_epochs, self.extra)}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._report(trials, trial, f"{trial_name(trial)} failed: {error_text(trial_error(trial))}")

    def _report(self, trials, trial, line: str) -> None:
        # Ray calls back before it sets the trial's final status
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial) + 1
        _ATTACHED.get(self.key, Progress()).count(self.task, done, max(self.total, len(trials)), line)


def trial_error(trial) -> BaseException | str | None:
    """The exception of a failed trial; at callback time Ray has written it only to the driver's copy."""
    from ray import cloudpickle

    path = trial.pickled_error_file
    if path and Path(path).is_file():
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    return trial.get_pickled_error() or trial.get_error()


def error_text(error: BaseException | str | None) -> str:
    """One line for a trial's error: the trainable's own exception, not Ray's wrapping of it."""
    from sparsecli.errors import ParamsError

    cause = getattr(error, "cause", None) or error
    if cause is None:
        return "unknown error (see the trial's error.txt under tune/ray)"
    if isinstance(cause, ParamsError):
        return f"invalid params: {cause}"
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if isinstance(cause, str) else f"{type(cause).__name__}: {last}".rstrip(": ")


def describe(result: dict, full_epochs: int, extra: tuple[str, ...] = ()) -> str:
    epoch = result.get("epoch", 0)
    status = "full" if epoch >= full_epochs else "stopped"
    shown = "  ".join(f"{k} {result[k]:.4f}" for k in SHOWN if k in result)
    shown += "".join(f"  {k} {result[k]:.4g}" for k in extra if k in result)
    return f"{status} at epoch {epoch}/{full_epochs} ({result.get('wall_seconds', 0):.1f} s)  {shown}"


class TrialNamer:
    """Trial (and folder) names: ``<prefix>_<creation number>`` (searchers count from 1), stable across resumes."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self, trial) -> str:
        return f"{self.prefix}_{creation_number(trial):03d}"


def creation_number(trial) -> int:
    """The searcher's count when Ray created the trial (1, 2, ...: the head of its experiment tag),
    kept across resumes, which re-add trials in another order."""
    return int(trial.experiment_tag.split("_", 1)[0])


def trial_name(trial) -> str:
    return trial.custom_trial_name or str(trial)
