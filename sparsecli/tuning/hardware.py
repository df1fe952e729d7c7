"""Hardware objectives of a tuning run: resolved once before Ray starts, computed per trial.

``resolve`` reads each hardware objective's target file (``hardware/<target>.yaml``), checks
what it asks of the target (the precision, the CPU engine's needs) with one-line errors naming
the ``tune.objectives.N`` key, and calibrates a CPU target with ``calibrated:`` fields once,
as ``hardware-map`` does, so every trial is costed on the same target.

``measure`` computes them for one trial's model. Predicted metrics go through the functions
``hardware-map`` uses: ``network_from_model`` (weight densities from the masks, activation
densities measured on the given split, here the val split; the stage uses the test split)
and ``predict`` on the target, mode, batch, precision and reuse policy; so the selected
trial's figures and the stage's differ only by that split. ``cpu_latency_us`` times the
model with the sparse engine of ``sparsecli.kernels``, as the benchmark stage does
(``measure.bench_network``: checked against dense torch first, then interleaved repetitions,
median; 1 thread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sparsecli.errors import ParamsError, SparsecliError
from sparsecli.params import Params
from sparsecli.progress import Progress
from sparsecli.tune_metrics import HARDWARE, MEASURED


TIMED_REPEATS = 15  # cpu_latency_us: fewest timed samples per measurement (median)


@dataclass(frozen=True)
class HardwareObjective:
    """One hardware objective, ready to compute in a trial (picklable: Ray ships it to the workers)."""

    index: int  # in tune.objectives, for messages
    name: str  # the result key
    metric: str
    target: object  # a loaded sparsecli.targets Target (calibrated where the file asks)
    execution: str
    batch: int
    precision: str
    reuse: object  # hardware_map.reuse_factor
    quantile: float  # hardware_map.active_quantile
    repeats: int  # cpu_latency_us: timed samples (benchmark.repeats, at least TIMED_REPEATS)


def resolve(params: Params, hardware_dir: Path, progress: Progress | None = None) -> list[HardwareObjective]:
    """The hardware objectives of ``params.tune.objectives``; ParamsError naming the key if one is bad."""
    from sparsecli.targets import calibrate, load_target
    from sparsecli.targets.schema import CpuTarget
    from sparsecli.targets.structures import check_space

    progress = progress or Progress()
    hp = params.hardware_map
    loaded: dict[str, object] = {}
    checked = []
    for i, objective in enumerate(params.tune.objectives):
        if not objective.hardware:
            continue
        where = f"tune.objectives.{i}"
        name = objective.target
        if name not in loaded:
            path = Path(hardware_dir) / f"{name}.yaml"
            if not path.is_file():
                available = sorted(p.stem for p in Path(hardware_dir).glob("*.yaml"))
                raise ParamsError(f"{where}.target = {name!r}: no {path}; available: {', '.join(available) or 'none'}")
            loaded[name] = load_target(path)
            check_space(params.tune.space, loaded[name], "tune.space")
        target = loaded[name]
        precision = _precision(objective, target, hp.precision, where)
        if objective.metric in MEASURED:
            _check_engine(params, objective, target, precision, where)
        checked.append((i, objective, precision))
    layers = len(params.model.layers) + 1 + (len(params.model.conv) if params.model.arch == "cnn" else 0)
    if isinstance(hp.reuse_factor, list) and checked and len(hp.reuse_factor) != layers:
        raise ParamsError(f"hardware_map.reuse_factor = {hp.reuse_factor}: {len(hp.reuse_factor)} factors for "
                          f"{layers} weight layers; give one per layer or use auto (tune.objectives cost trials with it)")
    predicted = {o.target for _, o, _ in checked if o.metric not in MEASURED}
    for name, target in loaded.items():  # every check passed: now the slow part (cpu_latency_us needs none)
        if isinstance(target, CpuTarget) and target.calibrated and name in predicted:
            progress.message(f"tune: calibrating {name} by microbenchmark (best of {hp.calibration_repeats}), "
                             "as hardware-map does")
            loaded[name] = calibrate(target, repeats=hp.calibration_repeats, seed=params.seed)
    # a trial's timing runs beside other trials: at least TIMED_REPEATS samples (each is ~10 calls, well under a second)
    repeats = max(params.benchmark.repeats, TIMED_REPEATS)
    return [HardwareObjective(i, o.name, o.metric, loaded[o.target], o.execution, o.batch, precision, hp.reuse_factor,
                              hp.active_quantile, repeats) for i, o, precision in checked]


def _precision(objective, target, by_target: dict, where: str) -> str:
    """The objective's precision, else hardware_map.precision's for the target (name, then kind), else its first."""
    supported = list(target.precisions)
    if objective.precision is not None:
        if objective.precision not in supported:
            raise ParamsError(f"{where}.precision = {objective.precision!r}: {target.name} supports "
                              f"{', '.join(supported)} (see {target.source}); pick one of them")
        return objective.precision
    from sparsecli.targets.predict import precision_key

    key = precision_key(target, by_target)
    if key is None:
        return supported[0]
    if by_target[key] not in supported:
        raise ParamsError(f"{where}.precision = null takes hardware_map.precision.{key} = {by_target[key]!r}, but "
                          f"{target.name} supports {', '.join(supported)}; set {where}.precision to one of them")
    return by_target[key]


def _check_engine(params: Params, objective, target, precision: str, where: str) -> None:
    """What the sparse CPU engine (sparsecli.kernels) can run: a cpu target, fp32, kWTA hidden layers."""
    if target.kind != "cpu":
        raise ParamsError(f"{where}.target = {target.name!r}: {objective.metric} is measured on this machine's CPU; "
                          "name a cpu target (cpu-local), or use latency_us for a prediction on this one")
    if precision != "fp32":
        raise ParamsError(f"{where}.precision = {precision!r}: the CPU engine of {objective.metric} runs fp32; "
                          "set it to fp32")
    relu = [i for i, layer in enumerate(params.model.layers) if layer.kwta is None]
    if relu:
        raise ParamsError(f"{where}.execution = {objective.execution!r}: the CPU engine of {objective.metric} runs "
                          f"networks with kWTA in every hidden layer, model.layers.{relu[0]} has none (ReLU); "
                          "give it a kwta block or use latency_us on cpu-local (a prediction)")


def check_fits_possible(params: Params, meta: dict, objectives: list[HardwareObjective]) -> None:
    """ParamsError for a ``fits`` objective no configuration can meet, before any trial runs.

    The cheapest configuration of an MLP has one non-zero weight per layer and one active input;
    if ``predict`` finds that it does not fit (the fixed cost of a layer alone, say), no trial can.
    Units searched in tune.space count at their ``low``. CNNs are judged after the search only.
    """
    if params.model.arch != "mlp":
        return
    from sparsecli.targets import LayerShape, predict

    units = [layer.units for layer in params.model.layers]
    for dim in params.tune.space:
        parts = dim.key.split(".")
        if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] == "units" and dim.low is not None:
            units[int(parts[2])] = int(dim.low)
    sizes = [int(meta["features"]), *units, int(meta["classes"])]
    names = [f"layers.{i}" for i in range(len(units))] + ["head"]
    sparsest = [LayerShape(name, n_in, n_out, weight_density=1 / (n_in * n_out), input_density=1 / n_in,
                           input_density_sized=1 / n_in, stall_rate=0.0)
                for name, n_in, n_out in zip(names, sizes, sizes[1:])]
    for o in objectives:
        if o.metric != "fits":
            continue
        totals = predict(sparsest, o.target, (o.execution,), (o.batch,), o.precision, o.reuse)["modes"][o.execution][
            str(o.batch)]["totals"]
        if not totals["fits"]:
            raise ParamsError(
                f"tune.objectives.{o.index} ({o.name}): no configuration fits on {o.target.name}: even the sparsest "
                f"network of this architecture (one weight per layer) exceeds its {totals['binding_resource']} "
                f"(see {o.target.source}); pick a larger target, or fewer layers")


# ---------------------------------------------------------------- per trial


def measure(model, x, objectives: list[HardwareObjective]) -> dict[str, float]:
    """Each objective's value for ``model``, activation densities measured on ``x`` (the val split)."""
    out: dict[str, float] = {}
    predicted = [o for o in objectives if o.metric not in MEASURED]
    if predicted:
        from sparsecli.targets import network_from_model, predict

        networks: dict[float, list] = {}
        for o in predicted:
            if o.quantile not in networks:
                networks[o.quantile] = network_from_model(model, x, quantile=o.quantile)
            result = predict(networks[o.quantile], o.target, (o.execution,), (o.batch,), o.precision, o.reuse)
            out[o.name] = value(o.metric, result["modes"][o.execution][str(o.batch)]["totals"])
    timed = [o for o in objectives if o.metric in MEASURED]
    if timed:
        out |= _timed(model, x, timed)
    return out


