"""Pruning methods, patterns and the GMP schedule on small layers (sparsecli.sparse.pruning/patterns/schedules)."""

import pytest
import torch
from torch import nn

from sparsecli.errors import ParamsError
from sparsecli.models import build_model
from sparsecli.params import load_params
from sparsecli.sparse import SparseWeights
from sparsecli.sparse.patterns import NM, Block, as_matrix, check, from_matrix
from sparsecli.sparse.pruning import magnitude_prune, make_plan, nm_prune
from sparsecli.sparse.schedules import GradualPruning, gmp_sparsity
from sparsecli.sparse.stats import weight_layers
from sparsecli.training import fit, read_splits

META = {"source": "digits", "features": 64, "classes": 10, "image_shape": [1, 8, 8]}


def layer(out, fan_in, sparsity=0.0, seed=0, conv=False):
    module = nn.Conv2d(fan_in // 9, out, 3) if conv else nn.Linear(fan_in, out)
    return SparseWeights(module, sparsity, torch.Generator().manual_seed(seed))


def zeros(layer):
    return int((layer.mask == 0).sum())


def test_gmp_formula_by_hand():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i 0.1, s_f 0.9, t0 100, n dt 400
    expected = {0: 0.1, 100: 0.1, 200: 0.9 - 0.8 * 0.75**3, 300: 0.9 - 0.8 * 0.5**3, 400: 0.9 - 0.8 * 0.25**3,
                500: 0.9, 900: 0.9}
    for step, value in expected.items():
        assert gmp_sparsity(step, 0.1, 0.9, 100, 500) == pytest.approx(value)


def test_gmp_during_fit_prunes_to_the_formula_at_every_update(trained_dir, tiny_params_path):
    params = load_params(tiny_params_path, ["prune.exclude=[]", "prune.method=gmp", "prune.sparsity=0.9",
                                            "prune.initial_sparsity=0.3"])
    splits, meta = read_splits(trained_dir)
    model = build_model(params, meta)
    plan = make_plan(model, params.prune)
    steps_per_epoch = -(-len(splits["train"]) // params.train.batch_size)
    start, end = 2, 2 * steps_per_epoch - 1
    gradual = GradualPruning(plan, 0.3, start, end, frequency=3)
    seen = {}

    def after_step(m, step):
        gradual(m, step)
        seen[step] = {name: zeros(lay) for name, lay in weight_layers(m).items()}

    fit(model, params.train, splits, seed=params.seed, epochs=2, after_step=after_step)
    expected_steps = list(range(start, end + 1, 3)) + ([end] if (end - start) % 3 else [])
    assert gradual.updates == expected_steps
    trained_zeros = {"layers.0": 32 * 32, "head": 0}  # layers.0 came with a 0.5 mask, head dense
    for step in gradual.updates:
        target = 0.9 + (0.3 - 0.9) * (1 - (step - start) / (end - start)) ** 3
        for name, lay in weight_layers(model).items():
            numel = lay.mask.numel()
            assert seen[step][name] == max(trained_zeros[name], numel - round((1 - target) * numel)), (step, name)
    assert seen[end]["head"] == 320 - round(0.1 * 320)


def test_global_threshold_matches_a_reference_over_all_weights():
    layers = [layer(30, 20, seed=1), layer(10, 50, 0.6, seed=2), layer(8, 27, seed=3, conv=True)]
    weights = [(lay.module.weight * lay.mask).detach().clone() for lay in layers]
    magnitude_prune(layers, 0.8)
    everything = torch.cat([w.abs().flatten() for w in weights])
    keep = round(0.2 * everything.numel())
    threshold = everything.topk(keep).values.min()
    for lay, w in zip(layers, weights):
        assert torch.equal(lay.mask.bool(), w.abs() >= threshold)
    assert sum(int(lay.mask.sum()) for lay in layers) == keep
    # the layers end up with different sparsities: one threshold, not one target each
    assert len({round(1 - float(lay.mask.mean()), 3) for lay in layers}) == 3


def test_global_plan_ranks_the_layers_without_override_together(tiny_params_path):
    params = load_params(tiny_params_path, ["prune.scope=global", "prune.exclude=[]", "prune.sparsity=0.8"])
    model = build_model(params, META)
    weights = {n: lay.module.weight.detach().abs() * lay.mask for n, lay in weight_layers(model).items()}
    make_plan(model, params.prune).prune()
    everything = torch.cat([w.flatten() for w in weights.values()])
    threshold = everything.topk(round(0.2 * everything.numel())).values.min()
    for name, lay in weight_layers(model).items():
        assert torch.equal(lay.mask.bool(), weights[name] >= threshold)


def test_layerwise_plan_with_overrides_and_exclusions(tiny_params_path):
    params = load_params(tiny_params_path, ["prune.sparsity=0.7", "prune.exclude=[]",
                                            "prune.overrides=[{name: head, sparsity: 0.25}]"])
    model = build_model(params, META)
    make_plan(model, params.prune).prune()
    layers = weight_layers(model)
    assert zeros(layers["layers.0"]) == 2048 - round(0.3 * 2048)
    assert zeros(layers["head"]) == 320 - round(0.75 * 320)


@pytest.mark.parametrize("first, then", [(0.9, 0.5), (0.5, 0.9), (0.95, 0.0)])
@pytest.mark.parametrize("pattern", [Block(), Block(1, 4), Block(2, 2)])
def test_masks_never_resurrect_a_pruned_weight(first, then, pattern):
    lay = layer(8, 16, 0.4, seed=5)
    start = lay.mask.clone()
    magnitude_prune([lay], first, pattern)
    after_first = lay.mask.clone()
    with torch.no_grad():  # the pruned weights grow back in the optimizer's dreams: the mask must win
        lay.module.weight.add_(1.0)
    lay.rezero()
    magnitude_prune([lay], then, pattern)
    assert not (lay.mask.bool() & ~after_first.bool()).any()
    assert not (after_first.bool() & ~start.bool()).any()
    assert not ((lay.module.weight != 0) & (lay.mask == 0)).any()
    assert 1 - float(lay.mask.mean()) >= max(first, then, 0.4) - 1 / 64


def test_pruning_respects_masks_through_fine_tuning(trained_dir, tiny_params_path):
    params = load_params(tiny_params_path, ["prune.method=nm", "prune.n=1", "prune.m=4"])
    splits, meta = read_splits(trained_dir)
    model = build_model(params, meta)
    make_plan(model, params.prune).prune()
    masks = {n: lay.mask.clone() for n, lay in weight_layers(model).items()}
    fit(model, params.train, splits, seed=params.seed, epochs=1)
    for name, lay in weight_layers(model).items():
        assert torch.equal(lay.mask, masks[name])
        assert not ((lay.module.weight != 0) & (lay.mask == 0)).any()


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (1, 8), (3, 8)])
@pytest.mark.parametrize("conv", [False, True])
def test_nm_keeps_the_n_largest_unmasked_of_every_m(n, m, conv):
    lay = layer(16, 72 if conv else 64, 0.3, seed=n * 10 + m, conv=conv)
    before_mask = lay.mask.clone()
    before = as_matrix(lay.module.weight.detach().abs() * lay.mask).reshape(16, -1, m)
    active = as_matrix(before_mask).reshape(16, -1, m).bool()
    nm_prune(lay, n, m)
    kept = as_matrix(lay.mask).reshape(16, -1, m).bool()
    assert ((as_matrix(lay.module.weight) != 0).reshape(16, -1, m).sum(dim=2) <= n).all()
    assert not (kept & ~active).any()
    assert (kept.sum(dim=2) == active.sum(dim=2).clamp(max=n)).all()
    smallest_kept = torch.where(kept, before, torch.full_like(before, float("inf"))).min(dim=2).values
    largest_dropped = torch.where(active & ~kept, before, torch.full_like(before, -1.0)).max(dim=2).values
    assert (smallest_kept >= largest_dropped).all()
    assert check(NM(n, m), lay.module.weight, before_mask, lay.mask)[1] == 0


