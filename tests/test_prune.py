"""The prune stage through its Python API and the CLI: outputs, patterns, checkpoints, sensitivity, bad input."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from conftest import snapshot
from sparsecli import checkpoint
from sparsecli.cli import app
from sparsecli.evaluation import evaluate
from sparsecli.params import load_params
from sparsecli.sparse.patterns import as_matrix
from sparsecli.stages import prune
from sparsecli.training import read_splits

runner = CliRunner()


def masks(path):
    state = checkpoint.read(path)["state_dict"]
    return {k.removesuffix(".weights.mask"): v for k, v in state.items() if k.endswith(".weights.mask")}


def weights(path):
    state = checkpoint.read(path)["state_dict"]
    return {k.removesuffix(".weights.module.weight"): v for k, v in state.items() if k.endswith(".weights.module.weight")}


def test_default_magnitude_prunes_fine_tunes_and_writes_a_checkpoint_of_the_same_format(project, tiny_params):
    metrics = prune.run(tiny_params, project)
    assert json.loads((project / "metrics" / "prune.json").read_text()) == metrics
    assert metrics["method"] == "magnitude" and metrics["pattern"] == "unstructured"
    assert metrics["weight_sparsity_per_layer"]["layers.0"] == pytest.approx(0.95, abs=1e-3)
    assert metrics["weight_sparsity_per_layer"]["head"] == 0.0  # excluded by default
    assert metrics["weight_sparsity_before"] < metrics["weight_sparsity"]
    assert metrics["macs_nonzero"] < metrics["macs_nonzero_before"]
    assert metrics["mac_reduction"] == pytest.approx(metrics["macs_dense"] / metrics["macs_nonzero"])
    assert metrics["activation_sparsity_per_layer"]["layers.0"] == pytest.approx(0.75)  # kWTA still on
    assert metrics["pattern_satisfied"] and metrics["resurrected_weights"] == 0
    assert metrics["test_accuracy"] > 0.7 and metrics["test_accuracy_before"] > 0.8
    assert set(metrics["accuracy_by_noise"]) == {"0.0", "0.1", "0.5"}
    # the pruned checkpoint rebuilds from its stored params, masks from the state_dict
    model, params, payload = checkpoint.load(project / "models" / "pruned.pt")
    splits, _ = read_splits(project)
    assert evaluate(model, splits["test"])[1] == pytest.approx(metrics["test_accuracy"])
    assert payload["prune"]["method"] == "magnitude" and payload["prune"]["pattern"] == "unstructured"
    assert params.prune.method == "magnitude" and params.model == tiny_params.model
    assert len(payload["history"]) == 2
    assert "layers.0.act.duty_cycle" in payload["state_dict"]
    before, after = masks(project / "models" / "train.pt"), masks(project / "models" / "pruned.pt")
    assert not (after["layers.0"].bool() & ~before["layers.0"].bool()).any()
    # TensorBoard: sparsity and accuracy after pruning (epoch 0) and per fine-tuning epoch
    events = EventAccumulator(str(project / "runs" / "prune"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/val")] == [0, 1, 2]
    assert [round(e.value, 3) for e in events.Scalars("weight_sparsity/layers.0")] == [0.95, 0.95, 0.95]
    assert "sparsity/weights" in events.Tags()["scalars"] and "test_accuracy" in events.Tags()["scalars"]


def test_nm_through_the_cli_obeys_the_pattern_in_every_group(project, monkeypatch):
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["prune", "-S", "prune.method=nm", "-S", "prune.n=1", "-S", "prune.m=4",
                                 "-S", "prune.exclude=[]"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("prune: done. test_accuracy")
    model, _, _ = checkpoint.load(project / "models" / "pruned.pt")
    for name, w in weights(project / "models" / "pruned.pt").items():
        groups = (as_matrix(w) != 0).reshape(w.shape[0], -1, 4).sum(dim=2)
        assert (groups <= 1).all(), name
        assert (groups == 1).float().mean() > 0.5, name  # not trivially all-zero
    metrics = json.loads((project / "metrics" / "prune.json").read_text())
    assert metrics["pattern"] == "1:4" and metrics["pattern_satisfied"] and metrics["pattern_violations"] == 0
    assert metrics["pattern_groups"] == (32 * 64 + 10 * 32) // 4


def test_block_and_global_scope(project, tiny_params_path):
    params = load_params(tiny_params_path, ["prune.method=block", "prune.block=2x4", "prune.scope=global",
                                            "prune.sparsity=0.8", "prune.exclude=[]"])
    metrics = prune.run(params, project)
    before, after = masks(project / "models" / "train.pt"), masks(project / "models" / "pruned.pt")

    def blocks(mask):
        mat = as_matrix(mask)
        return mat.reshape(mat.shape[0] // 2, 2, mat.shape[1] // 4, 4).permute(0, 2, 1, 3)

    for name in before:
        b, a = blocks(before[name]), blocks(after[name])
        dropped = a.flatten(2).sum(dim=2) == 0
        whole = (a == b).flatten(2).all(dim=2)
        assert (dropped | whole).all(), name
    nonzeros = sum(int(m.sum()) for m in after.values())
    assert nonzeros <= round(0.2 * (32 * 64 + 10 * 32))
    assert metrics["pattern"] == "2x4" and metrics["pattern_satisfied"]
    assert metrics["target_sparsity_per_layer"] == {"layers.0": 0.8, "head": 0.8}


def test_gmp_reaches_its_final_sparsity_through_scheduled_updates(project, tiny_params_path):
    params = load_params(tiny_params_path, ["prune.method=gmp", "prune.sparsity=0.9", "prune.initial_sparsity=0.5",
                                            "prune.frequency=4", "prune.overrides=[{name: layers.0, sparsity: 0.8}]",
                                            "prune.exclude=[]"])
    metrics = prune.run(params, project)
    assert metrics["weight_sparsity_per_layer"]["layers.0"] == pytest.approx(0.8, abs=1e-3)
    assert metrics["weight_sparsity_per_layer"]["head"] == pytest.approx(0.9, abs=1e-3)
    assert metrics["mask_updates"] == 1 + 20 // 4  # steps 0, 4, ..., 20 (2 epochs of 10 steps)
    events = EventAccumulator(str(project / "runs" / "prune"), size_guidance={"scalars": 0})
    events.Reload()
    head = [e.value for e in events.Scalars("weight_sparsity/head")]
    assert head[0] == pytest.approx(0.5) and head[0] < head[1] < head[2]


def test_none_passes_the_trained_model_through(project, tiny_params_path):
    metrics = prune.run(load_params(tiny_params_path, ["prune.method=none"]), project)
    assert metrics["test_accuracy"] == metrics["test_accuracy_before"]
    assert metrics["mask_updates"] == 0 and metrics["pruned_layers"] == []
    trained, pruned = weights(project / "models" / "train.pt"), weights(project / "models" / "pruned.pt")
    assert all(torch.equal(trained[name], pruned[name]) for name in trained)


def test_sensitivity_writes_a_csv_and_a_plot_and_nothing_else(project, monkeypatch):
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["prune", "--sensitivity", "--json", "-q", "-S", "prune.exclude=[]"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["layers"] == ["layers.0", "head"]
    lines = (project / "reports" / "sensitivity.csv").read_text().splitlines()
    assert lines[0] == "layer,sparsity,weight_sparsity,val_accuracy"
    assert len(lines) == 1 + 2 * 11
    train_val = json.loads((project / "metrics" / "train.json").read_text())["val_accuracy"]
    assert out["val_accuracy"]["head"]["0.0"] == pytest.approx(train_val)
    assert out["val_accuracy"]["head"]["0.95"] < train_val  # a 95%-sparse head hurts
    assert (project / "reports" / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    changed = set(snapshot(project)) - set(before)
    assert changed == {"reports/sensitivity.csv", "reports/sensitivity.png"}


BAD = [
    (["-S", "prune.n=4"], 2, "prune.n = 4: must be < prune.m (4)"),
    (["-S", "prune.method=nm", "-S", "prune.m=8", "-S", "prune.n=8"], 2, "prune.n = 8: must be < prune.m (8)"),
    (["-S", "prune.method=block", "-S", "prune.block=3x3"], 2, "prune.block = '3x3': 3x3 does not tile its 32x64 weight matrix"),
    (["-S", "prune.method=nm", "-S", "prune.m=5"], 2, "prune.m = 5: 2:5 does not divide its 64 inputs per unit in layer layers.0"),
    (["-S", "prune.sparsity=1"], 2, "prune.sparsity = 1: must be in [0, 1)"),
    (["-S", "prune.sparsity=-0.1"], 2, "prune.sparsity = -0.1: must be in [0, 1)"),
    (["-S", "prune.overrides=[{name: layers.7, sparsity: 0.9}]"], 2, "prune.overrides.0.name = 'layers.7': no such layer"),
    (["-S", "prune.exclude=[fc1]"], 2, "prune.exclude.0 = 'fc1': no such layer"),
    (["--sensitivity", "-S", "prune.exclude=[conv.1]"], 2, "prune.exclude.0 = 'conv.1': no such layer"),
]


@pytest.mark.parametrize("args, code, message", BAD)
def test_bad_params_are_one_line_errors_that_write_nothing(project, monkeypatch, args, code, message):
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = runner.invoke(app, ["prune", *args])
    assert result.exit_code == code
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1
    assert snapshot(project) == before


def test_missing_or_foreign_checkpoints_are_one_line_errors_that_write_nothing(project, monkeypatch):
    monkeypatch.chdir(project)
    model = project / "models" / "train.pt"
    payload = checkpoint.read(model)

    def fails(message):
        before = snapshot(project)
        for args in (["prune"], ["prune", "--sensitivity"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 1 and message in result.output, result.output
            assert result.output.count("\n") == 1
        assert snapshot(project) == before

    other = dict(payload, params=json.loads(json.dumps(payload["params"])))
    other["params"]["model"]["layers"][0]["units"] = 48  # another architecture than its weights
    torch.save(other, model)
    fails("models/train.pt: weights do not match the model its params describe")
    torch.save(payload, model)
    meta = json.loads((project / "data" / "meta.json").read_text())
    (project / "data" / "meta.json").write_text(json.dumps(dict(meta, classes=3)))  # the data changed since
    fails("models/train.pt: built for data with classes = 10, but data/meta.json has 3")
    model.unlink()
    fails("models/train.pt: checkpoint not found; run the stage that writes it first (e.g. `sparsecli train`)")
