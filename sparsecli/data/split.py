"""Stratified splits and standardisation, deterministic from the seed."""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, fractions: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays, one per fraction (the first takes the remainder), each class split alike."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        counts = [int(round(f * len(members))) for f in fractions[1:]]
        start = len(members) - sum(counts)
        parts[0].append(members[:start])
        for i, count in enumerate(counts, start=1):
            parts[i].append(members[start:start + count])
            start += count
    return [np.sort(np.concatenate(p)) for p in parts]


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean, unit variance per feature, fitted on the training split only."""
    mean, std = feature_stats(train)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def feature_stats(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training split (std 0 -> 1), as ``standardize`` applies them."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return mean, std
