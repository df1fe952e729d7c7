"""From a trained or built sparsecli model to LayerShapes: densities counted, geometry of convs."""

import pytest
import torch

from sparsecli import checkpoint
from sparsecli.models import build_model
from sparsecli.params import load_params
from sparsecli.targets.from_model import network_from_model
from sparsecli.training import read_splits


def test_trained_mlp_layers_and_densities(trained_dir):
    model, _, _ = checkpoint.load(trained_dir / "models" / "train.pt")
    splits, _ = read_splits(trained_dir)
    x = splits["test"].x
    layers = network_from_model(model, x)
    assert [layer.name for layer in layers] == ["layers.0", "head"]
    first, head = layers
    assert (first.kind, first.in_features, first.out_features, first.output_positions) == ("linear", 64, 32, 1)
    assert first.weight_density == 0.5  # round(0.5 * 64) = 32 kept per unit
    assert first.input_density == pytest.approx(float((x != 0).float().mean()))
    assert head.weight_density == 1.0 and head.out_features == 10
    assert head.input_density == pytest.approx(8 / 32)  # kWTA keeps k = round(0.25 * 32) = 8 of 32 units
    assert model.training is False


def test_pruned_weights_count_as_zeros(trained_dir):
    model, _, _ = checkpoint.load(trained_dir / "models" / "train.pt")
    with torch.no_grad():
        weight = model.head.module.weight
        weight[:, : weight.shape[1] // 2] = 0  # prune half of the head's inputs
    layers = network_from_model(model, torch.randn(16, 64))
    assert layers[1].weight_density == pytest.approx(0.5)


def test_cnn_geometry_and_conv_input_density(tiny_params_path):
    params = load_params(tiny_params_path, [
        "model.arch=cnn",
        "model.conv=[{channels: 4, kernel_size: 3, pool: 2, weights: {sparsity: 0.5}}]",
    ])
    model = build_model(params, {"classes": 10, "features": 64, "image_shape": [1, 8, 8]})
    x = torch.randn(20, 64)
    x[:, :16] = 0  # a quarter of the pixels are zero in every sample
    conv, hidden, head = network_from_model(model, x)
    assert conv.name == "conv.0" and conv.kind == "conv"
    assert (conv.in_features, conv.out_features) == (1 * 3 * 3, 4)
    assert (conv.output_positions, conv.input_size) == (8 * 8, 64)
    assert conv.input_density == pytest.approx(0.75)
    assert conv.weight_density == pytest.approx(round(0.5 * 9) / 9)
    assert conv.macs("dense") == 9 * 4 * 64
    assert hidden.in_features == 4 * 4 * 4  # pooled 4 channels of 4x4
    assert head.in_features == 32


def test_targets_package_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, sparsecli.targets, sparsecli.targets.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
