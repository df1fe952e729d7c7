"""The one way library code reports progress: a ``Progress`` object the caller passes in.

The CLI picks the kind: a rich progress bar on a terminal, one summary line per epoch
when stdout is not a terminal, nothing with ``-q``. Library code never prints directly.
"""

from __future__ import annotations

import sys


class Progress:
    """Silent by default; subclasses show what they want."""

    def start(self, task: str, epochs: int, steps: int) -> None: ...

    def step(self, loss: float) -> None: ...

    def epoch(self, record: dict) -> None: ...

    def finish(self) -> None: ...

    def message(self, text: str) -> None: ...

    def count(self, task: str, done: int, total: int, line: str) -> None:
        """One item of ``total`` finished (e.g. a tune trial): its line, and the live count."""


def _summary(record: dict) -> str:
    parts = [f"epoch {record['epoch']:>3}"]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    return "  ".join(parts)


class LineProgress(Progress):
    """One line per epoch, for logs and pipes (e.g. under ``dvc repro``)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.task = ""

    def start(self, task: str, epochs: int, steps: int) -> None:
        self.task = task

    def epoch(self, record: dict) -> None:
        print(f"{self.task}: {_summary(record)}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def count(self, task: str, done: int, total: int, line: str) -> None:
        width = len(str(total))
        print(f"{task}: [{done:>{width}}/{total}] {line}", file=self.stream, flush=True)


class BarProgress(Progress):
    """A rich progress bar per epoch with the running loss, and a summary line per epoch."""

    def __init__(self):
        from rich.console import Console

        self.console = Console()
        self._bar = None

    def start(self, task: str, epochs: int, steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.task, self.epochs, self.steps = task, epochs, steps
        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                        console=self.console, transient=True)
        self._bar.start()
        self._id = None
        self._epoch = 0

    def step(self, loss: float) -> None:
        if self._id is None:
            self._epoch += 1
            self._id = self._bar.add_task(f"{self.task} {self._epoch}/{self.epochs}", total=self.steps, loss=loss)
        self._bar.update(self._id, advance=1, loss=loss)

    def epoch(self, record: dict) -> None:
        if self._id is not None:
            self._bar.remove_task(self._id)
            self._id = None
        self._epoch = record["epoch"]
        self.console.print(f"{self.task}: {_summary(record)}")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def count(self, task: str, done: int, total: int, line: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        if self._bar is None:
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.console, transient=True)
            self._bar.start()
            self._id = None
        if self._id is None:
            self._id = self._bar.add_task(task, total=total)
        self._bar.update(self._id, completed=done, total=total)
        self.console.print(f"{task}: {line}")
        if done >= total:
            self.finish()
