"""The engines' cost model: synthetic twins keep each layer's work; predictions compose layer times."""

import numpy as np
import pytest

from sparsecli.kernels.calibrate import LayerClock, describe_network, layer_clocks, twin_network, twin_weight
from sparsecli.kernels.formats import detect_structure
from sparsecli.kernels.measure import mask, reference_cnn, reference_mlp
from sparsecli.targets.cost_kernels import predict_latency


@pytest.mark.parametrize("shape, density, structure", [
    ((64, 96), 0.1, "unstructured"), ((40, 30), 0.3, "blocks16"), ((32, 8, 3, 3), 0.2, "unstructured"),
    ((12, 50), 1.0, "unstructured")])
def test_a_twin_has_the_weights_nonzeros_structure_and_kept_blocks(shape, density, structure):
    rng = np.random.default_rng(3)
    flat = (shape[0], int(np.prod(shape[1:])))
    w = (rng.standard_normal(flat) * mask(rng, *flat, density, structure)).astype(np.float32).reshape(shape)
    w[0, ...] = 0.0  # a row with nothing kept
    t = twin_weight(np.random.default_rng(0), w)
    assert t.shape == w.shape and t.dtype == np.float32
    assert np.count_nonzero(t) == np.count_nonzero(w)
    assert detect_structure(t.reshape(flat)) == detect_structure(w.reshape(flat))
    if structure == "blocks16":
        def kept(a):
            a = np.pad(a.reshape(flat) != 0, ((0, -flat[0] % 16), (0, 0)))
            return int(a.reshape(-1, 16, flat[1]).any(axis=1).sum())
        assert kept(t) == kept(w)  # the stored entries the kernels run: 16 per kept block
        assert not np.array_equal(t != 0, w != 0)  # random places, not the network's own


def test_predicted_latency_is_the_engine_call_plus_its_layers():
    table = {"1": {"dense": [3e-6, 1e-6], "sparse-dense": [2e-6, 1e-6], "sparse-sparse": [1e-6, 5e-7]}}
    calibration = {"1": {"dense_call_s": 1e-6, "engine_call_s": 4e-7, "torch_call_s": 2e-6}}
    dense = predict_latency(table, calibration, "dense", 1)
    assert dense == {"latency_s": pytest.approx(5e-6), "layers_s": [3e-6, 1e-6]}
    assert predict_latency(table, calibration, "sparse-sparse", 1)["latency_s"] == pytest.approx(1.9e-6)
    with pytest.raises(ValueError, match="no calibration at batch 64"):
        predict_latency(table, calibration, "dense", 64)
    with pytest.raises(ValueError, match="unknown mode"):
        predict_latency(table, calibration, "sparse", 1)


def test_a_layer_clock_takes_the_median_of_per_sample_means_after_warmup():
    times = iter([[9.0, 9.0]] * 2 + [[1.0, 2.0], [3.0, 2.0]] * 3 + [[100.0, 2.0], [100.0, 2.0]])
    clock = LayerClock(lambda: (next(times), None), n_layers=2, warmup=2, inner=2)
    for _ in range(10):
        clock()
    assert clock.layers_s() == [2.0, 2.0]  # samples (2, 2) x3 and (100, 2): the warm-up calls are dropped
    assert clock.layers_s(1.0) == [100.0, 2.0]


def test_layer_clocks_time_every_layer_of_every_engine_of_a_cnn_twin():
    net = reference_cnn("blocks16")
    twin = twin_network(net)
    assert [s.weight.shape for s in twin.convs] == [s.weight.shape for s in net.convs]
    assert [np.count_nonzero(s.weight) for s in twin.linears] == [np.count_nonzero(s.weight) for s in net.linears]
    x = np.random.default_rng(1).standard_normal((9, twin.n_in)).astype(np.float32)  # two chunks of the CNN engine
    clocks = layer_clocks(twin, x, warmup=0, inner=1)
    expected = twin.dense(lowest_ties=True)(x)
    for mode, clock in clocks.items():
        clock()
        assert len(clock.layers_s()) == len(describe_network(net)) == 4
        assert all(t > 0 for t in clock.layers_s())
        out = clock.output.numpy() if mode == "dense" else np.concatenate(clock.output)
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)  # the clock runs what the engine runs


def test_layer_clocks_of_an_mlp_time_the_calls_its_engines_bind():
    twin = twin_network(reference_mlp(0.9, 0.1, "blocks16"))
    x = np.random.default_rng(1).standard_normal((2, twin.n_in)).astype(np.float32)
    clocks = layer_clocks(twin, x, warmup=0, inner=1)
    expected = twin.dense(lowest_ties=True)(x)
    for mode, clock in clocks.items():
        clock()
        assert len(clock.layers_s()) == 3 and all(t > 0 for t in clock.layers_s())
        out = clock.output if mode == "dense" else np.concatenate(clock.output)
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_the_paired_ratio_cancels_a_load_that_drifts_between_rounds():
    from sparsecli.kernels.calibrate import paired_ratio
    from sparsecli.kernels.timing import summarize

    slow = [1.0, 1.0, 3.0, 3.0, 3.0]  # the machine slows down after two rounds, for both
    it = iter([[0.0]] + [[0.5 * f] for f in slow])
    clock = LayerClock(lambda: (next(it), None), n_layers=1, warmup=1, inner=1)
    for _ in range(6):
        clock()
    assert paired_ratio(clock, 0.0, summarize(slow)) == pytest.approx(0.5)


def test_layer_clocks_run_what_an_mlp_engine_runs():
    twin = twin_network(reference_mlp(0.9, 0.1, "blocks16"))
    x = np.random.default_rng(1).standard_normal((3, twin.n_in)).astype(np.float32)
    expected = twin.dense(lowest_ties=True)(x)
    for mode, clock in layer_clocks(twin, x).items():
        clock()
        out = clock.output.numpy() if mode == "dense" else clock.output[0]
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)
