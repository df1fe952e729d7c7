"""Read the train stage's TensorBoard run back with tensorboard's own reader."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def test_scalars_histograms_and_hparams_are_logged(trained_dir):
    events = EventAccumulator(str(trained_dir / "runs" / "train"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr",
                "weight_density/layers.0", "activation_density/layers.0", "test_accuracy"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2, 3]
    assert events.Scalars("activation_density/layers.0")[0].value == 0.25
    assert "weights/layers.0" in tags["histograms"]

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["model.layers.0.kwta.percent_on"].number_value == 0.25
    assert hparams["train.optimizer"].string_value == "adam"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"test_accuracy", "weight_sparsity", "mac_reduction"} <= metric_tags


def _experiment(run):
    events = EventAccumulator(str(run))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    return plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment, content


def test_train_and_prune_runs_share_the_hparams_columns(pipeline_dir):
    """`tensorboard --logdir runs` shows one experiment: each stage's lists every stage's metrics."""
    from sparsecli.tracking import HPARAMS_METRICS

    for stage in ("train", "prune"):
        experiment, content = _experiment(pipeline_dir / "runs" / stage)
        assert {m.name.tag for m in experiment.metric_infos} >= set(HPARAMS_METRICS), stage
        assert {"train.lr", "prune.sparsity", "model.layers.0.kwta.percent_on"} <= {h.name for h in experiment.hparam_infos}
        assert "_hparams_/session_start_info" in content
    assert not list((pipeline_dir / "runs").glob(".*"))  # written aside, renamed into place


def test_a_failed_train_leaves_the_previous_run_in_place(project, monkeypatch):
    from typer.testing import CliRunner

    from conftest import snapshot
    from sparsecli.cli import app

    monkeypatch.chdir(project)
    before = snapshot(project / "runs" / "train")
    result = CliRunner().invoke(app, ["train", "-q", "--set", "train.lr=1e12", "--set", "train.optimizer=sgd"])
    assert result.exit_code != 0, result.output
    assert snapshot(project / "runs" / "train") == before
