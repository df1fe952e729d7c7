"""Write outputs atomically: to a temporary file beside the target, then rename into place.

A failure half-way never leaves a half-written output, and an old output stays intact
until the new one is complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def _temp_beside(path: Path) -> Path:
    """A temporary file in the target's folder (so the rename is atomic), with normal permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(tmp)


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with staged(path) as tmp:
        tmp.write_text(text)


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV with a header; keys not in ``columns`` are left out."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_json(path: Path, data: dict) -> None:
    write_text(path, json_text(data))


def write_all(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write several outputs; none is renamed into place unless every one was written."""
    temps: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            path = Path(path)
            temps[path] = _temp_beside(path)
            write(temps[path])
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()


@contextmanager
def staged_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
