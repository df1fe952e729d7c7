"""MNIST-format IDX files (plain or .gz): the loader for MNIST and Fashion-MNIST.

Format: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
then each dimension as a big-endian int32, then the data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from sparsecli.errors import InputFileError
from sparsecli.params import IdxParams

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputFileError(f"{path}: IDX file not found; check data.path and data.idx file names")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise InputFileError(f"{path}: cannot decompress ({e}); the file is corrupted, fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise InputFileError(f"{path}: not an IDX file (wrong magic number); expected MNIST-format data")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputFileError(f"{path}: truncated IDX header; fetch the file again")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InputFileError(
            f"{path}: truncated or oversized IDX data ({len(raw) - header} bytes, header says {expected}); "
            "fetch the file again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def fetch(base_url: str, name: str, raw_dir: Path, sha256: str | None, role: str) -> Path:
    """Download ``base_url/name`` into raw_dir once; later runs reuse it if the checksum matches."""
    target = raw_dir / name
    if target.is_file() and (sha256 is None or _sha256(target) == sha256):
        return target
    url = base_url.rstrip("/") + "/" + name
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            out.write(response.read())
        if sha256 is not None and _sha256(Path(tmp)) != sha256:
            raise InputFileError(
                f"{url}: SHA-256 does not match data.idx.sha256.{role}; the download is corrupted or the checksum is wrong"
            )
        os.replace(tmp, target)
    except OSError as e:
        raise InputFileError(f"{url}: cannot fetch ({e}); check data.idx.base_url") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_idx(path: str | None, idx: IdxParams, raw_dir: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Images and labels of the train and test files together (sparsecli makes its own split)."""
    roles = ("train_images", "train_labels", "test_images", "test_labels")
    if path:
        files = [Path(path) / getattr(idx, role) for role in roles]
    else:
        files = [fetch(idx.base_url, getattr(idx, role), Path(raw_dir), getattr(idx.sha256, role), role)
                 for role in roles]
    images, labels = [], []
    for image_file, label_file in (files[:2], files[2:]):
        x, y = read_idx(image_file), read_idx(label_file)
        if x.ndim < 2 or y.ndim != 1:
            raise InputFileError(f"{image_file}: expected images [N, H, W] and labels [N]; got {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise InputFileError(f"{label_file}: {len(y)} labels for {len(x)} images in {image_file.name}; use matching files")
        images.append(x)
        labels.append(y)
    x = np.concatenate(images).astype(np.float32) / 255.0
    shape = (1, *x.shape[1:3]) if x.ndim == 3 else tuple(x.shape[1:])
    return x.reshape(len(x), -1), np.concatenate(labels).astype(np.int64), shape
