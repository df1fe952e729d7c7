"""Dynamic sparse training: SET / RigL mask updates through `fit`, ERK densities, the train stage."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecli import checkpoint
from sparsecli.models import build_model
from sparsecli.params import DynamicParams, load_params
from sparsecli.sparse import SparseWeights
from sparsecli.sparse.dynamic import DynamicSparsity, dynamic_sparsity, erk_densities, sparse_layers
from sparsecli.sparse.stats import weight_layers
from sparsecli.stages import train
from sparsecli.training import fit, read_splits

TWO_SPARSE_LAYERS = "model.layers=[{units: 32, weights: {sparsity: 0.5}, kwta: {percent_on: 0.25}}, {units: 32, weights: {sparsity: 0.8}}]"


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_every_update_keeps_the_exact_nonzero_count_per_layer(trained_dir, tiny_params_path, method):
    params = load_params(tiny_params_path, [TWO_SPARSE_LAYERS, f"sparsity.dynamic.method={method}",
                                            "sparsity.dynamic.update_interval=3", "sparsity.dynamic.drop_fraction=0.5"])
    splits, meta = read_splits(trained_dir)
    model = build_model(params, meta)
    dynamic = dynamic_sparsity(model, params, len(splits["train"]))
    layers = sparse_layers(model)
    assert set(layers) == {"layers.0", "layers.1"}  # the dense head stays dense
    counts = {name: int(layer.mask.sum()) for name, layer in layers.items()}
    start = {name: layer.mask.clone() for name, layer in layers.items()}
    checked = []

    def after_step(m, step):
        dynamic(m, step)
        if dynamic.is_update(step):
            checked.append(step)
            for name, layer in layers.items():
                assert int(layer.mask.sum()) == counts[name], (step, name)
                assert not ((layer.module.weight != 0) & (layer.mask == 0)).any()

    fit(model, params.train, splits, seed=params.seed, after_step=after_step)
    dynamic.close()
    total = params.train.epochs * math.ceil(len(splits["train"]) / params.train.batch_size)
    assert checked == [s for s in range(3, total + 1, 3) if s < math.floor(0.75 * total)]
    for name, layer in layers.items():
        moved = int((layer.mask.bool() & ~start[name].bool()).sum())
        assert moved > 0.1 * counts[name], name  # masks really moved
    assert int(weight_layers(model)["head"].mask.sum()) == 320


def test_rigl_regrows_where_the_gradient_is_largest():
    layer = SparseWeights(nn.Linear(8, 4), 0.5, torch.Generator().manual_seed(0))
    model = nn.Sequential()
    model.add_module("net", layer)
    params = DynamicParams(method="rigl", update_interval=1, drop_fraction=0.25, end_fraction=1.0)
    dynamic = DynamicSparsity({"net": layer}, params, total_steps=10_000, seed=0)
    with torch.no_grad():
        layer.module.weight.copy_(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)) * layer.mask)
    active = layer.mask.bool().clone()
    inactive_positions = (~active).nonzero().tolist()
    # a gradient that is largest at three chosen inactive positions, in a known order
    target = torch.full((4, 8), 0.01)
    chosen = [tuple(p) for p in inactive_positions[:3]]
    for value, (r, c) in zip([5.0, -4.0, 3.0], chosen):
        target[r, c] = value
    (layer.module.weight * target).sum().backward()  # d/dW = target: dense, masked entries included
    magnitude = layer.module.weight.detach().abs()
    dynamic(model, 1)
    n_drop = round(dynamic.fraction(1) * int(active.sum()))
    assert n_drop == 4
    dropped = active & ~layer.mask.bool()
    grown = layer.mask.bool() & ~active
    smallest = torch.where(active, magnitude, torch.full_like(magnitude, math.inf)).flatten().topk(n_drop, largest=False)
    # the largest-|gradient| positions among those not kept: the three chosen, then the largest dropped one
    kept = active.flatten().clone()
    kept[smallest.indices] = False
    expected = torch.where(kept, torch.full((32,), -math.inf), target.abs().flatten()).topk(n_drop).indices
    new = kept.clone()
    new[expected] = True
    assert torch.equal(layer.mask.bool().flatten(), new)
    assert all(layer.mask[r, c] == 1 for r, c in chosen)
    assert int(layer.mask.sum()) == int(active.sum())
    assert int(grown.sum()) == int(dropped.sum()) >= 3
    assert (layer.module.weight[grown] == 0).all()  # regrown weights start at zero
    dynamic.close()


def test_rigl_sees_the_gradient_of_the_step_before_the_optimizer_moved(trained_dir, tiny_params_path):
    """The gradient RigL uses is exactly backward's dense gradient at the pre-step weights."""
    params = load_params(tiny_params_path, [
        "model.layers=[{units: 16, weights: {sparsity: 0.5}}]", "model.batch_norm=false",
        "train.optimizer=sgd", "train.momentum=0.9", "train.weight_decay=0.5", "train.batch_size=100000",
        "train.epochs=1", "sparsity.dynamic.method=rigl", "sparsity.dynamic.update_interval=1000"])
    splits, meta = read_splits(trained_dir)
    model = build_model(params, meta)
    reference = copy.deepcopy(model)
    dynamic = dynamic_sparsity(model, params, len(splits["train"]))
    fit(model, params.train, splits, seed=params.seed)  # one step: the whole split is one batch
    dynamic.close()
    F.cross_entropy(reference(splits["train"].x), splits["train"].y).backward()
    expected = reference.layers[0].weights.module.weight.grad
    assert torch.allclose(dynamic.grads["layers.0"], expected, atol=1e-6)
    assert (expected[reference.layers[0].weights.mask == 0] != 0).any()  # dense: masked weights get gradient
    assert not torch.equal(model.layers[0].weights.module.weight, reference.layers[0].weights.module.weight)


