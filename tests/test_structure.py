"""Hardware-shaped static masks (``model.*.weights.structure``): drawn exact, kept by train, prune and the engine."""

import pytest
import torch
from typer.testing import CliRunner

from conftest import ROOT
from sparsecli import checkpoint
from sparsecli.cli import app
from sparsecli.errors import ParamsError
from sparsecli.models import build_model
from sparsecli.params import load_params, validate
from sparsecli.sparse.patterns import as_matrix
from sparsecli.stages import prune, train

runner = CliRunner()
META = {"classes": 10, "features": 64, "image_shape": [1, 8, 8]}


def assert_blocks(mask: torch.Tensor, rows: int, cols: int, sparsity: float) -> None:
    """Whole rows x cols blocks, exactly round((1 - sparsity) * fan_in / cols) of them in every block row."""
    mat = as_matrix(mask)
    units, fan_in = mat.shape
    tiles = mat.reshape(units // rows, rows, fan_in // cols, cols).permute(0, 2, 1, 3).flatten(2)
    filled = tiles.sum(dim=2)
    assert ((filled == 0) | (filled == rows * cols)).all(), "a block is partly kept"
    per_row = (filled > 0).sum(dim=1)
    assert (per_row == round((1 - sparsity) * fan_in / cols)).all(), per_row


def assert_nm(mask: torch.Tensor, n: int, m: int) -> None:
    """Exactly n non-zeros in every m consecutive inputs (channels innermost for a conv)."""
    mat = as_matrix(mask)
    assert (mat.reshape(mat.shape[0], -1, m).sum(dim=2) == n).all()


def cnn(structure: str, sparsity: float):
    """A CNN whose second conv (fan-in 3x3x16 = 144) and linear layer (512 inputs) have ``structure``."""
    raw = {"seed": 3, "model": {"arch": "cnn",
                                "conv": [{"channels": 16, "pool": 1, "weights": {"sparsity": 0.5}},
                                         {"channels": 32, "weights": {"sparsity": sparsity, "structure": structure}}],
                                "layers": [{"units": 32, "weights": {"sparsity": sparsity, "structure": structure}}]}}
    return build_model(validate(raw, "test"), META)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9, 0.97])
@pytest.mark.parametrize("rows,cols", [(16, 1), (4, 4), (2, 8)])
def test_blocks_are_drawn_whole_with_the_same_count_in_every_block_row(rows, cols, sparsity):
    model = cnn(f"{rows}x{cols}", sparsity)
    for layer in (model.conv[1].weights, model.layers[0].weights):
        assert_blocks(layer.mask, rows, cols, sparsity)
        assert (layer.module.weight[layer.mask == 0] == 0).all()
        assert (layer.module.weight[layer.mask == 1] != 0).all()


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (1, 2), (4, 8)])
def test_nm_keeps_exactly_n_in_every_group(n, m):
    model = cnn(f"{n}:{m}", 1 - n / m)
    assert_nm(model.conv[1].weights.mask, n, m)  # conv groups run along the 16 input channels
    assert_nm(model.layers[0].weights.mask, n, m)


def test_structured_masks_are_deterministic_and_unstructured_draws_unchanged():
    assert torch.equal(cnn("16x1", 0.9).layers[0].weights.mask, cnn("16x1", 0.9).layers[0].weights.mask)
    # the default is today's unstructured mask: round((1 - sparsity) * fan_in) per unit
    mask = cnn("unstructured", 0.9).layers[0].weights.mask
    assert (mask.sum(dim=1) == round(0.1 * 512)).all()


@pytest.mark.parametrize("overrides,message", [
    (["model.layers.0.weights.structure=2:4"],  # sparsity 0.5 in the smoke params: 2:4 is fine, 1:4 is not
     None),
    (["model.layers.0.weights.structure=1:4"],
     r"model.layers.0.weights.structure = '1:4': keeps 1/4 of the weights: set weights.sparsity to 0.75"),
    (["model.layers.0.weights.structure=blocks"],
     r"model.layers.0.weights.structure = 'blocks': must be unstructured, ROWSxCOLS blocks \(e.g. 16x1\) or N:M"),
    (["model.layers.0.weights.structure=3:2"], r"N:M needs N < M"),
    (["model.layers.0.weights.structure=1x1"], r"1x1 blocks are single weights: write unstructured"),
])
def test_bad_structures_are_one_line_errors_naming_the_key(tiny_params_path, overrides, message):
    if message is None:
        assert load_params(tiny_params_path, overrides).model.layers[0].weights.structure == "2:4"
        return
    with pytest.raises(ParamsError, match=message):
        load_params(tiny_params_path, overrides)


