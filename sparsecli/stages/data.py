"""The ``data`` stage: load a source, split it (stratified, from the seed), standardise, save.

Writes ``data/{train,val,test}.npz`` (arrays ``x``, ``y``) and ``data/meta.json``; for
``speech_commands`` with ``train.noise.kind: waveform`` also ``data/test_noise.npz`` (the test
features of each noisy waveform set: ``x_0``, ``x_1``, ... for ``levels``). Images are resized
to ``data.image_size`` first when it is set. ``meta.json`` keeps the raw training inputs'
mean and std over all features (``input_stats``, the paper's white value is mean + 2 std) and
the per-feature standardisation (``standardization``), so a noise protocol can corrupt raw
inputs and standardise them exactly as this stage does.

``speech_commands`` keeps the dataset's own split (validation_list.txt, testing_list.txt), so
``val_fraction``, ``test_fraction`` and ``max_samples`` do not apply (``speech.max_per_word`` does).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sparsecli.atomic import json_text, write_all
from sparsecli.data import load_source
from sparsecli.data.layout import SPLITS, meta_path, noise_sets_path, split_path
from sparsecli.data.split import feature_stats, stratified_split
from sparsecli.errors import InputFileError, ParamsError
from sparsecli.params import Params


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {**{split: split_path(split, workdir) for split in SPLITS}, "meta": meta_path(workdir)}


def run(params: Params, workdir: Path = Path(".")) -> dict:
    data = params.data
    noisy_raw: dict[float, np.ndarray] = {}
    if data.source == "speech_commands":
        raw, y_all, image_shape, noisy_raw = _speech(params)
        classes, y_all = np.unique(y_all, return_inverse=True)
        sizes = [len(raw[s]) for s in SPLITS]
        bounds = np.cumsum([0, *sizes])
        parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
        x = np.concatenate([raw[s] for s in SPLITS])
        y = y_all
    else:
        x, y, image_shape = load_source(data, params.seed)
        if data.image_size is not None:
            x, image_shape = _resize(x, image_shape, data.image_size, data.source)
        classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputFileError(f"data source {data.source}: found {len(classes)} class; need at least 2")
    if data.source != "speech_commands":
        rng = np.random.default_rng(params.seed)
        if data.max_samples is not None and data.max_samples < len(y):
            keep = stratified_split(y, [0.0, data.max_samples / len(y)], rng)[1]
            x, y = x[keep], y[keep]
        parts = stratified_split(y, [0.0, data.val_fraction, data.test_fraction], rng)
    train, val, test = parts
    if min(len(train), len(val), len(test)) == 0:
        raise InputFileError(
            f"data source {data.source}: {len(y)} samples are too few for the split; "
            "use more data or larger data.val_fraction/test_fraction"
        )
    xs = [x[train], x[val], x[test]]
    mean, std = feature_stats(xs[0])
    if data.standardize_scope == "global":
        mean, std = np.full_like(mean, xs[0].mean()), np.full_like(std, xs[0].std() or 1.0)
    input_stats = {"mean": float(xs[0].mean()), "std": float(xs[0].std())}
    noisy_sets = list(noisy_raw.values())
    if data.standardize:
        xs = [((a - mean) / std).astype(np.float32) for a in xs]
        noisy_sets = [((a - mean) / std).astype(np.float32) for a in noisy_sets]
    arrays = {split: (xs[i].astype(np.float32), y[idx].astype(np.int64)) for i, (split, idx) in enumerate(zip(SPLITS, (train, val, test)))}

    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(arrays[split][0].tobytes())
        digest.update(arrays[split][1].tobytes())
    for noisy in noisy_sets:
        digest.update(noisy.tobytes())
    meta = {
        "source": data.source,
        "features": int(x.shape[1]),
        "classes": int(len(classes)),
        "class_names": [str(c) for c in classes],
        "image_shape": list(image_shape) if image_shape else None,
        "sizes": {split: int(len(arrays[split][1])) for split in SPLITS},
        "standardized": data.standardize,
        "standardize_scope": data.standardize_scope if data.standardize else None,
        "input_stats": input_stats,
        "standardization": {"mean": mean.tolist(), "std": std.tolist()} if data.standardize else None,
        "noise_levels": list(noisy_raw) if noisy_raw else None,
        "sha256": digest.hexdigest(),
    }
    paths = outputs(workdir)
    writers = {paths[split]: _npz_writer(*arrays[split]) for split in SPLITS}
    writers[paths["meta"]] = lambda tmp: tmp.write_text(json_text(meta))
    if noisy_raw:
        writers[noise_sets_path(workdir)] = _noise_writer(list(noisy_raw), noisy_sets)
    write_all(writers)
    return {"samples": int(len(y)), "features": meta["features"], "classes": meta["classes"], **{f"{k}_size": v for k, v in meta["sizes"].items()}}


def _speech(params: Params):
    """The Speech Commands splits as raw features, their labels, the image shape, and noisy test sets."""
    from sparsecli.data import speech

    data = params.data
    if data.max_samples is not None:
        raise ParamsError("data.max_samples: does not apply to speech_commands (the dataset has its own split); "
                          "use data.speech.max_per_word")
    clips = speech.load_speech(data)
    raw = {split: speech.features(clips.waves[split], data.speech.features) for split in SPLITS}
    labels = np.concatenate([clips.labels[split] for split in SPLITS])
    noisy = {}
    if params.train.noise.kind == "waveform":
        for i, level in enumerate(params.train.noise.levels):
            rng = np.random.default_rng([params.seed, i])
            noisy[level] = speech.features(speech.noisy(clips.waves["test"], level, rng), data.speech.features)
    return raw, labels, speech.IMAGE_SHAPE, noisy


def _resize(x: np.ndarray, image_shape, size: int, source: str):
    """Images [N, C*H*W] -> [N, C*size*size], bilinear (scipy.ndimage.zoom, order 1)."""
    from scipy.ndimage import zoom

    if not image_shape:
        raise ParamsError(f"data.image_size = {size}: the {source} data are not images; set data.image_size: null")
    c, h, w = image_shape
    images = x.reshape(len(x), c, h, w)
    out = zoom(images, (1, 1, size / h, size / w), order=1, grid_mode=True, mode="grid-constant")
    return out.reshape(len(x), -1).astype(np.float32), (c, size, size)


def _noise_writer(levels: list[float], sets: list[np.ndarray]):
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, levels=np.array(levels, dtype=np.float64), **{f"x_{i}": a for i, a in enumerate(sets)})

    return write


def _npz_writer(x: np.ndarray, y: np.ndarray):
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append .npz to a path
            np.savez(handle, x=x, y=y)

    return write