def test_erk_densities():
    shapes = {"a": (256, 64), "b": (256, 256), "c": (10, 4)}
    numel = {"a": 256 * 64, "b": 256 * 256, "c": 40}
    budget = 8000
    d = erk_densities(shapes, budget)
    assert d["c"] == 1.0  # would exceed 1: made dense
    assert sum(d[n] * numel[n] for n in shapes) == pytest.approx(budget)
    assert d["a"] / d["b"] == pytest.approx(((256 + 64) / numel["a"]) / ((256 + 256) / numel["b"]))


def test_train_stage_with_erk_and_rigl(project, tiny_params_path):
    uniform = load_params(tiny_params_path, [TWO_SPARSE_LAYERS])
    params = load_params(tiny_params_path, [TWO_SPARSE_LAYERS, "sparsity.dynamic.method=rigl",
                                            "sparsity.dynamic.init=erk", "sparsity.dynamic.update_interval=5"])
    _, meta = read_splits(project)
    built = sparse_layers(build_model(uniform, meta))
    metrics = train.run(params, project)
    model, stored, _ = checkpoint.load(project / "models" / "train.pt")
    assert stored.sparsity.dynamic.method == "rigl"
    layers = sparse_layers(model)
    budget = sum(int(layer.mask.sum()) for layer in built.values())
    assert abs(sum(int(layer.mask.sum()) for layer in layers.values()) - budget) <= len(layers)
    # ERK moves non-zeros from the larger layer to the smaller one; uniform masks keep 0.5 and 0.2
    erk = {name: float(layer.mask.mean()) for name, layer in layers.items()}
    assert erk["layers.0"] != pytest.approx(float(built["layers.0"].mask.mean()))
    assert metrics["test_accuracy"] > 0.5


def test_dynamic_sparsity_needs_a_sparse_layer(project, monkeypatch):
    from typer.testing import CliRunner

    from conftest import snapshot
    from sparsecli.cli import app

    monkeypatch.chdir(project)
    before = snapshot(project)
    result = CliRunner().invoke(app, ["train", "-S", "model.layers.0.weights.sparsity=0", "-S", "sparsity.dynamic.method=set"])
    assert result.exit_code == 2
    assert result.output == ("error: sparsity.dynamic.method = 'set': the model has no sparse layer; "
                             "give a layer model.*.weights.sparsity > 0\n")
    assert snapshot(project) == before