def test_structures_that_do_not_fit_the_layer_fail_when_the_model_is_built(tiny_params_path):
    for overrides, message in [
        (["model.layers.0.units=24", "model.layers.0.weights.structure=16x1"],
         r"model.layers.0.weights.structure = '16x1': does not tile its 24x64 weight matrix"),
        (["model.layers.0.weights.structure=2:6", "model.layers.0.weights.sparsity=0.6666666666666667"],
         r"model.layers.0.weights.structure = '2:6': does not divide its 64 inputs per unit"),
        (["model.layers.0.weights.structure=16x16", "model.layers.0.weights.sparsity=0.9"],
         r"model.layers.0.weights.sparsity = 0.9: keeps .* = 0 blocks per block row of structure 16x16"),
    ]:
        with pytest.raises(ParamsError, match=message):
            build_model(load_params(tiny_params_path, overrides), META)


def trained_masks(workdir):
    model, _, payload = checkpoint.load(workdir / "models" / "train.pt")
    return model, {k.removesuffix(".weights.mask"): v for k, v in payload["state_dict"].items()
                   if k.endswith(".weights.mask")}


@pytest.mark.parametrize("structure,sparsity", [("16x1", 0.75), ("16x1", 0.9), ("8x2", 0.8), ("2:4", 0.5), ("1:4", 0.75)])
def test_train_trains_the_structure_and_saves_it_exactly(project, tiny_params_path, structure, sparsity):
    params = load_params(tiny_params_path, [f"model.layers.0.weights.structure={structure}",
                                            f"model.layers.0.weights.sparsity={sparsity}",
                                            "train.epochs=2", "train.dense_baseline=false"])
    initial = build_model(params, META).layers[0].weights
    metrics = train.run(params, project)
    model, masks = trained_masks(project)
    mask, weight = masks["layers.0"], model.layers[0].weights.module.weight.detach()
    if "x" in structure:
        rows, cols = map(int, structure.split("x"))
        assert_blocks(mask, rows, cols, sparsity)
    else:
        n, m = map(int, structure.split(":"))
        assert_nm(mask, n, m)
    # the static mask survived every optimiser step: unchanged, zero outside, trained inside
    assert torch.equal(mask, initial.mask)
    assert (weight[mask == 0] == 0).all() and (weight[mask == 1] != 0).all()
    assert not torch.equal(weight, initial.module.weight.detach())
    assert metrics["weight_sparsity_per_layer"]["layers.0"] == pytest.approx(1 - float(mask.mean()))
    assert metrics["test_accuracy"] > 0.5


def test_dynamic_sparsity_moves_whole_blocks_and_refuses_nm(project, tiny_params_path):
    params = load_params(tiny_params_path, ["model.layers.0.weights.structure=16x1", "model.layers.0.weights.sparsity=0.75",
                                            "sparsity.dynamic.method=rigl", "sparsity.dynamic.update_interval=2",
                                            "train.epochs=2", "train.dense_baseline=false"])
    initial = build_model(params, META).layers[0].weights.mask
    train.run(params, project)
    _, masks = trained_masks(project)
    assert not torch.equal(masks["layers.0"], initial)  # the blocks moved ...
    mat = as_matrix(masks["layers.0"]).reshape(2, 16, 64)
    assert ((mat.sum(dim=1) == 0) | (mat.sum(dim=1) == 16)).all()  # ... whole
    assert int(masks["layers.0"].sum()) == int(initial.sum())
    params = load_params(tiny_params_path, ["model.layers.0.weights.structure=2:4", "sparsity.dynamic.method=set"])
    with pytest.raises(ParamsError, match=r"sparsity.dynamic.method = 'set': model.layers.0.weights.structure is 2:4"):
        train.run(params, project)


