"""MNIST-format IDX files written by the tests themselves: scikit-learn's 8x8 digits, scaled up to 28x28.

Not the files the data stage writes: the template's data stage reads these as a user's MNIST download.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_digits_as_mnist(folder: Path, test_count: int = 297) -> Path:
    """28x28 uint8 images (each 8x8 pixel a 3x3 block, 2 pixels of border) and labels, gzipped IDX."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3)))  # 24x24
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28x28, like MNIST
    images = np.round(images * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": slice(0, len(labels) - test_count), "test": slice(len(labels) - test_count, None)}
    for part, (image_name, label_name) in NAMES.items():
        (folder / image_name).write_bytes(gzip.compress(_idx(images[parts[part]]), mtime=0))
        (folder / label_name).write_bytes(gzip.compress(_idx(labels[parts[part]]), mtime=0))
    return folder
