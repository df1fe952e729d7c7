"""The sparse engine equals the dense torch reference end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_kernels_formats import masked_weight

from sparsecli.kernels import DenseEngine, LayerSpec, SparseEngine, check_against_dense


def network(structure, sizes=(160, 150, 140, 12), density=0.1, percent_on=0.1, seed=0, head_k=None):
    rng = np.random.default_rng(seed)
    specs = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        w = masked_weight(rng, n_out, n_in, 1.0 if last else density, blocks=structure == "blocks16")
        w /= np.sqrt(n_in * density)
        k = head_k if last else max(1, int(n_out * percent_on))
        specs.append(LayerSpec(w, (0.1 * rng.standard_normal(n_out)).astype(np.float32), k))
    return specs, rng


@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
@pytest.mark.parametrize("batch", [1, 64])
def test_engine_equals_dense_reference(structure, batch):
    specs, rng = network(structure)
    engine = SparseEngine.from_layers(specs)
    x = rng.standard_normal((batch, specs[0].n_in)).astype(np.float32)
    x[0] = 0.0  # an all-zero input row
    check = check_against_dense(engine(x), DenseEngine.from_layers(specs)(x))
    assert check.ok, str(check)
    assert engine._programs[batch] is not None  # every layer's call bound to the engine's buffers
    kinds = [row["kernel"] for row in engine.describe()]
    assert kinds == ["sparse-dense", "sparse-sparse", "sparse-sparse"]
    expected = "RowBlocks" if structure == "blocks16" else "RowCSR"
    assert engine.describe()[0]["format"] == expected


def test_engine_with_k1_identity_hidden_layer_and_kwta_head():
    rng = np.random.default_rng(1)
    w1 = masked_weight(rng, 64, 40, 0.3, blocks=False)
    w2 = masked_weight(rng, 50, 64, 0.3, blocks=False)  # no kWTA: next layer gets a dense input
    w3 = masked_weight(rng, 30, 50, 0.3, blocks=True)
    w4 = masked_weight(rng, 10, 30, 1.0, blocks=False)
    specs = [LayerSpec(w1, None, 1), LayerSpec(w2, None, None), LayerSpec(w3, None, 5), LayerSpec(w4, None, 3)]
    engine = SparseEngine.from_layers(specs)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    out = engine(x)
    assert (np.count_nonzero(out, axis=1) <= 3).all()
    check = check_against_dense(out, DenseEngine(specs)(x))
    assert check.ok, str(check)
    kinds = [r["kernel"] for r in engine.describe()]
    assert kinds == ["sparse-dense", "sparse-sparse", "sparse-dense", "sparse-sparse"]


def test_engine_with_all_zero_layer():
    specs, rng = network("unstructured", sizes=(30, 40, 8))
    specs[0] = LayerSpec(np.zeros((40, 30), np.float32), None, 4)
    x = rng.standard_normal((3, 30)).astype(np.float32)
    check = check_against_dense(SparseEngine.from_layers(specs)(x), DenseEngine(specs)(x))
    assert check.ok, str(check)


def test_layer_specs_are_checked():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="bias"):
        LayerSpec(w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="k must"):
        LayerSpec(w, None, 5)
    with pytest.raises(ValueError, match="takes 3 inputs"):
        SparseEngine.from_layers([LayerSpec(w), LayerSpec(w)])
    with pytest.raises(ValueError, match="at least one"):
        SparseEngine.from_layers([])
    with pytest.raises(ValueError, match="x must be"):
        SparseEngine.from_layers([LayerSpec(w)])(np.ones((1, 4), np.float32))


def test_importing_kernels_loads_neither_numba_nor_torch():
    code = "import sys, sparsecli.kernels; assert 'numba' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("structure", ["blocks16", "unstructured"])
def test_sparse_dense_mode_equals_dense_reference(structure):
    specs, rng = network(structure)
    engine = SparseEngine.from_layers(specs, activations="dense")
    assert [r["kernel"] for r in engine.describe()] == ["sparse-dense", "sparse-dense", "dense"]
    x = rng.standard_normal((3, specs[0].n_in)).astype(np.float32)
    check = check_against_dense(engine(x), DenseEngine(specs)(x))
    assert check.ok, str(check)


@pytest.mark.parametrize("structure", ["blocks16", "unstructured", "dense"])
@pytest.mark.parametrize("activations", ["sparse", "dense"])
def test_calls_bound_to_the_engines_buffers_give_fresh_results_call_after_call(structure, activations):
    # a blocks16 layer without kWTA and 50 outputs (padded to 64) feeding a dense-input layer:
    # no bound program there; the "dense" layout runs in torch: none either
    rng = np.random.default_rng(3)
    sizes, ks = (40, 64, 50, 30, 10), (6, None, 5, None)
    specs = [LayerSpec(masked_weight(rng, n_out, n_in, 0.3, blocks=structure == "blocks16"),
                       (0.1 * rng.standard_normal(n_out)).astype(np.float32), k)
             for n_in, n_out, k in zip(sizes[:-1], sizes[1:], ks)]
    engine = SparseEngine.from_layers(specs, structure, activations=activations)
    dense = DenseEngine(specs)
    xs = [rng.standard_normal((batch, 40)).astype(np.float32) for batch in (1, 1, 4)]
    outs = [engine(x) for x in xs]
    for x, out in zip(xs, outs):  # the first result not overwritten by the later calls
        check = check_against_dense(out, dense(x))
        assert check.ok, str(check)
        assert np.array_equal(out, engine._run(x, x.shape[0]))
    assert (engine._programs[1] is not None) == (structure == "unstructured")  # CSR rows are not padded