def test_conv_groups_run_along_input_channels():
    weight = torch.arange(2 * 4 * 3 * 3, dtype=torch.float).reshape(2, 4, 3, 3)
    mat = as_matrix(weight)
    assert torch.equal(mat[0, :4], weight[0, :, 0, 0])  # first group: 4 channels at kernel position (0, 0)
    assert torch.equal(from_matrix(mat, weight), weight)


def test_pattern_checks_can_fail():
    dense = layer(8, 16, seed=3)
    groups, violations = check(NM(2, 4), dense.module.weight, dense.mask, dense.mask)
    assert (groups, violations) == (32, 32)
    before = dense.mask.clone()
    magnitude_prune([dense], 0.5, Block(2, 4))
    assert check(Block(2, 4), dense.module.weight, before, dense.mask) == (16, 0)
    dense.mask[0, 0] = 1 - dense.mask[0, 0]  # break one block
    assert check(Block(2, 4), dense.module.weight, before, dense.mask)[1] == 1


def test_block_pruning_keeps_the_blocks_with_the_largest_norms():
    lay = layer(16, 32, seed=9)
    w = lay.module.weight.detach().clone()
    magnitude_prune([lay], 0.75, Block(4, 4))
    norms = w.reshape(4, 4, 8, 4).permute(0, 2, 1, 3).reshape(4, 8, 16).norm(dim=2)
    kept = lay.mask.reshape(4, 4, 8, 4).permute(0, 2, 1, 3).reshape(4, 8, 16)
    assert ((kept.sum(dim=2) == 0) | (kept.sum(dim=2) == 16)).all()
    kept_blocks = kept.sum(dim=2) > 0
    assert int(kept_blocks.sum()) == 8
    assert norms[kept_blocks].min() > norms[~kept_blocks].max()


