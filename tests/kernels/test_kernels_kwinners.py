"""k-winners selection: exactly k per row, the same set as torch.topk, deterministic ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecli.kernels import k_winners, kwta_dense_torch, scatter_dense


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize(("n", "k"), [(1500, 150), (1500, 75), (37, 1), (37, 37), (300, 299)])
def test_same_set_as_topk(batch, n, k):
    x = np.random.default_rng(n + k).standard_normal((batch, n)).astype(np.float32)  # no ties
    idx, val = k_winners(x, k)
    assert idx.shape == val.shape == (batch, k)
    top = torch.topk(torch.from_numpy(x), k).indices.numpy()
    for r in range(batch):
        assert len(set(idx[r].tolist())) == k
        assert set(idx[r].tolist()) == set(top[r].tolist())
    np.testing.assert_array_equal(val, np.take_along_axis(x, idx.astype(np.intp), axis=1))


@pytest.mark.parametrize("kind", ["relu", "ties", "negative", "zeros", "signed_zeros"])
def test_ties_go_to_lowest_indices(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 500)).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x, 0)
    elif kind == "ties":
        x = np.round(x * 2) / 2
    elif kind == "negative":
        x = -np.abs(x) - 1.0
    elif kind == "zeros":
        x[:] = 0.0
    else:
        x[:] = 0.0
        x[:, ::3] = -0.0
    x = x.astype(np.float32)
    for k in (1, 50, 499):
        idx, val = k_winners(x, k)
        for r in range(x.shape[0]):
            # Largest first; among equal values the lowest index first (-0.0 == 0.0).
            expected = np.lexsort((np.arange(x.shape[1]), -(x[r] + 0.0)))[:k]
            assert sorted(idx[r].tolist()) == sorted(expected.tolist())
            np.testing.assert_array_equal(val[r], x[r, idx[r].astype(np.intp)])


def test_padded_rows_only_first_n_compete():
    x = np.zeros((2, 32), np.float32)
    x[:, 20:] = 100.0  # padding past n must never win
    x[:, :20] = np.arange(20, dtype=np.float32)
    idx, _ = k_winners(x, 3, n=20)
    assert sorted(idx[0].tolist()) == [17, 18, 19]


def test_parallel_equals_serial():
    x = np.random.default_rng(8).standard_normal((64, 400)).astype(np.float32)
    a = k_winners(x, 40, parallel=True)
    b = k_winners(x, 40, parallel=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_torch_reference_keeps_values_of_winners():
    x = torch.tensor([[-3.0, -1.0, -2.0, -5.0]])
    np.testing.assert_array_equal(kwta_dense_torch(x, 2).numpy(), [[0.0, -1.0, -2.0, 0.0]])


@pytest.mark.parametrize("k", [0, 5, 2.5, True])
def test_bad_k_raises_value_error(k):
    with pytest.raises(ValueError, match="k must"):
        k_winners(np.ones((1, 4), np.float32), k)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="float32"):
        k_winners(np.ones((1, 4)), 1)


def test_lowest_ties_reference_matches_k_winners_on_tied_rows():
    """Rows with many values equal at the threshold: the tie-aware torch reference keeps exactly
    the winners ``k_winners`` keeps (lowest indices), where plain topk may keep others."""
    import torch

    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, size=(6, 50)).astype(np.float32)  # four distinct values: ties everywhere
    for k in (1, 7, 20, 50):
        ref = kwta_dense_torch(torch.from_numpy(x), k, lowest_ties=True).numpy()
        kept = scatter_dense(*k_winners(x, k), 50)
        np.testing.assert_array_equal(kept, ref)


@pytest.mark.parametrize("kind", ["skewed", "bimodal", "inf", "spike"])
def test_rows_far_from_normal_still_give_topk(kind):
    """The fast path's first bound assumes a roughly normal row; rows where it lets through
    fewer than k (or cannot be computed: inf) lower it or take the exact path, same answer."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 1500)).astype(np.float32)
    if kind == "skewed":
        x = rng.exponential(size=x.shape).astype(np.float32) ** 4
    elif kind == "bimodal":
        x[:, :1400] -= 100.0  # the winners all sit in the small upper mode
    elif kind == "inf":
        x[:, ::97] = np.inf
    else:
        x[:, 5] = 1e30  # one huge value makes the spread useless
    for k in (1, 75, 200):
        idx, val = k_winners(x, k)
        for r in range(x.shape[0]):
            expected = np.lexsort((np.arange(x.shape[1]), -x[r]))[:k]
            assert sorted(idx[r].tolist()) == sorted(expected.tolist())
        assert (np.diff(idx.astype(np.int64), axis=1) > 0).all()  # ascending
