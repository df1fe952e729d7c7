"""The one list of metrics a tune trial reports: names, threshold ranges, reference values.

Everything else takes the names from here: the params check (``tune.objectives.*.metric``
and its threshold range), the objectives and the hypervolume reference, the trainable's
report, the progress lines, the trial history and the CSV columns. Adding an objective (e.g.
a hardware-predicted latency) is one ``Metric`` entry below plus the trainable computing it
(``sparsecli.tuning.trainable.trial_metrics``; a test checks that it reports every name).

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
    settled: bool  # its value after the first epoch is final, so a short trial already shows whether it meets its threshold
    tag: str | None = None  # its TensorBoard scalar in a trial's run (None: logged with the training curves)


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
