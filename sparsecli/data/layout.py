"""Where the ``data`` stage puts its outputs: the one place that names them (the stage writes
them; training, evaluation and every later stage read them)."""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")


def split_path(name: str, workdir: Path = Path(".")) -> Path:
    """One split's arrays (``x``, ``y``)."""
    return Path(workdir) / "data" / f"{name}.npz"


def meta_path(workdir: Path = Path(".")) -> Path:
    return Path(workdir) / "data" / "meta.json"


def noise_sets_path(workdir: Path = Path(".")) -> Path:
    """The noisy test sets (speech_commands with waveform noise only: a DVC output of that template's
    data stage, not of the default pipeline's)."""
    return Path(workdir) / "data" / "test_noise.npz"
