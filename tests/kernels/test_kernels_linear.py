"""Every linear kernel equals dense ``x @ W.T + b`` (tolerance: 1e-4 of the largest
output magnitude, plus 1e-5; see ``check_against_dense``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels_formats import masked_weight

from sparsecli.kernels import (
    active_from_dense,
    check_against_dense,
    dense_linear,
    k_winners,
    pack_columns,
    pack_rows,
    sparse_dense_linear,
    sparse_sparse_linear,
)
from sparsecli.kernels.sparse_dense import padded_rows
from sparsecli.kernels.sparse_sparse import sparse_sparse_linear_kwta

STRUCTURES = ["blocks16", "unstructured", "dense"]


def reference(x, w, b):
    out = x.astype(np.float64) @ w.T.astype(np.float64)
    return out if b is None else out + b


def layer(seed, n_out, n_in, density, structure):
    rng = np.random.default_rng(seed)
    w = masked_weight(rng, n_out, n_in, density, blocks=structure == "blocks16")
    b = rng.standard_normal(n_out).astype(np.float32)
    return rng, w, b


def assert_close(out, ref):
    check = check_against_dense(out, ref)
    assert check.ok, str(check)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", [1, 5, 20, 64])  # 5 and 20: the batch-tiled kernels' padding
@pytest.mark.parametrize(("n_out", "n_in", "density"), [(37, 50, 0.3), (300, 200, 0.05)])
def test_sparse_dense_equals_dense(structure, batch, n_out, n_in, density):
    rng, w, b = layer(0, n_out, n_in, density, structure)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    x[0] = 0.0  # an all-zero input row
    out = sparse_dense_linear(x, pack_rows(w, structure), b, parallel=False)
    assert out.shape == (batch, n_out) and out.dtype == np.float32
    assert_close(out, reference(x, w, b))
    np.testing.assert_allclose(out[0], b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize(("n_out", "n_in", "density", "k"), [(37, 50, 0.3, 5), (300, 200, 0.05, 20), (40, 33, 0.2, 1)])
def test_sparse_sparse_equals_dense(structure, batch, n_out, n_in, density, k):
    rng, w, b = layer(1, n_out, n_in, density, structure)
    idx, val = k_winners(rng.standard_normal((batch, n_in)).astype(np.float32), k)
    val[0] = 0.0  # an all-zero input row
    x = np.zeros((batch, n_in), np.float32)
    np.put_along_axis(x, idx.astype(np.intp), val, axis=1)
    out = sparse_sparse_linear(idx, val, pack_columns(w, structure), b, parallel=False)
    assert out.shape == (batch, n_out)
    assert_close(out, reference(x, w, b))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_parallel_kernels_equal_dense(structure):
    rng, w, b = layer(2, 100, 90, 0.2, structure)
    x = rng.standard_normal((64, 90)).astype(np.float32)
    assert_close(sparse_dense_linear(x, pack_rows(w, structure), b, parallel=True), reference(x, w, b))
    idx, val = k_winners(x, 9)
    xs = np.zeros_like(x)
    np.put_along_axis(xs, idx.astype(np.intp), val, axis=1)
    assert_close(sparse_sparse_linear(idx, val, pack_columns(w, structure), b, parallel=True), reference(xs, w, b))
    if structure == "blocks16":
        fused = sparse_sparse_linear_kwta(idx, val, pack_columns(w, structure), 10, b, parallel=True)
        serial = sparse_sparse_linear_kwta(idx, val, pack_columns(w, structure), 10, b, parallel=False)
        np.testing.assert_array_equal(fused[0], serial[0])
        np.testing.assert_array_equal(fused[1], serial[1])


@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
def test_all_zero_weight_and_no_bias(structure):
    w = np.zeros((48, 30), np.float32)
    x = np.random.default_rng(3).standard_normal((4, 30)).astype(np.float32)
    np.testing.assert_array_equal(sparse_dense_linear(x, pack_rows(w, structure)), 0.0)
    idx, val = active_from_dense(x)
    np.testing.assert_array_equal(sparse_sparse_linear(idx, val, pack_columns(w, structure)), 0.0)


def test_active_from_dense_pads_short_rows():
    x = np.array([[0, 2, 0, 3], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32)
    idx, val = active_from_dense(x)
    assert idx.shape == (3, 2)
    w = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    assert_close(sparse_sparse_linear(idx, val, pack_columns(w)), reference(x, w, None))


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", [1, 64])
def test_fused_linear_kwta_equals_dense_then_topk(structure, batch):
    rng, w, b = layer(5, 200, 150, 0.1, structure)
    idx, val = k_winners(rng.standard_normal((batch, 150)).astype(np.float32), 15)
    x = np.zeros((batch, 150), np.float32)
    np.put_along_axis(x, idx.astype(np.intp), val, axis=1)
    ref = reference(x, w, b)
    out_idx, out_val = sparse_sparse_linear_kwta(idx, val, pack_columns(w, structure), 20, b)
    assert out_idx.shape == (batch, 20)
    for r in range(batch):
        assert set(out_idx[r].tolist()) == set(np.argsort(-ref[r])[:20].tolist())
        np.testing.assert_allclose(out_val[r], ref[r, out_idx[r].astype(np.intp)], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("batch", [37, 64])  # 37: a last tile of 5 rows
def test_dense_input_layer_with_kwta_in_tiles_equals_dense_then_topk(batch, precision):
    """A dense-input 16x1-blocks layer with kWTA at one thread goes tile by tile (transpose,
    blocks, scale, kWTA per tile of rows): the same winners as the whole batch through dense."""
    from sparsecli.kernels import sparse_dense

    rng, w, b = layer(9, 160, 300, 0.2, "blocks16")
    x = rng.standard_normal((batch, 300)).astype(np.float32)
    lay = sparse_dense.prepare(w, b, k=16, structure="blocks16", parallel=False, precision=precision)
    from sparsecli.kernels.precision import round_weight

    ref = reference(x, round_weight(w, precision), b)
    idx, val = lay(x)
    for r in range(batch):
        assert set(idx[r].tolist()) == set(np.argsort(-ref[r])[:16].tolist())
        np.testing.assert_allclose(val[r], ref[r, idx[r].astype(np.intp)], rtol=1e-4, atol=1e-4)


def test_dense_linear_matches_numpy():
    rng, w, b = layer(6, 30, 20, 1.0, "dense")
    x = rng.standard_normal((3, 20)).astype(np.float32)
    assert_close(dense_linear(x, w, b), reference(x, w, b))


def test_argument_checks_raise_value_error():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="x must be"):
        sparse_dense_linear(np.ones((2, 5), np.float32), pack_rows(w))
    with pytest.raises(ValueError, match="float32"):
        sparse_dense_linear(np.ones((2, 3)), pack_rows(w))
    with pytest.raises(ValueError, match="bias"):
        sparse_dense_linear(np.ones((2, 3), np.float32), pack_rows(w), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="indices must lie"):
        sparse_sparse_linear(np.array([[3]]), np.ones((1, 1), np.float32), pack_columns(w))
    with pytest.raises(ValueError, match="column format"):
        sparse_sparse_linear(np.array([[0]]), np.ones((1, 1), np.float32), pack_rows(w))


@pytest.mark.parametrize("structure", ["blocks16", "dense"])
@pytest.mark.parametrize("parallel", [False, True])
def test_column_batched_kernel_equals_row_kernel_and_dense(structure, parallel):
    """From ``COLUMNS_MIN_BATCH`` rows on, blocks/dense layouts run column-batched: the same
    outputs as dense (rows with padding and all-zero rows included) and the same winners."""
    from sparsecli.kernels.sparse_sparse import COLUMNS_MIN_BATCH

    batch = COLUMNS_MIN_BATCH + 3  # not a multiple of the thread chunks
    rng, w, b = layer(7, 300, 200, 0.05 if structure != "dense" else 1.0, structure)
    idx, val = k_winners(rng.standard_normal((batch, 200)).astype(np.float32), 20)
    val[0] = 0.0  # an all-zero input row
    val[1, :5] = 0.0  # padding entries (value 0) in a row
    x = np.zeros((batch, 200), np.float32)
    np.put_along_axis(x, idx.astype(np.intp), val, axis=1)
    ref = reference(x, w, b)
    packed = pack_columns(w, structure)
    assert_close(sparse_sparse_linear(idx, val, packed, b, parallel=parallel), ref)
    out_idx, out_val = sparse_sparse_linear_kwta(idx, val, packed, 20, b, parallel=parallel)
    for r in range(batch):
        assert set(out_idx[r].tolist()) == set(np.argsort(-ref[r])[:20].tolist())
    rows_idx, rows_val = sparse_sparse_linear_kwta(idx[:1], val[:1], packed, 20, b)  # the per-row kernel
    np.testing.assert_array_equal(np.sort(rows_idx[0]), np.sort(out_idx[0]))


@pytest.mark.parametrize("n_in", [40, 70_000])  # uint16 indices (padded rows, four to a word), uint32 (plain)
def test_csr_rows_of_every_length_and_start(n_in):
    """Rows of 0-19 non-zeros: every padding to whole words (uint16), every start and tail (uint32)."""
    rng = np.random.default_rng(10)
    w = np.zeros((20, n_in), np.float32)
    for r in range(20):
        w[r, rng.choice(n_in, r, replace=False)] = rng.standard_normal(r)
    b = rng.standard_normal(20).astype(np.float32)
    x = rng.standard_normal((3, n_in)).astype(np.float32)
    packed = pack_rows(w, "unstructured")
    assert packed.col.dtype == (np.uint16 if n_in < 65536 else np.uint32)
    for batch in (1, 3):
        assert_close(sparse_dense_linear(x[:batch], packed, b, parallel=False), reference(x[:batch], w, b))
    rows, col4 = padded_rows(packed)
    if n_in < 65536:  # the kernels' copy: the same matrix, rows in whole multiples of 8, their indices as words
        assert (np.diff(rows.row_ptr.astype(np.int64)) % 8 == 0).all() and col4.dtype == np.uint64
        dense = np.zeros_like(w)
        for r in range(20):
            a, z = rows.row_ptr[r], rows.row_ptr[r + 1]
            np.add.at(dense[r], rows.col[a:z].astype(np.int64), rows.values[a:z])
        np.testing.assert_array_equal(dense, w)
    else:
        assert rows is packed and col4.size == 0
