"""TensorBoard logging and metrics files.

A run folder has a fixed path (e.g. ``runs/train``), the DVC output; a stage writes it aside
and renames it into place when it has finished (``atomic.staged_dir``), so it holds exactly one
complete run. The HParams view gets the run's flattened params and its final metrics.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn

# Keys of an epoch record -> TensorBoard tags.
EPOCH_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "lr": "lr",
}


# The metric columns of the HParams table. `tensorboard --logdir runs` shows one experiment (the
# first it finds) over every session under runs/, so train's, prune's and tune's each list all
# of them (and the whole flattened params as hparams): whichever is picked, every run has its row.
HPARAMS_METRICS = ("test_accuracy", "val_accuracy", "test_accuracy_before", "weight_sparsity", "activation_sparsity",
                   "mac_reduction", "noise_score", "accuracy", "epochs", "cost_epochs", "feasible", "on_front")


def _columns(metrics) -> dict[str, float]:
    return {m: 0.0 for m in dict.fromkeys([*metrics, *HPARAMS_METRICS])}


class Tracker:
    def __init__(self, logdir: Path):
        from torch.utils.tensorboard import SummaryWriter

        logdir = Path(logdir)
        if logdir.exists():
            shutil.rmtree(logdir)
        self.writer = SummaryWriter(log_dir=str(logdir))

    def epoch(self, record: dict, extra: dict[str, float] | None = None) -> None:
        step = record["epoch"]
        for key, tag in EPOCH_TAGS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], step)
        for tag, value in (extra or {}).items():
            self.writer.add_scalar(tag, value, step)

    def histograms(self, model: nn.Module, step: int) -> None:
        from sparsecli.sparse.stats import weight_layers

        for name, layer in weight_layers(model).items():
            weight = layer.module.weight.detach()
            self.writer.add_histogram(f"weights/{name}", weight[weight != 0], step)

    def hparams(self, hparams: dict, metrics: dict[str, float], experiment: bool = True, step: int | None = None) -> None:
        """Write the HParams summary into this run (not a time-stamped sub-folder).

        With ``experiment=False`` only this run's session is written; the table's columns
        then come from one ``hparams_experiment`` at the root of several runs.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        summaries = hparams_summary(clean, _columns(metrics))
        for summary in summaries if experiment else summaries[1:]:
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def hparams_experiment(logdir: Path, hparams: dict, metrics: list[str], discrete: dict[str, list] | None = None) -> None:
    """One HParams experiment for every run under ``logdir``: its hparams and metric columns."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: _hparam_value(v) for k, v in hparams.items()}
    domains = {k: [_hparam_value(v) for v in values] for k, values in (discrete or {}).items()}
    experiment, _, _ = hparams_summary(clean, _columns(metrics), hparam_domain_discrete=domains)
    with SummaryWriter(log_dir=str(logdir)) as writer:
        writer.file_writer.add_summary(experiment)


def _hparam_value(value):
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
