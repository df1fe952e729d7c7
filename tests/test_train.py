import json
import shutil

import pytest
import torch

from sparsecli import checkpoint
from sparsecli.errors import CheckpointError, ParamsError
from sparsecli.evaluation import evaluate
from sparsecli.params import load_params
from sparsecli.progress import Progress
from sparsecli.stages import train
from sparsecli.training import read_splits


def test_metrics_report_accuracy_sparsity_macs_and_noise(trained_dir):
    metrics = json.loads((trained_dir / "metrics" / "train.json").read_text())
    assert metrics["test_accuracy"] > 0.8
    assert set(metrics["weight_sparsity_per_layer"]) == {"layers.0", "head"}
    assert metrics["weight_sparsity_per_layer"]["layers.0"] == pytest.approx(0.5, abs=0.01)
    assert metrics["activation_sparsity_per_layer"]["layers.0"] == pytest.approx(0.75)
    # non-zero MACs: half the weights of layer 0 (inputs dense), a quarter of the head's inputs
    layer0 = metrics["macs_per_layer"]["layers.0"]
    assert layer0["dense"] == 64 * 32
    assert layer0["nonzero"] <= 0.5 * 64 * 32 + 1e-6
    assert metrics["macs_per_layer"]["head"]["nonzero"] == pytest.approx(8 * 10)
    assert metrics["mac_reduction"] == pytest.approx(metrics["macs_dense"] / metrics["macs_nonzero"])
    assert set(metrics["accuracy_by_noise"]) == {"0.0", "0.1", "0.5"}
    assert metrics["accuracy_by_noise"]["0.0"] == metrics["test_accuracy"]
    test_size = json.loads((trained_dir / "data" / "meta.json").read_text())["sizes"]["test"]
    assert metrics["noise_score"] == round(sum(metrics["accuracy_by_noise"].values()) * test_size)
    assert metrics["noise_score_fraction"] == pytest.approx(metrics["noise_score"] / (3 * test_size))
    assert (trained_dir / "metrics" / "train_history.csv").read_text().startswith("epoch,")
    assert not (trained_dir / "models" / ".train.resume.pt").exists()


def test_checkpoint_rebuilds_the_model_from_the_file_alone(trained_dir):
    model, params, payload = checkpoint.load(trained_dir / "models" / "train.pt")
    splits, _ = read_splits(trained_dir)
    metrics = json.loads((trained_dir / "metrics" / "train.json").read_text())
    assert evaluate(model, splits["test"])[1] == pytest.approx(metrics["test_accuracy"])
    assert params.model.layers[0].units == 32
    assert {"optimizer", "history"} <= set(payload)
    assert "layers.0.act.duty_cycle" in payload["state_dict"]
    assert "layers.0.weights.mask" in payload["state_dict"]


def test_corrupted_and_missing_checkpoints_are_clear_errors(tmp_path, trained_dir):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained_dir / "models" / "train.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="bad.pt: corrupted or not a sparsecli checkpoint"):
        checkpoint.load(bad)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    payload = checkpoint.read(trained_dir / "models" / "train.pt")
    payload["params"]["model"]["layers"][0]["units"] = 16
    torch.save(payload, other)
    with pytest.raises(CheckpointError, match="weights do not match"):
        checkpoint.load(other)


class StopAt(Progress):
    def __init__(self, epoch):
        self.stop_epoch = epoch

    def epoch(self, record):
        if record["epoch"] == self.stop_epoch:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_to_the_same_result(project, tiny_params, trained_dir):
    shutil.rmtree(project / "models")
    with pytest.raises(KeyboardInterrupt):
        train.run(tiny_params, project, progress=StopAt(2))
    assert (project / "models" / ".train.resume.pt").exists()
    assert not (project / "models" / "train.pt").exists()
    metrics = train.run(tiny_params, project)
    expected = json.loads((trained_dir / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["test_accuracy"] == expected["test_accuracy"]
    assert metrics["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)


def test_same_seed_same_metrics_other_seed_other_masks(project, tiny_params, trained_dir):
    again = train.run(tiny_params, project)
    expected = json.loads((trained_dir / "metrics" / "train.json").read_text())
    assert again["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
    assert again["test_accuracy"] == expected["test_accuracy"]
    first = checkpoint.read(trained_dir / "models" / "train.pt")["state_dict"]["layers.0.weights.mask"]
    other = tiny_params.model_copy(update={"seed": tiny_params.seed + 1})
    other_run = train.run(other, project)
    second = checkpoint.read(project / "models" / "train.pt")["state_dict"]["layers.0.weights.mask"]
    assert not torch.equal(first, second)
    assert other_run["test_loss"] != expected["test_loss"]


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "step"), ("adam", "onecycle"), ("sgd", "constant")])
def test_optimizers_and_schedules_train(project, tiny_params_path, optimizer, schedule):
    params = load_params(tiny_params_path, [f"train.optimizer={optimizer}", f"train.schedule={schedule}",
                                             "train.epochs=2", "train.step_size=1", "train.lr=0.05"])
    metrics = train.run(params, project)
    assert metrics["test_accuracy"] > 0.5


def test_early_stopping_stops_and_keeps_the_best(project, tiny_params_path):
    params = load_params(tiny_params_path, ["train.epochs=30", "train.early_stopping=1", "train.lr=0.05"])
    metrics = train.run(params, project)
    assert metrics["stopped_early"] and metrics["epochs"] < 30


def test_cnn_with_local_and_global_kwta(project, tiny_params_path):
    params = load_params(tiny_params_path, [
        "model.arch=cnn", "train.epochs=2",
        "model.conv=[{channels: 8, kernel_size: 3, pool: 2, weights: {sparsity: 0.5}, kwta: {percent_on: 0.25, local: true}},"
        " {channels: 8, pool: 2, kwta: {percent_on: 0.2}}]",
    ])
    metrics = train.run(params, project)
    assert set(metrics["activation_sparsity_per_layer"]) == {"conv.0", "conv.1", "layers.0"}
    assert metrics["activation_sparsity_per_layer"]["conv.0"] == pytest.approx(0.75)
    assert metrics["test_accuracy"] > 0.5


def test_shapes_must_agree_with_the_data(project, tiny_params_path):
    params = load_params(tiny_params_path, ["model.arch=cnn", "model.conv=[{channels: 4, pool: 4}, {channels: 4, pool: 4}]"])
    with pytest.raises(ParamsError, match=r"model.conv.1.pool = 4: the 2x2 input of this layer would pool to nothing"):
        train.run(params, project)
    params = load_params(tiny_params_path, ["model.layers.0.weights.sparsity=0.995"])
    with pytest.raises(ParamsError, match=r"model.layers.0.weights.sparsity = 0.995: leaves .* 0 inputs per unit"):
        train.run(params, project)
    params = load_params(tiny_params_path, ["model.arch=cnn", "model.conv=[{channels: 2, pool: 1, kwta: {percent_on: 0.001}}]"])
    with pytest.raises(ParamsError, match=r"model.conv.0.kwta.percent_on = 0.001: k = round\(percent_on \* 128\) = 0"):
        train.run(params, project)


def test_a_last_batch_of_one_sample_is_skipped_not_a_crash(project, tiny_params_path):
    params = load_params(tiny_params_path, ["train.batch_size=1168", "train.epochs=1"])  # 1169 training samples
    assert train.run(params, project)["epochs"] == 1
