"""User files: ``.npz`` with arrays ``x`` and ``y``, or ``.csv`` with a header and a label column."""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from sparsecli.errors import InputFileError


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None]:
    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"{file}: file not found; check data.path")
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise InputFileError(f"{file}: missing array(s) {', '.join(sorted(missing))}; save x (features) and y (labels)")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise InputFileError(f"{file}: not a readable .npz file; save it with numpy.savez(path, x=..., y=...)") from None
    if len(x) != len(y):
        raise InputFileError(f"{file}: {len(y)} labels for {len(x)} samples; x and y must have the same length")
    if not np.issubdtype(x.dtype, np.number):
        raise InputFileError(f"{file}: x is not numeric ({x.dtype}); store numbers")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
        raise InputFileError(f"{file}: x has NaN or infinite values (first in sample {bad}); fill in or drop them")
    image_shape = None
    if x.ndim == 3:
        image_shape = (1, x.shape[1], x.shape[2])
    elif x.ndim == 4:
        image_shape = tuple(x.shape[1:])
    return x.reshape(len(x), -1).astype(np.float32), y.reshape(-1), image_shape


def load_csv(path: str, label_column: str) -> tuple[np.ndarray, np.ndarray, None]:
    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"{file}: file not found; check data.path")
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as e:
        line = file.read_bytes()[: e.start].count(b"\n") + 1
        raise InputFileError(f"{file}: not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}); "
                             "save the CSV as UTF-8") from None
    except csv.Error as e:
        raise InputFileError(f"{file}: not a readable CSV file ({e}); check the quoting") from None
    if len(rows) < 2:
        raise InputFileError(f"{file}: needs a header row and at least one data row")
    header = rows[0]
    if label_column not in header:
        raise InputFileError(f"{file}: no column {label_column!r}; set data.label_column to one of: {', '.join(header)}")
    label_at = header.index(label_column)
    features, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputFileError(f"{file}: line {line} has {len(row)} fields, the header has {len(header)}")
        labels.append(row[label_at])
        values = []
        for i, text in enumerate(row):
            if i == label_at:
                continue
            try:
                value = float(text)
            except ValueError:
                raise InputFileError(f"{file}: line {line}, column {header[i]!r}: {text!r} is not a number; "
                                     f"every column but {label_column!r} must be a number") from None
            if not math.isfinite(value):
                raise InputFileError(f"{file}: line {line}, column {header[i]!r}: {text!r} is not a finite number; "
                                     "fill in or drop the missing values") from None
            values.append(value)
        features.append(values)
    return np.asarray(features, dtype=np.float32), np.asarray(labels), None
