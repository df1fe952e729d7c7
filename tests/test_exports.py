"""ONNX and HLS exports: what they compute matches torch."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sparsecli import checkpoint
from sparsecli.evaluation import Split
from sparsecli.exports import hls_export, onnx_export
from sparsecli.models import build_model
from sparsecli.params import load_params
from sparsecli.training import read_splits


@pytest.fixture(scope="module")
def trained(trained_dir):
    model, _, _ = checkpoint.load(trained_dir / "models" / "train.pt")
    splits, _ = read_splits(trained_dir)
    return model, splits["test"]


@pytest.mark.parametrize("local", [False, True], ids=["global-kwta", "local-kwta"])
def test_onnx_of_a_cnn_with_kwta_matches_torch(tmp_path, tiny_params_path, local):
    params = load_params(tiny_params_path, [
        "model.arch=cnn",
        f"model.conv=[{{channels: 8, kernel_size: 3, pool: 2, weights: {{sparsity: 0.5}}, "
        f"kwta: {{percent_on: 0.25, local: {str(local).lower()}}}}}]",
    ])
    model = build_model(params, {"classes": 10, "features": 64, "image_shape": [1, 8, 8]}).eval()
    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    split = Split(x, torch.zeros(50, dtype=torch.long))
    path = tmp_path / "cnn.onnx"
    onnx_export.export_onnx(model, path, 64, opset=17)
    info = onnx_export.verify_onnx(path, model, split)
    assert info["argmax_agreement"] == 1.0 and info["max_abs_diff"] < 1e-4
    assert {"TopK", "ScatterElements", "Conv"} <= set(info["operators"])


def test_export_network_folds_batch_norm_and_swaps_kwta_for_relu(trained):
    model, test = trained
    network = hls_export.export_network(model)
    reference = copy.deepcopy(model)
    for block in reference.layers:
        block.act = nn.ReLU()
    with torch.no_grad():
        expected = reference.eval()(test.x)
        got = network(test.x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    first = network[0]
    assert int((first.weight == 0).sum()) == 32 * 32  # the mask survives the folding: 32 of 64 inputs per unit
    assert [type(m).__name__ for m in network] == ["Linear", "ReLU", "Linear"]


def test_hls_csim_runs_and_tracks_the_float_network(trained, tmp_path):
    pytest.importorskip("hls4ml")
    model, test = trained
    network = hls_export.export_network(model)
    reference = hls_export.float_outputs(network, (64,), test.x)
    built = hls_export.write_project(network, (64,), tmp_path / "hls" / "u250", "xcu250-figd2104-2L-e", 300.0,
                                     [1, 1], "ap_fixed<16,6>", csim_input=test.x.numpy())
    outputs = built.pop("outputs")
    assert outputs.shape == (len(test), 10)
    summary = hls_export.compare(outputs, reference, model, test)
    assert summary["csim_argmax_agreement_with_relu_float"] >= 0.97
    assert abs(summary["test_accuracy_csim"] - summary["test_accuracy_relu_float"]) <= 0.03
    assert built["zero_weights"] == [1024, 0] and built["reuse_used"] == [1, 1]
    assert built["types"]["input_t"] == "ap_fixed<16,6>"
    assert not list((tmp_path / "hls").rglob("*.so"))
    assert np.isfinite(outputs).all()
