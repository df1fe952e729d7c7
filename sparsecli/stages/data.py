"""The ``data`` stage: load a source, split it (stratified, from the seed), standardise, save.

Writes ``data/{train,val,test}.npz`` (arrays ``x``, ``y``) and ``data/meta.json``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sparsecli.atomic import json_text, write_all
from sparsecli.data import load_source
from sparsecli.data.split import standardize, stratified_split
from sparsecli.errors import InputFileError
from sparsecli.params import Params

SPLITS = ("train", "val", "test")


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    out = {split: workdir / "data" / f"{split}.npz" for split in SPLITS}
    out["meta"] = workdir / "data" / "meta.json"
    return out


def run(params: Params, workdir: Path = Path(".")) -> dict:
    data = params.data
    x, y, image_shape = load_source(data, params.seed)
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputFileError(f"data source {data.source}: found {len(classes)} class; need at least 2")
    rng = np.random.default_rng(params.seed)
    if data.max_samples is not None and data.max_samples < len(y):
        keep = stratified_split(y, [0.0, data.max_samples / len(y)], rng)[1]
        x, y = x[keep], y[keep]
    train, val, test = stratified_split(y, [0.0, data.val_fraction, data.test_fraction], rng)
    if min(len(train), len(val), len(test)) == 0:
        raise InputFileError(
            f"data source {data.source}: {len(y)} samples are too few for the split; "
            "use more data or larger data.val_fraction/test_fraction"
        )
    xs = [x[train], x[val], x[test]]
    if data.standardize:
        xs = standardize(*xs)
    arrays = {split: (xs[i].astype(np.float32), y[idx].astype(np.int64)) for i, (split, idx) in enumerate(zip(SPLITS, (train, val, test)))}

    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(arrays[split][0].tobytes())
        digest.update(arrays[split][1].tobytes())
    meta = {
        "source": data.source,
        "features": int(x.shape[1]),
        "classes": int(len(classes)),
        "class_names": [str(c) for c in classes],
        "image_shape": list(image_shape) if image_shape else None,
        "sizes": {split: int(len(arrays[split][1])) for split in SPLITS},
        "standardized": data.standardize,
        "sha256": digest.hexdigest(),
    }
    paths = outputs(workdir)
    write_all({paths[split]: _npz_writer(*arrays[split]) for split in SPLITS} | {paths["meta"]: lambda tmp: tmp.write_text(json_text(meta))})
    return {"samples": int(len(y)), "features": meta["features"], "classes": meta["classes"], **{f"{k}_size": v for k, v in meta["sizes"].items()}}


def _npz_writer(x: np.ndarray, y: np.ndarray):
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append .npz to a path
            np.savez(handle, x=x, y=y)

    return write
