"""The torch-free network description: work formulas and input checks."""

import pytest

from sparsecli.targets import LayerShape, as_network
from sparsecli.targets.network import touched_fraction


def test_macs_per_mode_for_conv():
    # 3x3 conv, 8 -> 16 channels, 10x10 outputs: fan-in 72, 1152 weights, 25% non-zero = 288
    layer = LayerShape("conv1", 72, 16, kind="conv", weight_density=0.25, input_density=0.5, output_positions=100)
    assert layer.weight_count == 1152
    assert layer.nonzero_weights == 288
    assert layer.macs("dense") == 115_200
    assert layer.macs("sparse-dense") == 28_800
    assert layer.macs("sparse-sparse") == 14_400
    assert layer.inputs == 7200 and layer.outputs == 1600


def test_dense_input_runs_sparse_dense_kernel():
    layer = LayerShape("fc", 10, 10, weight_density=0.5)
    assert layer.macs("sparse-sparse") == layer.macs("sparse-dense") == 50


def test_touched_fraction():
    assert touched_fraction(0.1, 1) == pytest.approx(0.1)
    assert touched_fraction(0.1, 2) == pytest.approx(0.19)
    assert touched_fraction(1.0, 8) == 1.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"weight_density": 0.0}, "weight_density is the fraction of non-zeros"),
        ({"input_density": 1.5}, "input_density is the fraction of non-zeros"),
        ({"in_features": 0}, "in_features must be a positive integer"),
        ({"output_positions": 4}, "a linear layer has output_positions 1"),
        ({"kind": "lstm"}, "kind must be"),
    ],
)
def test_rejects_bad_layers(fields, message):
    with pytest.raises(ValueError, match=message):
        LayerShape(**{"name": "fc", "in_features": 4, "out_features": 4, **fields})


def test_as_network_accepts_dicts_and_rejects_duplicates():
    network = as_network([{"name": "a", "in_features": 2, "out_features": 3}])
    assert network[0].weight_count == 6
    with pytest.raises(ValueError, match="unique"):
        as_network([LayerShape("a", 2, 2), LayerShape("a", 2, 2)])
    with pytest.raises(ValueError, match="no layers"):
        as_network([])


def test_numpy_scalars_become_python_numbers():
    np = pytest.importorskip("numpy")
    layer = LayerShape("fc", np.int64(4), np.int32(2), weight_density=np.float32(0.5))
    assert type(layer.in_features) is int and type(layer.weight_density) is float
    assert layer.nonzero_weights == 4