@pytest.fixture(scope="module")
def blocks_project(tmp_path_factory, trained_dir, tiny_params_path):
    """The tiny project trained with 16x1 blocks at 75% sparsity (read-only; copy to write)."""
    import shutil

    workdir = tmp_path_factory.mktemp("blocks")
    shutil.copytree(trained_dir, workdir, dirs_exist_ok=True)
    params = load_params(tiny_params_path, ["model.layers.0.weights.structure=16x1", "model.layers.0.weights.sparsity=0.75",
                                            "train.dense_baseline=false"])
    train.run(params, workdir)
    return workdir


@pytest.fixture()
def blocks_copy(tmp_path, blocks_project):
    import shutil

    return shutil.copytree(blocks_project, tmp_path / "project")


@pytest.mark.parametrize("method", ["magnitude", "gmp"])
def test_prune_keeps_trained_blocks(blocks_copy, tiny_params_path, method):
    params = load_params(tiny_params_path, [f"prune.method={method}", "prune.sparsity=0.9"])
    metrics = prune.run(params, blocks_copy)
    model, stored, payload = checkpoint.load(blocks_copy / "models" / "pruned.pt")
    mask = payload["state_dict"]["layers.0.weights.mask"]
    mat = as_matrix(mask).reshape(2, 16, 64)
    filled = mat.sum(dim=1)
    assert ((filled == 0) | (filled == 16)).all()
    assert 1 - float(mask.mean()) == pytest.approx(0.9, abs=1 / 64)  # whole blocks: within one block per block row
    assert metrics["structures"] == {"layers.0": "16x1", "head": "unstructured"}
    assert metrics["structure_kept"] and metrics["pattern_satisfied"]
    assert stored.model.layers[0].weights.structure == "16x1"
    weight = model.layers[0].weights.module.weight.detach()
    assert (weight[mask == 0] == 0).all()


def test_prune_refuses_a_pattern_that_would_cut_trained_blocks(blocks_copy, monkeypatch):
    monkeypatch.chdir(blocks_copy)
    result = runner.invoke(app, ["prune", "-S", "prune.method=block", "-S", "prune.block=1x16"])
    assert result.exit_code != 0
    assert "prune.block = '1x16': layer layers.0 was trained in 16x1 blocks" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (blocks_copy / "models" / "pruned.pt").exists()
    result = runner.invoke(app, ["prune", "-S", "prune.method=block", "-S", "prune.block=16x2", "-S", "prune.sparsity=0.9"])
    assert result.exit_code == 0, result.output  # coarser aligned blocks are unions of 16x1 ones


def test_prune_keeps_a_trained_nm_structure(project, tiny_params_path):
    params = load_params(tiny_params_path, ["model.layers.0.weights.structure=2:4", "train.epochs=2",
                                            "train.dense_baseline=false"])
    train.run(params, project)
    metrics = prune.run(load_params(tiny_params_path, ["prune.sparsity=0.8", "prune.finetune_epochs=1"]), project)
    mask = checkpoint.read(project / "models" / "pruned.pt")["state_dict"]["layers.0.weights.mask"]
    assert (as_matrix(mask).reshape(32, 16, 4).sum(dim=2) <= 2).all()
    assert metrics["structure_kept"] and metrics["structures"]["layers.0"] == "2:4"


def test_the_engine_detects_16x1_blocks_in_a_trained_blocks_model(blocks_project):
    from sparsecli.kernels.formats import detect_structure
    from sparsecli.kernels.from_model import layer_specs, model_network

    model, params, _ = checkpoint.load(blocks_project / "models" / "train.pt")
    specs = layer_specs(model)  # batch norm folded in: zeros stay zeros
    assert detect_structure(specs[0].weight) == "blocks16"
    for activations in ("dense", "sparse"):  # the benchmark's sparse-dense and sparse-sparse engines
        # the first layer sees the dense data input: row-major 16x1 blocks in both
        assert model_network(model).sparse(activations).describe()[0]["format"] == "RowBlocks"
    params.model.layers[0].weights.structure = "unstructured"  # the same density, unstructured
    assert detect_structure(layer_specs(build_model(params, META).eval())[0].weight) == "unstructured"


