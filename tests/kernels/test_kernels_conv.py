"""Conv, pool and 2-d kWTA kernels against torch: padding, stride, local/global kWTA, ties, both
inputs (dense and sparse), the whole CNN engine in both activation modes; the AVX2 path in a
subprocess; the generated kernels are current."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsecli.kernels import check_against_dense, k_winners, scatter_dense
from sparsecli.kernels.cpu import AVX2_ENV
from sparsecli.kernels.conv import ConvSpec, active_input_conv2d, conv2d, hwc_to_chw_columns
from sparsecli.kernels.engine import DenseCNNEngine, LayerSpec, SparseCNNEngine


def conv_weight(rng, c_out, c_in, k, density, blocks=False):
    w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    if blocks:  # 16 output channels kept or dropped together per (input channel, tap)
        keep = rng.random((-(-c_out // 16), c_in, k, k)) < density
        w *= np.repeat(keep, 16, axis=0)[:c_out]
    else:
        w *= rng.random(w.shape) < density
    return w


def assert_close(out, ref):
    check = check_against_dense(out, ref)
    assert check.ok, str(check)


@pytest.mark.parametrize(("c_in", "c_out", "k", "pad", "stride", "hw"),
                         [(1, 16, 5, 0, 1, (12, 12)), (3, 20, 3, 1, 2, (9, 11)), (8, 32, 3, 2, 1, (7, 6))])
@pytest.mark.parametrize("density", [0.3, 1.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_dense_input_equals_torch(c_in, c_out, k, pad, stride, hw, density, batch):
    rng = np.random.default_rng(c_in + c_out)
    w = conv_weight(rng, c_out, c_in, k, density, blocks=density < 1)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = rng.standard_normal((batch, c_in, *hw)).astype(np.float32)
    out = conv2d(x, ConvSpec(w, b, padding=pad, stride=stride))
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride, padding=pad)
    assert out.shape == tuple(ref.shape)
    assert_close(out.reshape(batch, -1), ref.reshape(batch, -1))


@pytest.mark.parametrize(("c_in", "c_out", "k", "pad", "hw", "relu"),
                         [(1, 64, 5, 0, (12, 12), True), (3, 20, 3, 1, (9, 11), True), (2, 16, 3, 0, (9, 9), False)])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_dense_input_pooled_in_registers_equals_torch(c_in, c_out, k, pad, hw, relu, batch):
    """Dense input, then 2x2 max-pooling (and ReLU) fused into the conv's tiles: odd maps pool
    with floor like torch, channel counts that are not whole blocks and odd pooled counts included."""
    from sparsecli.kernels.conv import ConvLayer

    rng = np.random.default_rng(c_in + c_out + k)
    w = conv_weight(rng, c_out, c_in, k, 0.5)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = rng.standard_normal((batch, c_in, *hw)).astype(np.float32)
    spec = ConvSpec(w, b, padding=pad, pool=2, relu=relu)
    layer = ConvLayer(spec, (c_in, *hw), sparse_input=False, chw_input=True)
    assert layer._pool2
    c, h, wd = layer.out_shape
    out = layer(x.reshape(batch, -1)).reshape(batch, h, wd, c).transpose(0, 3, 1, 2)
    ref = F.max_pool2d(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=pad), 2)
    ref = torch.relu(ref) if relu else ref
    assert_close(np.ascontiguousarray(out).reshape(batch, -1), ref.reshape(batch, -1))


@pytest.mark.parametrize(("c_in", "c_out", "k", "pad", "stride"),
                         [(4, 16, 3, 1, 1), (6, 24, 5, 2, 2), (16, 32, 3, 0, 1), (3, 48, 5, 4, 1), (5, 64, 3, 2, 1)])
@pytest.mark.parametrize("active", [0.05, 0.3])
def test_conv_sparse_input_equals_torch(c_in, c_out, k, pad, stride, active):
    """Unstructured weights: the output-stationary gather (stride 1, 16-64 channels; padding up to
    the kernel's size) or the scatter (any other stride or channel count)."""
    rng = np.random.default_rng(k + c_out)
    w = conv_weight(rng, c_out, c_in, k, 0.4)
    b = rng.standard_normal(c_out).astype(np.float32)
    h, wd = 10, 9
    x = rng.standard_normal((2, h * wd * c_in)).astype(np.float32)  # flat HWC
    n_active = max(1, int(active * x.shape[1]))
    idx, val = k_winners(x, n_active)
    out = active_input_conv2d(idx, val, ConvSpec(w, b, padding=pad, stride=stride), (c_in, h, wd))
    dense_hwc = scatter_dense(idx, val, x.shape[1]).reshape(2, h, wd, c_in)
    ref = F.conv2d(torch.from_numpy(dense_hwc).permute(0, 3, 1, 2), torch.from_numpy(w), torch.from_numpy(b),
                   stride=stride, padding=pad).permute(0, 2, 3, 1).reshape(2, -1)
    assert_close(out, ref)


def test_hwc_permutation_matches_torch_flatten():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # C, H, W
    hwc = x.transpose(1, 2, 0).reshape(-1)
    np.testing.assert_array_equal(x.reshape(-1)[hwc_to_chw_columns(2, 3, 4)], hwc)


@pytest.mark.parametrize("local", [False, True])
def test_kwta_ties_keep_exactly_k(local):
    """A map of equal values: kWTA keeps exactly k (per position if local), as topk would count."""
    w = np.ones((16, 1, 1, 1), np.float32)
    spec = ConvSpec(w, pool=1, k=3 if local else 40, local=local)
    x = np.ones((2, 1, 6, 6), np.float32)
    out = conv2d(x, spec)
    kept = (out != 0).reshape(2, 16, 36)
    if local:
        assert (kept.sum(axis=1) == 3).all()
    else:
        assert (kept.reshape(2, -1).sum(axis=1) == 40).all()


def small_cnn(rng, pool_first, local, blocks):
    c1 = ConvSpec(conv_weight(rng, 16, 2, 3, 0.6, blocks), (0.1 * rng.standard_normal(16)).astype(np.float32),
                  padding=1, pool=2, k=2 if local else 60, local=local, pool_first=pool_first)
    s1 = c1.out_shape((2, 12, 12))
    c2 = ConvSpec(conv_weight(rng, 32, 16, 3, 0.3, blocks), None, padding=1, stride=1, pool=2,
                  k=3 if local else 20, local=local, pool_first=pool_first)
    n = int(np.prod(c2.out_shape(s1)))
    lin = [LayerSpec((rng.standard_normal((40, n)) * (rng.random((40, n)) < 0.4)).astype(np.float32), None, 8),
           LayerSpec(rng.standard_normal((5, 40)).astype(np.float32))]
    return [c1, c2], lin


@pytest.mark.parametrize(("pool_first", "local", "blocks"), [(True, False, True), (False, False, False),
                                                              (False, True, True), (True, True, False)])
@pytest.mark.parametrize("batch", [1, 11])  # 11: more rows than the engine's chunk
def test_cnn_engine_equals_torch(pool_first, local, blocks, batch):
    rng = np.random.default_rng(3)
    convs, lin = small_cnn(rng, pool_first, local, blocks)
    x = rng.standard_normal((batch, 2 * 12 * 12)).astype(np.float32)
    ref = DenseCNNEngine.from_specs((2, 12, 12), convs, lin)(x)
    for activations in ("sparse", "dense"):
        engine = SparseCNNEngine.from_specs((2, 12, 12), convs, lin, activations=activations)
        assert_close(engine(x), ref)
    kernels = [row["kernel"] for row in SparseCNNEngine.from_specs((2, 12, 12), convs, lin).describe()]
    assert kernels[:2] == ["sparse-dense", "sparse-sparse"]  # the conv fed winners scatters


def test_dense_enough_unstructured_layer_fed_winners_packs_as_dense_columns():
    """An unstructured layer of density >= COLUMN_DENSE_THRESHOLD fed winners runs as dense columns
    (a 16-lane update per 16 outputs beats a scalar scatter-add per non-zero); sparser ones stay CSC."""
    from sparsecli.kernels.formats import COLUMN_DENSE_THRESHOLD, ColumnCSC, DenseColumns, pack_columns

    rng = np.random.default_rng(9)
    w = rng.standard_normal((64, 80)).astype(np.float32)
    dense_enough = w * (rng.random(w.shape) < COLUMN_DENSE_THRESHOLD + 0.1)
    sparse = w * (rng.random(w.shape) < COLUMN_DENSE_THRESHOLD / 3)
    assert isinstance(pack_columns(dense_enough), DenseColumns)
    assert isinstance(pack_columns(dense_enough, "unstructured"), ColumnCSC)  # asked for explicitly
    assert isinstance(pack_columns(sparse), ColumnCSC)
    convs, lin = small_cnn(np.random.default_rng(3), True, False, False)
    assert SparseCNNEngine.from_specs((2, 12, 12), convs, lin).describe()[2]["format"] == "DenseColumns"


def test_conv_spec_rejects_bad_arguments():
    with pytest.raises(ValueError, match="4-D"):
        ConvSpec(np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="stride"):
        ConvSpec(np.ones((1, 1, 3, 3), np.float32), stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        ConvSpec(np.ones((1, 1, 5, 5), np.float32)).conv_shape(3, 3)


def test_generated_kernels_are_current():
    from sparsecli.kernels import codegen

    assert codegen.TARGET.read_text() == codegen.source(), "run: python -m sparsecli.kernels.codegen"


AVX2_CHILD = """
import json, sys
import numpy as np
from sparsecli.kernels.cpu import simd_path
from sparsecli.kernels.measure import gsc_network
from sparsecli.kernels.engine import SparseEngine, DenseEngine
from sparsecli.kernels import check_against_dense
from sparsecli.kernels import sparse_dense
rng = np.random.default_rng(0)
ok = []
for structure in ("blocks16", "unstructured"):
    specs = gsc_network(0.9, 0.1, structure)
    small = [type(s)(s.weight[:64, :96] if i == 0 else s.weight[:64, :64] if i == 1 else s.weight[:, :64],
                     s.bias[:64] if i < 2 else s.bias, 8 if i < 2 else None) for i, s in enumerate(specs)]
    for batch in (1, 20):
        x = rng.standard_normal((batch, 96)).astype(np.float32)
        ok.append(check_against_dense(SparseEngine.from_layers(small)(x), DenseEngine(small)(x)).ok)
# a small CNN with the GSC network's ops: conv+pool fused, kept-block scatter or gather, dense columns
from sparsecli.kernels.conv import ConvSpec
from sparsecli.kernels.engine import DenseCNNEngine, LayerSpec, SparseCNNEngine
for blocks in (True, False):
    keep = np.repeat(rng.random((2, 16, 3, 3)) < 0.3, 16, axis=0) if blocks else rng.random((32, 16, 3, 3)) < 0.3
    convs = [ConvSpec(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), padding=1, pool=2, k=40, pool_first=True),
             ConvSpec((rng.standard_normal((32, 16, 3, 3)) * keep).astype(np.float32), padding=1, pool=2, k=20,
                      pool_first=True)]
    lin = [LayerSpec((rng.standard_normal((40, 288)) * (rng.random((40, 288)) < 0.4)).astype(np.float32), None, 8),
           LayerSpec(rng.standard_normal((5, 40)).astype(np.float32))]
    for batch in (1,):  # batch 1 only: the threaded variants would add their compile time
        x = rng.standard_normal((batch, 144)).astype(np.float32)
        ref = DenseCNNEngine.from_specs((1, 12, 12), convs, lin, lowest_ties=True)(x)
        ok.append(check_against_dense(SparseCNNEngine.from_specs((1, 12, 12), convs, lin)(x), ref).ok)
print(json.dumps({"path": simd_path(), "tile": sparse_dense.BLOCKS_TILE, "ok": ok}))
"""


@pytest.mark.background([sys.executable, "-c", AVX2_CHILD], env=AVX2_ENV)
def test_avx2_path_in_a_subprocess(background):
    assert background.returncode == 0, background.stderr[-2000:]
    result = json.loads(background.stdout.strip().splitlines()[-1])
    assert result["path"] == "avx2" and result["tile"] == 4
    assert len(result["ok"]) == 6 and all(result["ok"])


def bf16_rounded(w):
    from sparsecli.kernels.precision import from_bf16_bits, to_bf16_bits

    return from_bf16_bits(to_bf16_bits(w)).reshape(w.shape)


@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
@pytest.mark.parametrize("batch", [1, 20])
def test_bf16_kernels_equal_dense_on_rounded_weights(structure, batch):
    """bf16 weights: every sparse kernel equals float32 dense on the bf16-rounded weights."""
    from test_kernels_formats import masked_weight

    from sparsecli.kernels import sparse_dense, sparse_sparse

    rng = np.random.default_rng(5)
    w = masked_weight(rng, 70, 90, 0.2, blocks=structure == "blocks16")
    b = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((batch, 90)).astype(np.float32)
    ref = x.astype(np.float64) @ bf16_rounded(w).T.astype(np.float64) + b
    sd = sparse_dense.prepare(w, b, structure=structure, precision="bf16")
    assert sd.packed.values.dtype == np.uint16
    assert_close(sd(x), ref)
    idx, val = k_winners(x, 9)
    ss = sparse_sparse.prepare(w, b, structure=structure, precision="bf16")
    ref_ss = scatter_dense(idx, val, 90).astype(np.float64) @ bf16_rounded(w).T.astype(np.float64) + b
    assert_close(ss(idx, val), ref_ss)


def test_bf16_conv_equals_torch_on_rounded_weights():
    rng = np.random.default_rng(6)
    w = conv_weight(rng, 32, 3, 3, 0.5)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    from sparsecli.kernels.conv import ConvLayer

    layer = ConvLayer(ConvSpec(w, padding=1), (3, 9, 9), sparse_input=False, chw_input=True, precision="bf16")
    out = layer(x.reshape(2, -1)).reshape(2, 9, 9, 32).transpose(0, 3, 1, 2)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(bf16_rounded(w)), padding=1)
    assert_close(out.reshape(2, -1), ref.reshape(2, -1))


@pytest.mark.parametrize(("c_in", "c_out", "k", "pad", "hw"), [(4, 16, 3, 1, (10, 9)), (6, 48, 5, 2, (7, 8)),
                                                               (16, 32, 3, 0, (5, 5)), (3, 32, 5, 4, (4, 6))])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 3])
