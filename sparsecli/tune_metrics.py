"""The one list of metrics a tune trial reports: names, threshold ranges, reference values.

Everything else takes the names from here: the params check (``tune.objectives.*.metric``
and its threshold range), the objectives and the hypervolume reference, the trainable's
report, the progress lines, the trial history and the CSV columns. Adding an objective is
one ``Metric`` entry below plus the trainable computing it
(``sparsecli.tuning.trainable.trial_metrics``; a test checks that it reports every name).

``METRICS`` are the model's own, reported by every trial under their names. ``HARDWARE``
metrics are computed only for the objectives that ask for them, on the objective's target
file (``hardware/<target>.yaml``), and reported under the objective's ``name`` (default
``<metric>:<target>``): predicted by the cost models ``hardware-map`` uses
(``sparsecli.targets.predict``) from the trial's masks and the activation density it
measures on the val split, or, for ``cpu_latency_us``, measured here with the sparse engine
of ``sparsecli.kernels``. ``settled`` says when a value is final after any epoch:
``"activations"`` means settled by the masks (fixed, or moved at a fixed count) and the
activation density, which is fixed only where every hidden layer has kWTA (k winners per
sample whatever the weights); a ReLU layer's density moves with training
(``settled`` below decides per run). ``cpu_latency_us`` is a
timing: its expectation is settled alike, each reading carries the machine's noise.

A leaf module (no imports from the package) outside ``tuning/``: ``sparsecli.params`` reads it, so every
stage depends on this file but not on the search code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    description: str
    low: float | None  # the range a threshold may take (None: unbounded)
    high: float | None
    worst: float  # the hypervolume reference of a ``max`` objective without threshold
    settled: bool | str  # its value after the first epoch is final, so a short trial already shows whether it meets
    # its threshold; "activations": only where the activation density is fixed (see above)
    tag: str | None = None  # its TensorBoard scalar in a trial's run (None: logged with the training curves)
    mode: str | None = "max"  # the direction an objective takes when it names none (None: a constraint only)
    unit: str = ""  # for axis labels


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy on the val split", 0.0, 1.0, 0.0, settled=False),  # val_accuracy in TensorBoard
    "weight_sparsity": Metric("fraction of zero weights, all weight layers", 0.0, 1.0, 0.0, settled=True,
                              tag="sparsity/weights"),  # fixed masks
    # ReLU layers' activation sparsity (and with it the MACs) moves with training; kWTA fixes it (``settled``)
    "activation_sparsity": Metric("fraction of zero hidden activations on the val split", 0.0, 1.0, 0.0,
                                  settled=False, tag="sparsity/activations"),
    "mac_reduction": Metric("dense MACs / non-zero MACs per inference on the val split", 1.0, None, 1.0,
                            settled=False, tag="macs/reduction"),
}
NAMES: tuple[str, ...] = tuple(METRICS)

# Reported under the objective's name; each needs a target. A design that does not fit its
# FPGA target has no latency: it reports inf latency / energy and 0 throughput (dominated, and
# beyond any threshold), with ``fits`` 0.
HARDWARE: dict[str, Metric] = {
    "latency_us": Metric("predicted latency of one batch on the target, microseconds", 0.0, None, 0.0,
                         settled="activations", mode="min", unit="us"),
    "energy_uj": Metric("predicted energy per inference on the target, microjoules", 0.0, None, 0.0,
                        settled="activations", mode="min", unit="uJ"),
    "throughput_ips": Metric("predicted inferences per second on the target", 0.0, None, 0.0,
                             settled="activations", mode="max", unit="1/s"),
    "fits": Metric("1 if the design fits the target's resources and on-chip memory, else 0 (a constraint only)",
                   None, None, 0.0, settled="activations", mode=None),
    "cpu_latency_us": Metric("measured latency of one batch on this machine's CPU (sparsecli.kernels engine, "
                             "1 thread), microseconds", 0.0, None, 0.0, settled="activations", mode="min", unit="us"),
}
HARDWARE_NAMES: tuple[str, ...] = tuple(HARDWARE)
ALL: dict[str, Metric] = METRICS | HARDWARE
MEASURED = ("cpu_latency_us",)  # timed on this machine, not predicted
CONSTRAINTS = ("fits",)  # constraint-only metrics: no mode, no threshold, feasible when 1
LATENCIES = ("latency_us", "cpu_latency_us")  # what tune.select min_latency minimises (the first of them)


def settled(model, space_keys=()) -> frozenset[str]:
    """The metrics whose value after one epoch is final for this model (``model``: the params' model section).

    The ``settled`` ones, plus ``activation_sparsity`` when every hidden layer is kWTA and no
    searched key can replace a kWTA block: k winners of n units output exactly n - k zeros at
    inference (``k_inference``, fixed at construction), whatever the weights, the boosting or
    the epoch. Not the MAC reduction: it depends on which inputs win.
    """
    out = {name for name, metric in METRICS.items() if metric.settled}
    blocks = [*(model.conv if model.arch == "cnn" else []), *model.layers]
    if blocks and all(block.kwta is not None for block in blocks) and not any(map(_may_drop_kwta, space_keys)):
        out.add("activation_sparsity")
    return frozenset(out)


def _may_drop_kwta(key: str) -> bool:
    """A searched key that could make a layer ReLU: the architecture, a layer list, a layer or its kwta block."""
    parts = key.split(".")
    return key == "model.arch" or (parts[:2] in (["model", "conv"], ["model", "layers"])
                                   and (len(parts) <= 3 or parts[3:] == ["kwta"]))
