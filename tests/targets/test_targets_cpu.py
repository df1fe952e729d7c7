"""CPU roofline model on a 2-layer network, every number computed on paper.

Target assets/tiny-cpu.yaml: peak = 1 core * 8 lanes (256/32) * 1 FMA * 2 * 1 GHz = 16 GFLOP/s,
bandwidth 16 GB/s at efficiency 1, kernel efficiencies 0.5 / 0.25 / 0.125, TDP 10 W,
no per-layer overhead, fp32 (4-byte values), int32 indices.

Network: fc1 100 -> 50, 20% non-zero weights, dense input;
         fc2  50 -> 10, 50% non-zero weights, 10% of inputs active.
"""

from pathlib import Path

import pytest

from sparsecli.targets import LayerShape, load_target, predict

ASSETS = Path(__file__).parent / "assets"
NETWORK = [
    LayerShape("fc1", 100, 50, weight_density=0.2),
    LayerShape("fc2", 50, 10, weight_density=0.5, input_density=0.1),
]


@pytest.fixture(scope="module")
def result():
    return predict(NETWORK, load_target(ASSETS / "tiny-cpu.yaml"), batch_sizes=[1, 4])


def test_dense_batch1_is_memory_bound(result):
    cost = result["modes"]["dense"]["1"]
    fc1, fc2 = cost["layers"]
    # fc1: flops 2*5000 = 10,000 -> 10,000 / (16e9*0.5) = 1.25 us
    #      bytes 5000*4 + 100*4 + 50*4 = 20,600 -> 20,600 / 16e9 = 1.2875 us  (memory bound)
    assert fc1["flops"] == 10_000
    assert fc1["memory_traffic_bytes"] == 20_600
    assert fc1["time_compute_s"] == pytest.approx(1.25e-6)
    assert fc1["latency_s"] == pytest.approx(1.2875e-6)
    assert fc1["bound"] == "memory"
    # fc2: flops 1000 -> 0.125 us; bytes 500*4 + 50*4 + 10*4 = 2240 -> 0.14 us
    assert fc2["latency_s"] == pytest.approx(0.14e-6)
    totals = cost["totals"]
    # total 1.4275 us -> 700,525 inferences/s; energy 10 W * 1.4275 us = 14.275 uJ
    assert totals["latency_s"] == pytest.approx(1.4275e-6)
    assert totals["throughput_ips"] == pytest.approx(1 / 1.4275e-6)
    assert totals["energy_j"] == pytest.approx(14.275e-6)
    assert totals["macs"] == 5500
    assert totals["peak_gflops"] == pytest.approx(16)


def test_sparse_modes_batch1(result):
    # sparse-dense: fc1 nnz 1000: flops 2000 -> 2000/(16e9*0.25) = 0.5 us;
    #   bytes 1000*(4+4) + 400 + 200 = 8600 -> 0.5375 us.
    #   fc2 nnz 250: flops 500 -> 0.125 us; bytes 250*8 + 200 + 40 = 2240 -> 0.14 us. total 0.6775 us
    sd = result["modes"]["sparse-dense"]["1"]
    assert sd["totals"]["latency_s"] == pytest.approx(0.6775e-6)
    assert sd["speedup_over_dense"]["throughput"] == pytest.approx(1.4275 / 0.6775)
    # sparse-sparse: fc1 has a dense input, so it runs the sparse-dense kernel (0.5375 us).
    #   fc2: MACs 250*0.1 = 25, flops 50 -> 50/(16e9*0.125) = 0.025 us (compute bound);
    #   bytes 250*8*touched(0.1, 1)=200 + 50*0.1*(4+4)=40 + 40 = 280 -> 0.0175 us. total 0.5625 us
    ss = result["modes"]["sparse-sparse"]["1"]
    fc1, fc2 = ss["layers"]
    assert fc1["mode_used"] == "sparse-dense"
    assert fc2["macs"] == pytest.approx(25)
    assert fc2["memory_traffic_bytes"] == pytest.approx(280)
    assert fc2["bound"] == "compute"
    assert ss["totals"]["latency_s"] == pytest.approx(0.5625e-6)
    assert ss["speedup_over_dense"]["throughput"] == pytest.approx(1.4275 / 0.5625)
    assert ss["speedup_over_dense"]["energy"] == pytest.approx(1.4275 / 0.5625)


def test_batch4_becomes_compute_bound(result):
    # dense, batch 4: fc1 flops 40,000 -> 5 us; bytes 20,000 + 1600 + 800 = 22,400 -> 1.4 us
    #                 fc2 flops 4000 -> 0.5 us; bytes 2000 + 800 + 160 = 2960 -> 0.185 us. total 5.5 us
    dense = result["modes"]["dense"]["4"]["totals"]
    assert dense["latency_s"] == pytest.approx(5.5e-6)
    assert dense["throughput_ips"] == pytest.approx(4 / 5.5e-6)
    assert dense["bound"] == "compute"
    # sparse-sparse fc2, batch 4: columns touched 1 - 0.9^4 = 0.3439 ->
    #   bytes 2000*0.3439 + 50*0.1*4*8 + 10*4*4 = 687.8 + 160 + 160 = 1007.8
    fc2 = result["modes"]["sparse-sparse"]["4"]["layers"][1]
    assert fc2["memory_traffic_bytes"] == pytest.approx(1007.8)
    assert fc2["latency_s"] == pytest.approx(0.1e-6)  # flops 200 / 2e9


def test_int8_uses_more_lanes():
    target = load_target(ASSETS / "tiny-cpu.yaml")
    result = predict(NETWORK, target, precision="int8", modes=["dense"])
    # int8: 32 lanes -> 64 GFLOP/s peak
    assert result["modes"]["dense"]["1"]["totals"]["peak_gflops"] == pytest.approx(64)


def test_energy_charges_the_cores_the_run_uses():
    """Batch 1 runs on one core: its energy is that core's share of the TDP times the latency."""
    from sparsecli.targets import LayerShape, load_target, predict

    target = load_target(Path(__file__).parent.parent.parent / "hardware" / "cpu-avx512.yaml")
    net = [LayerShape("fc", 256, 256, weight_density=0.1)]
    cost = predict(net, target, modes=["dense"], batch_sizes=[1, 8])["modes"]["dense"]
    one, eight = cost["1"]["totals"], cost["8"]["totals"]
    assert one["energy_j"] == pytest.approx(target.tdp_w / target.cores * one["latency_s"])
    assert eight["energy_j"] == pytest.approx(target.tdp_w * eight["latency_s"] / 8)
