"""Save and load a model with its masks, kWTA state and the params that built it.

A checkpoint is a plain dict loaded with ``torch.load(weights_only=True)`` (no pickled
code): the params and the data shape travel with the weights, so a model is rebuilt
from the file alone. Every stage that reads a model takes any checkpoint of this format.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from sparsecli.atomic import staged
from sparsecli.errors import CheckpointError, ParamsError
from sparsecli.params import Params, validate

FORMAT = "sparsecli-checkpoint"
VERSION = 1
MODEL_META_KEYS = ("source", "features", "classes", "image_shape")


def save(path: Path, model: nn.Module, params: Params, meta: dict, **extra) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "params": params.model_dump(),
        "meta": {k: meta.get(k) for k in MODEL_META_KEYS},
        "state_dict": model.state_dict(),
        **extra,
    }
    with staged(Path(path)) as tmp:
        torch.save(payload, tmp)


def scalars(metrics: dict) -> dict:
    """The plain-number metrics, as a checkpoint keeps them beside the weights."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def read(path: Path) -> dict:
    """The raw payload, checked for format; raises CheckpointError with a fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the stage that writes it first (e.g. `sparsecli train`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{path}: corrupted or not a sparsecli checkpoint; delete it and rerun the stage that writes it") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sparsecli checkpoint; rerun the stage that writes it")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not {VERSION}; rerun the stage that writes it")
    return payload


def load(path: Path) -> tuple[nn.Module, Params, dict]:
    """(model in eval mode, the params that built it, the whole payload)."""
    from sparsecli.models import build_model

    payload = read(path)
    try:
        params = validate(payload["params"], f"{path} (stored params)")
    except ParamsError as e:
        raise CheckpointError(str(e) + "; the checkpoint was written by another sparsecli version") from None
    model = build_model(params, payload["meta"])
    restore(model, payload["state_dict"], path)
    model.eval()
    return model, params, payload


def restore(model: nn.Module, state_dict: dict, path: Path) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match the model its params describe; rerun the stage that writes it") from None