def test_tune_space_searches_structures_and_probes_those_that_do_not_fit(tiny_params_path):
    from sparsecli.tuning.space import check_space, trial_params

    space = ["tune.space=[{key: model.layers.0.weights.structure, dist: choice, values: [unstructured, 16x1, 8x2]}]",
             "train.early_stopping=0"]
    params = load_params(tiny_params_path, space + ["model.layers.0.weights.sparsity=0.75"])
    check_space(params, META)
    model = build_model(trial_params(params.model_dump(), {"model.layers.0.weights.structure": "8x2"}), META)
    assert_blocks(model.layers[0].weights.mask, 8, 2, 0.75)
    params = load_params(tiny_params_path, space[:1] + ["model.layers.0.units=24", "train.early_stopping=0"])
    with pytest.raises(ParamsError, match=r"tune.space.0.values.1 = '16x1': impossible: .*does not tile its 24x64"):
        check_space(params, META)


def test_cost_models_see_the_trained_structure(blocks_project):
    from sparsecli.targets import load_target, network_from_model, predict
    from sparsecli.training import read_splits

    model, _, _ = checkpoint.load(blocks_project / "models" / "train.pt")
    splits, _ = read_splits(blocks_project)
    network = network_from_model(model, splits["test"].x)
    assert [layer.structure for layer in network] == ["16x1", "unstructured"]
    target = load_target(ROOT / "hardware" / "cpu-avx2.yaml")
    blocks = predict(network, target, modes=["sparse-dense"])["modes"]["sparse-dense"]["1"]
    as_unstructured = [type(layer)(**{**layer.__dict__, "structure": "unstructured"}) for layer in network]
    plain = predict(as_unstructured, target, modes=["sparse-dense"])["modes"]["sparse-dense"]["1"]
    assert blocks["layers"][0]["structure_used"] == "16x1"
    assert blocks["layers"][0]["memory_traffic_bytes"] < plain["layers"][0]["memory_traffic_bytes"]


def test_erk_redistributes_whole_blocks():
    from sparsecli.sparse.dynamic import dynamic_sparsity

    raw = {"seed": 1, "model": {"layers": [{"units": 64, "weights": {"sparsity": 0.9, "structure": "16x1"}},
                                           {"units": 32, "weights": {"sparsity": 0.9, "structure": "16x1"}}]},
           "sparsity": {"dynamic": {"init": "erk"}}}
    params = validate(raw, "test")
    model = build_model(params, META)
    before = sum(int(block.weights.mask.sum()) for block in model.layers)
    dynamic_sparsity(model, params, 100)
    for block in model.layers:
        mat = as_matrix(block.weights.mask)
        filled = mat.reshape(mat.shape[0] // 16, 16, -1).sum(dim=1)
        assert ((filled == 0) | (filled == 16)).all()
    after = sum(int(block.weights.mask.sum()) for block in model.layers)
    assert abs(after - before) <= 16 * len(model.layers)  # the budget, to a block per layer
    assert model.layers[0].weights.mask.mean() != model.layers[1].weights.mask.mean()


def test_pruning_plans_keep_blocks_or_refuse(tiny_params_path):
    from sparsecli.sparse.patterns import Block
    from sparsecli.sparse.pruning import make_plan

    base = ["model.layers.0.weights.structure=16x1", "model.layers.0.weights.sparsity=0.75"]
    model = build_model(load_params(tiny_params_path, base), META)
    plan = make_plan(model, load_params(tiny_params_path, base + ["prune.method=gmp"]).prune)
    assert plan.pattern_of_layer("layers.0") == Block(16, 1)
    with pytest.raises(ParamsError, match=r"prune.method = 'nm': layer layers.0 was trained in 16x1 blocks"):
        make_plan(model, load_params(tiny_params_path, base + ["prune.method=nm"]).prune)
    with pytest.raises(ParamsError, match=r"prune.scope = 'global': the layers keep different structures "
                                          r"\(layers.0 16x1, head unstructured\)"):
        make_plan(model, load_params(tiny_params_path, base + ["prune.scope=global", "prune.exclude=[]"]).prune)
