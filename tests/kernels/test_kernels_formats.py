"""Packing: layouts hold exactly the weight, structure detection, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecli.kernels import formats


def masked_weight(rng, n_out, n_in, density, blocks):
    """A float32 weight with ~density non-zeros, unstructured or in aligned 16x1 blocks."""
    if blocks:
        kept = rng.random((-(-n_out // 16), n_in)) < density
        mask = np.repeat(kept, 16, axis=0)[:n_out]
    else:
        mask = rng.random((n_out, n_in)) < density
    return (rng.standard_normal((n_out, n_in)) * mask).astype(np.float32)


def unpack(p) -> np.ndarray:
    """Rebuild the dense weight from any layout."""
    w = np.zeros((p.n_out_padded, p.n_in), np.float32)
    if isinstance(p, formats.DenseColumns):
        return p.weight_t[:, : p.n_out].T.copy()
    if isinstance(p, formats.DenseRows):
        return p.weight.copy()
    if isinstance(p, (formats.ColumnBlocks, formats.ColumnCSC)):
        for j in range(p.n_in):
            for q in range(p.col_ptr[j], p.col_ptr[j + 1]):
                if isinstance(p, formats.ColumnBlocks):
                    w[16 * p.block_row[q] : 16 * p.block_row[q] + 16, j] = p.values[q]
                else:
                    w[p.row[q], j] = p.values[q]
    else:
        for r in range(len(p.row_ptr) - 1):
            for q in range(p.row_ptr[r], p.row_ptr[r + 1]):
                if isinstance(p, formats.RowBlocks):
                    w[16 * r : 16 * r + 16, p.col[q]] = p.values[q]
                else:
                    w[r, p.col[q]] = p.values[q]
    return w[: p.n_out]


@pytest.mark.parametrize("structure", ["blocks16", "unstructured", "dense"])
@pytest.mark.parametrize("pack", [formats.pack_columns, formats.pack_rows])
@pytest.mark.parametrize("shape", [(37, 50), (64, 17)])
def test_packing_round_trips(pack, structure, shape):
    rng = np.random.default_rng(1)
    w = masked_weight(rng, *shape, 0.2, blocks=structure == "blocks16")
    np.testing.assert_array_equal(unpack(pack(w, structure)), w)


def test_all_zero_weight_packs_empty():
    w = np.zeros((40, 30), np.float32)
    assert formats.detect_structure(w) == "unstructured"
    for pack in (formats.pack_columns, formats.pack_rows):
        for structure in ("blocks16", "unstructured"):
            p = pack(w, structure)
            assert p.nnz_stored == 0
            np.testing.assert_array_equal(unpack(p), w)


def test_small_unsigned_index_types():
    w = masked_weight(np.random.default_rng(0), 100, 80, 0.1, blocks=False)
    p = formats.pack_columns(w, "unstructured")
    assert p.row.dtype == np.uint16 and p.col_ptr.dtype == np.uint32
    assert formats.index_dtype(70_000) == np.uint32


def test_detects_block_structure():
    rng = np.random.default_rng(0)
    blocky = masked_weight(rng, 1500, 160, 0.1, blocks=True)  # 1500 rows: last block partly padding
    assert formats.block_fill(blocky) == pytest.approx(1.0)
    assert formats.detect_structure(blocky) == "blocks16"
    assert isinstance(formats.pack_columns(blocky), formats.ColumnBlocks)
    assert isinstance(formats.pack_rows(blocky), formats.RowBlocks)
    loose = masked_weight(rng, 160, 160, 0.1, blocks=False)
    assert formats.block_fill(loose) < 0.2
    assert formats.detect_structure(loose) == "unstructured"
    assert formats.detect_structure(masked_weight(rng, 20, 20, 0.9, blocks=False)) == "dense"


@pytest.mark.parametrize(
    "weight",
    [np.zeros(5, np.float32), np.zeros((0, 3), np.float32), np.full((2, 2), np.nan, np.float32)],
)
def test_bad_weights_raise_value_error(weight):
    with pytest.raises(ValueError):
        formats.pack_columns(weight)


def test_unknown_structure_raises_value_error():
    with pytest.raises(ValueError, match="structure"):
        formats.pack_rows(np.ones((2, 2), np.float32), "blocks8")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_vector_data_starts_at_cache_line_boundaries(precision):
    """Block values, dense columns and the layers' output buffers start at 64 bytes: numpy gives
    16 or 32, and a 16-lane access across two cache lines costs about twice one within one."""
    from sparsecli.kernels import sparse_dense, sparse_sparse

    w = masked_weight(np.random.default_rng(0), 70, 50, 0.3, blocks=True)
    assert formats.pack_rows(w, "blocks16", precision).values.ctypes.data % 64 == 0
    assert formats.pack_columns(w, "blocks16", precision).values.ctypes.data % 64 == 0
    assert formats.pack_columns(w, "dense").weight_t.ctypes.data % 64 == 0
    dense_input = sparse_dense.prepare(w, None, 8, "blocks16", False, precision)
    sparse_input = sparse_sparse.prepare(w, None, 8, "blocks16", False, 5, precision)
    assert all(buffer.ctypes.data % 64 == 0 for buffer in dense_input._plan(20)[3:5])  # xt, out
    assert sparse_input._plan(20, 5)[1].ctypes.data % 64 == 0  # out
