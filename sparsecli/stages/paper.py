"""The paper reproduction (template ``paper``): each network of ``paper.networks`` at each seed
of ``paper.seeds``, then one aggregate, after Ahmad & Scheinkman (2019), Table 1.

``paper-train --network NAME --seed N`` (a DVC ``matrix`` stage over network x seed) is the
``train`` stage on this project's data with the network's ``set`` keys applied over
``model``/``train``/``sparsity`` and ``seed: N``; its outputs (model, metrics, history,
TensorBoard run) go to ``paper/NAME/seedN/``. ``paper`` reads every run and writes
``metrics/paper.json``::

    {"networks": {NAME: {"kind": "dense"|"sparse", "seeds": n,
                         "test_accuracy": {"mean": m, "std": s}, "noise_score": {"mean": m, "std": s},
                         ...}}}

(std: the sample standard deviation over seeds, ddof 1; 0 for one seed). Each network also
has ``noise_score_fraction``, ``accuracy_by_noise`` (mean and std per level, for the noise
curves), ``noise_samples`` (test samples x levels: the score's maximum) and ``per_seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sparsecli.atomic import json_text, write_all
from sparsecli.errors import InputFileError, ParamsError
from sparsecli.params import Params, set_key, validate
from sparsecli.progress import Progress
from sparsecli.stages import train as train_stage


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {"metrics": workdir / "metrics" / "paper.json", "runs": workdir / "paper"}


def run_dir(workdir: Path, network: str, seed: int) -> Path:
    """Where ``paper-train`` puts one network x seed run (the matrix stage's output)."""
    return outputs(workdir)["runs"] / network / f"seed{seed}"


def train_outputs(network: str, seed: int, workdir: Path = Path(".")) -> list[Path]:
    """What one ``paper-train`` run writes: the train stage's outputs and resume file, in its run folder."""
    folder = run_dir(workdir, network, seed)
    return [*train_stage.outputs(folder).values(), train_stage.resume_path(folder)]


def network_params(params: Params, network: str, seed: int) -> Params:
    """The params of one run: the network's keys over this file's, and the seed."""
    if network not in params.paper.networks:
        choices = ", ".join(params.paper.networks) or "none: add paper.networks to params.yaml"
        raise ParamsError(f"--network {network}: not in paper.networks; choose one of: {choices}")
    if seed not in params.paper.seeds:
        raise ParamsError(f"--seed {seed}: not in paper.seeds {params.paper.seeds}; add it there "
                          "(the DVC matrix runs every seed listed)")
    raw = params.model_dump()
    for key, value in params.paper.networks[network].set.items():
        set_key(raw, key, value, f"paper.networks.{network}.set")
    raw["seed"] = seed
    return validate(raw, f"paper.networks.{network}")


def train(params: Params, network: str, seed: int, workdir: Path = Path("."),
          progress: Progress | None = None) -> dict:
    """Train one network at one seed (the ``paper-train`` matrix stage)."""
    run_params = network_params(params, network, seed)
    metrics = train_stage.run(run_params, workdir, progress, out_dir=run_dir(workdir, network, seed))
    return {"network": network, "seed": seed, **metrics}


def run(params: Params, workdir: Path = Path("."), progress: Progress | None = None) -> dict:
    """Aggregate every network x seed run into ``metrics/paper.json``."""
    if not params.paper.networks:
        raise ParamsError("paper.networks: empty; the paper stage needs at least one network (see the paper template)")
    networks = {}
    for name, network in params.paper.networks.items():
        runs = [_read_run(workdir, name, seed) for seed in params.paper.seeds]
        networks[name] = _aggregate(network.kind, runs, params.paper.seeds)
    result = {"networks": networks}
    write_all({outputs(workdir)["metrics"]: lambda tmp: tmp.write_text(json_text(result))})
    return result


def _read_run(workdir: Path, network: str, seed: int) -> dict:
    path = train_stage.outputs(run_dir(workdir, network, seed))["metrics"]
    if not path.is_file():
        raise InputFileError(f"{path}: not found; run `sparsecli paper-train --network {network} --seed {seed}` "
                             "(or `dvc repro`) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputFileError(f"{path}: not valid JSON; rerun `sparsecli paper-train --network {network} "
                             f"--seed {seed}`") from None


def _stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def _aggregate(kind: str, runs: list[dict], seeds: list[int]) -> dict:
    levels = list(runs[0]["accuracy_by_noise"])
    first = runs[0]
    samples = round(first["noise_score"] / first["noise_score_fraction"]) if first["noise_score_fraction"] else 0
    return {
        "kind": kind,
        "seeds": len(runs),
        "test_accuracy": _stats([r["test_accuracy"] for r in runs]),
        "noise_score": _stats([r["noise_score"] for r in runs]),
        "noise_score_fraction": _stats([r["noise_score_fraction"] for r in runs]),
        "noise_samples": samples,  # the score's maximum: test samples x noise levels
        "noise_kind": runs[0].get("noise_kind"),
        "accuracy_by_noise": {level: _stats([r["accuracy_by_noise"][level] for r in runs]) for level in levels},
        "weight_sparsity": _stats([r["weight_sparsity"] for r in runs]),
        "activation_sparsity": _stats([r["activation_sparsity"] for r in runs]),
        "macs_nonzero": _stats([r["macs_nonzero"] for r in runs]),
        "macs_dense": runs[0]["macs_dense"],
        "per_seed": {str(seed): {"test_accuracy": r["test_accuracy"], "noise_score": r["noise_score"]}
                     for seed, r in zip(seeds, runs)},
    }