def value(metric: str, totals: dict) -> float:
    """An objective's value from a cost model's totals (``predict``'s ``modes[mode][batch]["totals"]``).

    A design that does not fit has no latency: inf latency and energy, 0 throughput.
    """
    if metric == "fits":
        return 1.0 if totals["fits"] else 0.0
    if metric == "latency_us":
        return totals["latency_s"] * 1e6 if totals["latency_s"] is not None else math.inf
    if metric == "energy_uj":
        return totals["energy_j"] * 1e6 if totals["energy_j"] is not None else math.inf
    if metric == "throughput_ips":
        return float(totals["throughput_ips"] or 0.0)
    raise ValueError(f"{metric} is not a predicted hardware metric (one of {', '.join(HARDWARE)})")


def _timed(model, x, objectives: list[HardwareObjective]) -> dict[str, float]:
    from sparsecli.kernels.from_model import model_network
    from sparsecli.kernels.measure import INNER, bench_network, tile_batch
    from sparsecli.kernels.timing import threads_restored

    net = model_network(model)
    rows = x.numpy().reshape(len(x), -1)
    out = {}
    with threads_restored():
        for batch in sorted({o.batch for o in objectives}):
            failures: list[str] = []
            repeats = max(o.repeats for o in objectives if o.batch == batch)
            timed = bench_network(net, tile_batch(rows, batch), 1, repeats, INNER.get(batch, max(1, 64 // batch)),
                                  failures)
            for o in (o for o in objectives if o.batch == batch):
                stats = timed["times"].get(o.execution)
                if stats is None:
                    raise SparsecliError(f"{o.name}: the {o.execution} engine's output disagrees with dense torch, "
                                         f"so it has no timing ({'; '.join(failures)})")
                out[o.name] = stats.median_s * 1e6
    return out
