"""The issue's acceptance check on a Google-Speech-Commands-sized sparse MLP, on every target.

Network 1600 -> 1500 -> 1500 -> 12, 5% non-zero weights (95% weight sparsity), 10% of the
hidden units active (the input is dense). MACs: dense 4,668,000; sparse-dense 233,400;
sparse-sparse 120,000 + 11,250 + 90 = 131,340.
"""

import json
import math
import os
from pathlib import Path

import pytest

from sparsecli.targets import LayerShape, calibrate, load_target, load_targets, predict, summary

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
GSC = [
    LayerShape("fc1", 1600, 1500, weight_density=0.05, input_density=1.0),
    LayerShape("fc2", 1500, 1500, weight_density=0.05, input_density=0.1),
    LayerShape("fc3", 1500, 12, weight_density=0.05, input_density=0.1),
]


@pytest.fixture(scope="module")
def targets():
    loaded = load_targets(HARDWARE)
    loaded["cpu-local"] = calibrate(loaded["cpu-local"], repeats=1)
    return loaded


def test_u250_sparse_sparse_gain_is_tens_to_hundreds(targets):
    result = predict(GSC, targets["fpga-alveo-u250"])
    dense = result["modes"]["dense"]["1"]["totals"]
    assert dense["fits"] and dense["weights_on_chip"]  # 4.67 M int8 weights = 37 Mb < 381 Mb
    gain = result["modes"]["sparse-sparse"]["1"]["speedup_over_dense"]["throughput"]
    # 12,288 DSP * 0.8 cap * 2 int8 lanes: dense needs reuse 238, sparse-sparse reuse 7 -> 34x
    assert 10 <= gain <= 1000
    assert gain > result["modes"]["sparse-dense"]["1"]["speedup_over_dense"]["throughput"] > 1


def test_dense_network_on_zu3eg_fits_by_streaming_weights(targets):
    # 288 usable DSPs run the dense network at reuse ~8100, but its 37 Mb of int8 weights exceed
    # the 6.4 Mb of usable BRAM: they stream from LPDDR4, so batch 1 is memory bound.
    totals = predict(GSC, targets["fpga-zu3eg"])["modes"]["dense"]["1"]["totals"]
    assert totals["fits"] is True
    assert totals["weights_on_chip"] is False
    assert totals["bound"] == "memory"
    sparse = predict(GSC, targets["fpga-zu3eg"], modes=["sparse-sparse"])["modes"]["sparse-sparse"]["1"]
    assert sparse["totals"]["weights_on_chip"] is True


TARGETS = ["fpga-alveo-u250", "fpga-zu3eg", "fpga-pynq-z2", "cpu-avx512", "cpu-avx2", "cpu-local"]


@pytest.mark.parametrize("name", TARGETS)
def test_every_target_predicts_json_serialisable_results(targets, name):
    result = predict(GSC, targets[name], batch_sizes=[1, 16])
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["target"] == name
    assert result["target_file"].endswith(f"{name}.yaml")
    assert result["label"] == ("calibrated" if name == "cpu-local" else "estimated")
    rows = summary(result)
    assert len(rows) == 6
    for row in rows:
        assert row["fits"] is True
        assert row["throughput_ips"] > 0 and math.isfinite(row["energy_j"])
    assert result["modes"]["dense"]["1"]["totals"]["macs"] == 4_668_000
    assert result["modes"]["sparse-dense"]["1"]["totals"]["macs"] == pytest.approx(233_400)
    assert result["modes"]["sparse-sparse"]["1"]["totals"]["macs"] == pytest.approx(131_340)


def test_calibration_replaces_listed_fields(targets):
    local = targets["cpu-local"]
    assert local.measured is not None and local.measured["gemm_gflops"] > 0
    assert local.cores == len(os.sched_getaffinity(0))
    assert local.memory_efficiency == 1.0
    assert 0 < local.efficiency.sparse_sparse <= 1
    assert local.source.endswith("cpu-local.yaml")
    result = predict(GSC, local, modes=["dense"])
    assert result["calibration"]["gemv_gbps"] == pytest.approx(local.memory_bandwidth_gbps)
    uncalibrated = predict(GSC, load_target(HARDWARE / "cpu-local.yaml"), modes=["dense"])
    assert "not calibrated" in uncalibrated["calibration_note"]