def test_block_sparse_input_conv_equals_torch(c_in, c_out, k, pad, hw, precision, batch):
    """Sparse input, 16x1-block weights (stride 1): only the kept blocks are added, into a padded
    map; equal to torch on the same (for bf16: rounded) weights, padding larger than the map included."""
    from sparsecli.kernels.conv import ConvLayer

    rng = np.random.default_rng(c_in * c_out + k)
    w = conv_weight(rng, c_out, c_in, k, 0.3, blocks=True)
    b = rng.standard_normal(c_out).astype(np.float32)
    h, wd = hw
    x = rng.standard_normal((batch, h * wd * c_in)).astype(np.float32)
    idx, val = k_winners(x, max(1, x.shape[1] // 5))
    layer = ConvLayer(ConvSpec(w, b, padding=pad), (c_in, h, wd), sparse_input=True, precision=precision)
    assert layer._blocks is not None  # the block path ran, not the dense-vector gather
    dense_hwc = scatter_dense(idx, val, x.shape[1]).reshape(batch, h, wd, c_in)
    wr = w if precision == "fp32" else bf16_rounded(w)
    ref = F.conv2d(torch.from_numpy(dense_hwc).permute(0, 3, 1, 2), torch.from_numpy(wr), torch.from_numpy(b),
                   padding=pad).permute(0, 2, 3, 1).reshape(batch, -1)
    assert_close(layer((idx, val)), ref)


@pytest.mark.parametrize(("pool_first", "local", "blocks"), [(False, False, False), (True, False, True),
                                                              (False, True, True)])
def test_cnn_engine_on_tied_maps_equals_the_tie_aware_reference(pool_first, local, blocks):
    """Images of flat regions and integer weights: conv outputs tie exactly at kWTA thresholds (as
    upsampled digits do). The engine keeps the lowest channels-last indices, like the reference."""
    rng = np.random.default_rng(8)
    convs, lin = small_cnn(rng, pool_first, local, blocks)
    convs = [ConvSpec(np.round(c.weight * 2), None, c.padding, c.stride, c.pool, c.k, c.local, c.pool_first)
             for c in convs]
    lin = [LayerSpec(np.round(s.weight * 2), None, s.k) for s in lin]
    x = np.kron(rng.integers(0, 3, size=(4, 2, 4, 4)), np.ones((3, 3))).astype(np.float32).reshape(4, -1)
    ref = DenseCNNEngine.from_specs((2, 12, 12), convs, lin, lowest_ties=True)(x)
    for activations in ("sparse", "dense"):
        np.testing.assert_allclose(SparseCNNEngine.from_specs((2, 12, 12), convs, lin, activations=activations)(x),
                                   ref, rtol=1e-6, atol=1e-4)
