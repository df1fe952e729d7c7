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
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def aside(path: Path) -> Path:
    """A fixed folder beside ``path`` to build it in (``runs/.train.partial`` for ``runs/train``), emptied."""
    path = Path(path)
    folder = path.with_name(f".{path.name}.partial")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def replace_dir(new: Path, path: Path) -> None:
    """Rename the finished folder ``new`` to ``path``; the old ``path`` goes only once the new one is in place."""
    new, path = Path(new), Path(path)
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.rmdir(old)
        os.replace(path, old)
    os.replace(new, path)
    if old is not None:
        shutil.rmtree(old)


def check_writable(paths) -> None:
    """Before a stage starts: every output can be written where it goes. Creates nothing.

    Raises OutputPathError naming the first path that cannot be: a parent that is a file, an
    output path taken by something of the other kind, or a folder this user cannot write to.
    """
    from sparsecli.errors import OutputPathError

    for path in map(Path, paths):
        if path.exists():
            folder = path.parent
            is_folder = not path.suffix  # outputs with a suffix are files (train.json), the others folders
            if path.is_dir() != is_folder:
                raise OutputPathError(f"{path}: exists and is a {'file' if is_folder else 'folder'}, but this stage "
                                      f"writes a {'folder' if is_folder else 'file'} there; move it away")
            if not os.access(path, os.W_OK):
                raise OutputPathError(f"{path}: exists and is not writable; fix its permissions or remove it")
        else:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(f"{folder}: is a file, but {path} goes inside a folder of that name; move it away")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"{folder}: not writable, so {path} cannot be written; fix its permissions")


@contextmanager
def stage_lock(workdir: Path, stage: str) -> Iterator[None]:
    """Hold a lock on ``stage``'s outputs in ``workdir`` while it runs; a second run there refuses.

    The lock is an ``flock`` on a file in the temp dir named by the folder's absolute path (the
    project itself is not touched), so it goes with the process: a killed run leaves no stale
    lock. The file keeps the holder's pid for the message.
    """
    import fcntl
    import hashlib

    from sparsecli.errors import LockedError

    folder = Path(workdir).resolve()
    locks = Path(tempfile.gettempdir()) / "sparsecli-locks"
    if not locks.is_dir():
        locks.mkdir(exist_ok=True)
        os.chmod(locks, 0o1777)  # shared by every user, like /tmp
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    path = locks / f"{key}-{stage.replace(' ', '_')}.lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise LockedError(f"{folder}: another `sparsecli {stage}` (pid {holder}) is writing this stage's outputs "
                              "here; wait for it to finish or stop it, then rerun") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
