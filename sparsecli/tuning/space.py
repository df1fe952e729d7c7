"""The search space: params keys with distributions, checked before any trial runs.

A search-space key is any params key under a searchable section (the same dotted syntax
as ``dvc exp run -S``). It is valid when setting it in the params and validating them
succeeds, so a new params section or field is searchable without changes here. Before Ray
starts, each entry is probed at its low, high and middle (every value of a ``choice``), and
all entries together at their lows and at their highs; each probe is validated and the
model is built on the real data shape, so an impossible range fails in seconds, naming
its key, instead of in every trial.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from sparsecli.errors import ParamsError
from sparsecli.params import Params, SearchDim, set_key, validate

# Sections a trial may vary; data is fixed by the data stage, tune and seed by the run itself.
SEARCHABLE = ("model", "sparsity", "train")
# Keys the tuning run owns: epochs are the fidelity, and a trial must run exactly its epochs.
RESERVED = {
    "train.epochs": "epochs are the fidelity; set tune.min_epochs and tune.max_epochs instead",
    "train.early_stopping": "trials must run exactly the epochs the scheduler gives them",
}
_KEY_ERRORS = ("unknown key", "index out of range", "is a value, not a section")


def trial_params(base: dict, values: dict[str, Any]) -> Params:
    """``base`` (a params dict) with each dotted key set to its value, validated."""
    raw = copy.deepcopy(base)
    for key, value in values.items():
        set_key(raw, key, value, "tune trial")
    return validate(raw, "tune trial")


def check_space(params: Params, meta: dict) -> None:
    """Raise ParamsError, naming the ``tune.space`` entry, for anything a trial could not run."""
    from sparsecli.models import build_model

    space = params.tune.space
    if not space:
        raise ParamsError("tune.space: empty; add at least one entry, e.g. "
                          "{key: train.lr, dist: loguniform, low: 0.001, high: 0.1}")
    if params.train.early_stopping:
        raise ParamsError(f"train.early_stopping = {params.train.early_stopping}: "
                          f"{RESERVED['train.early_stopping']}; set train.early_stopping=0 to tune")
    base = params.model_dump()

    def probe(values: dict[str, Any], where: str, key_where: str) -> None:
        try:
            build_model(trial_params(base, values), meta)
        except ParamsError as e:
            detail = str(e).removeprefix("tune trial: ")
            if any(text in detail for text in _KEY_ERRORS):
                key = next(iter(values)) if len(values) == 1 else ""
                raise ParamsError(f"{key_where}: {detail.removeprefix(key + ': ')}") from None
            raise ParamsError(f"{where}: impossible: {detail}") from None

    for i, dim in enumerate(space):
        key_where = f"tune.space.{i}.key = {dim.key!r}"
        section = dim.key.split(".")[0]
        if section not in Params.model_fields:
            raise ParamsError(f"{key_where}: unknown key; allowed sections: {', '.join(_searchable())}")
        if section not in SEARCHABLE:
            raise ParamsError(f"{key_where}: only {', '.join(s + '.*' for s in _searchable())} keys can be searched")
        if dim.key in RESERVED:
            raise ParamsError(f"{key_where}: {RESERVED[dim.key]}")
        for name, value in probes(dim):
            probe({dim.key: value}, f"tune.space.{i}.{name} = {value!r}", key_where)
    for end in (0, -1):
        values = {dim.key: probes(dim)[end][1] for dim in space}
        which = "low" if end == 0 else "high"
        probe(values, f"tune.space: every entry at its {which} end together", "tune.space")


def _searchable() -> list[str]:
    return [s for s in SEARCHABLE if s in Params.model_fields]


def probes(dim: SearchDim) -> list[tuple[str, Any]]:
    """(name, value) pairs to validate: low, middle, high; or every choice."""
    if dim.dist == "choice":
        return [(f"values.{j}", v) for j, v in enumerate(dim.values)]
    if dim.dist == "int":
        low, high = int(dim.low), int(dim.high)
        return [("low", low), ("middle", (low + high) // 2), ("high", high)]
    middle = math.sqrt(dim.low * dim.high) if dim.dist == "loguniform" else (dim.low + dim.high) / 2
    return [("low", dim.low), ("middle", middle), ("high", dim.high)]


def optuna_space(space: list[SearchDim]) -> dict:
    """The space as Optuna distributions, keyed by the dotted params keys."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for dim in space:
        if dim.dist == "choice":
            out[dim.key] = CategoricalDistribution(dim.values)
        elif dim.dist == "int":
            out[dim.key] = IntDistribution(int(dim.low), int(dim.high))
        else:
            out[dim.key] = FloatDistribution(dim.low, dim.high, log=dim.dist == "loguniform")
    return out