@pytest.mark.parametrize("overrides, message", [
    (["prune.method=block", "prune.block=3x3"], "prune.block = '3x3': 3x3 does not tile its 32x64 weight matrix (units x inputs) in layer layers.0"),
    (["prune.method=block", "prune.block=16x1", "prune.exclude=[]"], "prune.block = '16x1': 16x1 does not tile its 10x32 weight matrix (units x inputs) in layer head"),
    (["prune.method=nm", "prune.n=2", "prune.m=6"], "prune.m = 6: 2:6 does not divide its 64 inputs per unit in layer layers.0"),
    (["prune.overrides=[{name: layers.3, sparsity: 0.5}]"], "prune.overrides.0.name = 'layers.3': no such layer; the model's layers are layers.0, head"),
    (["prune.exclude=[head, conv.0]"], "prune.exclude.1 = 'conv.0': no such layer"),
    (["prune.exclude=[layers.0, head]"], "prune.exclude: every layer is excluded"),
])
def test_plans_that_do_not_fit_the_model_are_params_errors(tiny_params_path, overrides, message):
    params = load_params(tiny_params_path, overrides)
    with pytest.raises(ParamsError) as info:
        make_plan(build_model(params, META), params.prune)
    assert message in str(info.value)


@pytest.mark.parametrize("override, expected", [
    ("prune.n=4", "prune.n = 4: must be < prune.m (4)"),
    ("prune.sparsity=1.0", "prune.sparsity = 1.0: must be in [0, 1)"),
    ("prune.sparsity=-0.5", "prune.sparsity = -0.5: must be in [0, 1)"),
    ("prune.block=4by4", "prune.block = '4by4': must be ROWSxCOLS, e.g. 1x16, 16x1 or 4x4"),
    ("prune.method=prune_it", "prune.method = 'prune_it': must be one of: none, magnitude, gmp, nm, block"),
    ("prune.overrides=[{name: head, sparsity: 1.5}]", "prune.overrides.0.sparsity = 1.5: must be in [0, 1)"),
    ("prune.overrides=[{name: layers.0, sparsity: 0.5}, {name: layers.0, sparsity: 0.6}]",
     "prune.overrides.1.name = 'layers.0': layer named twice"),
    ("sparsity.dynamic.method=deep_r", "sparsity.dynamic.method = 'deep_r': must be one of: none, set, rigl"),
    ("sparsity.dynamic.drop_fraction=1", "sparsity.dynamic.drop_fraction = 1: must be in (0, 1)"),
])
def test_bad_prune_and_sparsity_params(tiny_params_path, override, expected):
    with pytest.raises(ParamsError) as info:
        load_params(tiny_params_path, [override])
    assert expected in str(info.value)


@pytest.mark.parametrize("overrides, expected", [
    (["prune.method=gmp", "prune.end_epoch=3"], "prune.end_epoch = 3: must be <= prune.finetune_epochs (2)"),
    (["prune.method=gmp", "prune.start_epoch=2"], "prune.start_epoch = 2: must be < prune.end_epoch (2)"),
    (["prune.method=gmp", "prune.initial_sparsity=0.99"], "prune.initial_sparsity = 0.99: must be <= prune.sparsity (0.95)"),
    (["prune.method=nm", "prune.scope=global"], "prune.scope = 'global': nm keeps n of every m weights"),
])
def test_bad_prune_combinations(tiny_params_path, overrides, expected):
    with pytest.raises(ParamsError) as info:
        load_params(tiny_params_path, ["prune.end_epoch=2"] + overrides)
    assert expected in str(info.value)
