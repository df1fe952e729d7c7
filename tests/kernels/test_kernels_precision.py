"""Reduced-precision weights in the linear kernels: each kernel equals float32 dense on the
weights rounded as the kernels store them (``precision.round_weight``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels_formats import masked_weight
from test_kernels_linear import assert_close

from sparsecli.kernels import DenseEngine, LayerSpec, SparseEngine, k_winners, pack_columns, sparse_dense, sparse_sparse
from sparsecli.kernels.kwinners import scatter_dense
from sparsecli.kernels.precision import INT8_MAX, channel_scale, round_weight


def test_int8_levels_and_scale_per_output_channel():
    w = np.array([[0.5, -1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.01, -0.3]], np.float32)
    scale = channel_scale(w)
    np.testing.assert_allclose(scale, [1.0 / INT8_MAX, 1.0, 2.0 / INT8_MAX], rtol=1e-6)
    r = round_weight(w, "int8")
    assert np.abs(r - w).max() <= scale.max() / 2 + 1e-7  # within half a level of its channel
    assert r[0, 1] == -1.0 and r[1].tolist() == [0.0, 0.0, 0.0]
    packed = pack_columns(w, "unstructured", "int8")
    assert packed.values.dtype == np.int8 and np.abs(packed.values).max() == INT8_MAX
    assert packed.values.size == np.count_nonzero(w)  # kept entries decided on the float weight


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
@pytest.mark.parametrize("batch", [1, 20, 64])  # 20, 64: the tiled sparse-dense and column-batched kernels
def test_reduced_precision_kernels_equal_dense_on_rounded_weights(precision, structure, batch):
    rng = np.random.default_rng(8)
    w = masked_weight(rng, 150, 90, 0.2, blocks=structure == "blocks16")
    b = rng.standard_normal(150).astype(np.float32)
    wr = round_weight(w, precision).astype(np.float64)
    x = rng.standard_normal((batch, 90)).astype(np.float32)
    for parallel in (False, True):
        sd = sparse_dense.prepare(w, b, structure=structure, parallel=parallel, precision=precision)
        assert_close(sd(x), x.astype(np.float64) @ wr.T + b)
        idx, val = k_winners(x, 12)
        ref = scatter_dense(idx, val, 90).astype(np.float64) @ wr.T + b
        ss = sparse_sparse.prepare(w, b, structure=structure, parallel=parallel, precision=precision)
        assert_close(ss(idx, val), ref)
        fused = sparse_sparse.prepare(w, b, k=15, structure=structure, parallel=parallel, precision=precision)
        out_idx, _ = fused(idx, val)
        for r in range(batch):
            assert set(out_idx[r].tolist()) == set(np.argsort(-ref[r])[:15].tolist())


@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
def test_int8_engine_equals_dense_on_rounded_weights(structure):
    rng = np.random.default_rng(9)
    specs = []
    for n_in, n_out, k in ((160, 150, 15), (150, 140, 14), (140, 12, None)):
        density = 1.0 if k is None else 0.1
        w = masked_weight(rng, n_out, n_in, density, blocks=structure == "blocks16") / np.sqrt(n_in * density)
        specs.append(LayerSpec(w.astype(np.float32), (0.1 * rng.standard_normal(n_out)).astype(np.float32), k))
    engine = SparseEngine.from_layers(specs, precision="int8")
    # the head is dense (stays float32); the sparse layers are int8
    rounded = [LayerSpec(round_weight(s.weight, "int8") if s.k else s.weight, s.bias, s.k) for s in specs]
    x = rng.standard_normal((64, 160)).astype(np.float32)
    assert_close(engine(x), DenseEngine(rounded, lowest_ties=True)(x))


def test_int8_conv_is_refused_with_a_clear_error():
    from sparsecli.kernels.conv import ConvSpec, prepare

    spec = ConvSpec(np.ones((16, 1, 3, 3), np.float32), np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="int8 is not supported for conv"):
        prepare(spec, (1, 8, 8), precision="int8")
