"""FPGA dataflow model on a 2-layer network, every number computed on paper.

Target assets/tiny-fpga.yaml: 10 DSPs (int8: 2 MAC lanes each), 10,000 LUTs, 20,000 FFs,
368,640 on-chip bits, all caps 1.0, 100 MHz, 1 GB/s off-chip, typical power 2 W;
estimator: int8 lane = 10 LUT + 20 FF, 100 LUT per layer, 2 pipeline cycles per layer,
sparse-sparse: +5 LUT per lane and +3 index cycles per layer.

Network: fc1 100 -> 50, 20% non-zero weights, dense input;
         fc2  50 -> 10, 50% non-zero weights, 10% of inputs active.
Layer work per mode: dense 5000, 500; sparse-dense 1000, 250; sparse-sparse 1000 (dense
input, so sparse-dense), ceil(250 * 0.1) = 25.
"""

from pathlib import Path

import pytest
import yaml

from sparsecli.targets import LayerShape, load_target, predict

ASSETS = Path(__file__).parent / "assets"
NETWORK = [
    LayerShape("fc1", 100, 50, weight_density=0.2),
    LayerShape("fc2", 50, 10, weight_density=0.5, input_density=0.1),
]


def _variant(tmp_path, **changes):
    """tiny-fpga with some fields changed (dotted keys)."""
    raw = yaml.safe_load((ASSETS / "tiny-fpga.yaml").read_text())
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = raw
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    path = tmp_path / "tiny-fpga.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # key order: first precision is the default
    return load_target(path)


@pytest.fixture(scope="module")
def result():
    return predict(NETWORK, load_target(ASSETS / "tiny-fpga.yaml"))


def test_dense_auto_reuse(result):
    # Smallest interval T with ceil(ceil(5000/T)/2) + ceil(ceil(500/T)/2) <= 10 DSPs:
    #   T=277: 19 lanes -> 10 DSP, 2 lanes -> 1 DSP = 11 > 10;  T=278: 18 -> 9, 2 -> 1 = 10.
    cost = result["modes"]["dense"]["1"]
    fc1, fc2 = cost["layers"]
    assert (fc1["reuse_factor"], fc1["multipliers"], fc1["dsp"]) == (278, 18, 9)
    assert (fc2["reuse_factor"], fc2["multipliers"], fc2["dsp"]) == (278, 2, 1)
    totals = cost["totals"]
    assert totals["fits"] is True
    assert totals["weights_on_chip"] is True  # 5500 * 8 = 44,000 bits <= 368,640
    assert totals["copies"] == 1  # DSPs are all used
    # LUT 18*10 + 100 + 2*10 + 100 = 400; FF 20*20 = 400
    assert totals["resources"]["lut"]["used"] == 400
    assert totals["resources"]["ff"]["used"] == 400
    assert totals["resources"]["memory"]["used"] == 44_000
    # throughput 100 MHz / 278; latency (278 + 2) * 2 = 560 cycles = 5.6 us; energy 2 W / throughput
    assert totals["throughput_ips"] == pytest.approx(100e6 / 278)
    assert totals["latency_s"] == pytest.approx(5.6e-6)
    assert totals["energy_j"] == pytest.approx(2 * 278 / 100e6)
    assert totals["bound"] == "compute"
    assert result["label"] == "estimated"


def test_sparse_dense_auto_reuse(result):
    # T=62: ceil(1000/62)=17 -> 9 DSP, ceil(250/62)=5 -> 3 DSP = 12 > 10
    # T=63: 16 -> 8, 4 -> 2 = 10 fits.  Speedup 278 / 63.
    cost = result["modes"]["sparse-dense"]["1"]
    assert [layer["reuse_factor"] for layer in cost["layers"]] == [63, 63]
    assert [layer["multipliers"] for layer in cost["layers"]] == [16, 4]
    assert cost["totals"]["resources"]["memory"]["used"] == 1250 * 8
    assert cost["totals"]["latency_s"] == pytest.approx(1.3e-6)  # (63 + 2) * 2 cycles
    assert cost["speedup_over_dense"]["throughput"] == pytest.approx(278 / 63)


def test_sparse_sparse_auto_reuse(result):
    # T=55: ceil(1000/55)=19 -> 10 DSP + fc2 1 lane -> 1 DSP = 11 > 10
    # T=56: 18 -> 9, fc2 reuse min(56, 25) = 25, 1 lane -> 1 DSP = 10 fits.
    cost = result["modes"]["sparse-sparse"]["1"]
    fc1, fc2 = cost["layers"]
    assert fc1["mode_used"] == "sparse-dense"
    assert (fc1["reuse_factor"], fc1["multipliers"]) == (56, 18)
    assert (fc2["reuse_factor"], fc2["multipliers"], fc2["mode_used"]) == (25, 1, "sparse-sparse")
    # LUT 18*10 + 100 + 1*(10+5) + 100 = 395
    assert cost["totals"]["resources"]["lut"]["used"] == 395
    # storage: fc1 1000*8 = 8000; fc2 250*(8 + ceil(log2 10)=4) = 3000
    assert [layer["storage_bits"] for layer in cost["layers"]] == [8000, 3000]
    # weight bytes read per inference: 8000/8 + 3000/8 * 0.1 = 1037.5
    assert cost["totals"]["memory_traffic_bytes"] == pytest.approx(1037.5)
    # latency: (56 + 2) + (25 + 2 + 3) = 88 cycles = 0.88 us
    assert cost["totals"]["latency_s"] == pytest.approx(0.88e-6)
    assert cost["totals"]["throughput_ips"] == pytest.approx(100e6 / 56)
    assert cost["speedup_over_dense"]["throughput"] == pytest.approx(278 / 56)


def test_fixed_reuse_makes_copies():
    # reuse 5000: fc1 5000 -> 1 lane, fc2 min(5000, 500) = 500 -> 1 lane; 2 DSP, 220 LUT, 40 FF,
    # 44,000 bits. copies = floor(min(10/2, 10000/220, 20000/40, 368640/44000)) = floor(5) = 5
    target = load_target(ASSETS / "tiny-fpga.yaml")
    result = predict(NETWORK, target, modes=["dense"], batch_sizes=[1, 12], reuse_policy=5000)
    one = result["modes"]["dense"]["1"]["totals"]
    assert one["copies"] == 5
    assert one["resources"]["dsp"]["used"] == 10
    assert one["throughput_ips"] == pytest.approx(5 * 100e6 / 5000)  # 100,000 /s
    assert one["latency_s"] == pytest.approx((5002 + 502) / 100e6)
    # batch 12 on 5 copies: ceil(12/5) = 3 rounds -> 5504 + 2 * 5000 cycles
    twelve = result["modes"]["dense"]["12"]["totals"]
    assert twelve["latency_s"] == pytest.approx(15504 / 100e6)


def test_per_layer_reuse_list():
    target = load_target(ASSETS / "tiny-fpga.yaml")
    result = predict(NETWORK, target, modes=["dense"], reuse_policy=[1000, 100])
    fc1, fc2 = result["modes"]["dense"]["1"]["layers"]
    assert (fc1["multipliers"], fc2["multipliers"]) == (5, 5)
    assert result["modes"]["dense"]["1"]["totals"]["ii_cycles"] == 1000


def test_does_not_fit_dsp(tmp_path):
    # 1 DSP: even at maximum reuse each layer needs one lane in its own DSP -> 2 > 1
    target = _variant(tmp_path, resources__dsp=1)
    result = predict(NETWORK, target)
    for mode in ("dense", "sparse-dense", "sparse-sparse"):
        cost = result["modes"][mode]["1"]
        assert cost["totals"]["fits"] is False
        assert cost["totals"]["binding_resource"] == "dsp"
        assert cost["totals"]["throughput_ips"] is None
        assert cost["totals"]["resources"]["dsp"]["used"] == 2
        assert cost["speedup_over_dense"]["throughput"] is None


def test_does_not_fit_memory_without_offchip(tmp_path):
    # no off-chip memory and 40,000 on-chip bits: dense needs 44,000 bits -> binding memory;
    # sparse-dense needs 10,000 bits and fits, but has no dense baseline to compare with
    target = _variant(tmp_path, offchip_bandwidth_gbps=0, onchip_memory_bits=40_000)
    result = predict(NETWORK, target, modes=["dense", "sparse-dense"])
    dense = result["modes"]["dense"]["1"]["totals"]
    assert (dense["fits"], dense["binding_resource"]) == (False, "memory")
    sparse = result["modes"]["sparse-dense"]["1"]
    assert sparse["totals"]["fits"] is True
    assert sparse["speedup_over_dense"]["throughput"] is None


def test_streams_weights_when_they_do_not_fit_on_chip(tmp_path):
    # 40,000 on-chip bits but 1 GB/s off-chip: dense weights (5500 bytes) stream once per batch
    # -> at most 1e9 / 5500 = 181,818 inferences/s, below the compute rate 100e6/278 = 359,712
    target = _variant(tmp_path, onchip_memory_bits=40_000)
    totals = predict(NETWORK, target, modes=["dense"])["modes"]["dense"]["1"]["totals"]
    assert totals["fits"] is True
    assert totals["weights_on_chip"] is False
    assert totals["bound"] == "memory"
    assert totals["throughput_ips"] == pytest.approx(1e9 / 5500)
    assert totals["offchip_traffic_bytes"] == pytest.approx(5500)
    assert totals["resources"]["memory"]["used"] == 0


def test_rejects_bad_arguments():
    target = load_target(ASSETS / "tiny-fpga.yaml")
    with pytest.raises(ValueError, match="precision 'fp32' is not supported"):
        predict(NETWORK, target, precision="fp32")
    with pytest.raises(ValueError, match="reuse_policy"):
        predict(NETWORK, target, reuse_policy="fast")
    with pytest.raises(ValueError, match="reuse_policy"):
        predict(NETWORK, target, reuse_policy=[1])
    with pytest.raises(ValueError, match="unknown mode"):
        predict(NETWORK, target, modes=["sparse"])
    with pytest.raises(ValueError, match="batch_sizes"):
        predict(NETWORK, target, batch_sizes=[0])


def test_sparse_sparse_lanes_are_sized_for_the_quantile_and_report_stalls():
    """fc2 at reuse 1: lanes = ceil(250 * sized density); 0.1 mean but 0.2 at p99 -> 50 lanes."""
    target = load_target(ASSETS / "tiny-fpga.yaml")
    sized = [NETWORK[0], LayerShape("fc2", 50, 10, weight_density=0.5, input_density=0.1,
                                    input_density_sized=0.2, stall_rate=0.01)]
    mean = predict(NETWORK, target, modes=["sparse-sparse"], reuse_policy=1)
    high = predict(sized, target, modes=["sparse-sparse"], reuse_policy=1)
    lanes = [r["modes"]["sparse-sparse"]["1"]["layers"][1]["multipliers"] for r in (mean, high)]
    assert lanes == [25, 50]
    layer = high["modes"]["sparse-sparse"]["1"]["layers"][1]
    assert layer["stall_rate"] == 0.01 and layer["active_density_sized"] == 0.2
    # memory ports: one weight word per lane per cycle; int8 + 4 index bits (ceil(log2 10)) = 12 bits
    assert layer["weight_words_per_cycle"] == 50 and layer["memory_bandwidth_bits_per_cycle"] == 600
    assert layer["bram36_for_ports"] == 5  # ceil(600 / 144)


def test_user_resources_left_by_the_shell_are_the_budget(tmp_path):
    target = _variant(tmp_path, user_resources={"lut": 10000, "ff": 20000, "dsp": 5, "bram36": 10, "uram": 0},
                      user_resources_source="test shell")
    full = predict(NETWORK, load_target(ASSETS / "tiny-fpga.yaml"), modes=["dense"], reuse_policy=5000)
    shell = predict(NETWORK, target, modes=["dense"], reuse_policy=5000)
    dsp = [r["modes"]["dense"]["1"]["totals"]["resources"]["dsp"]["available"] for r in (full, shell)]
    assert dsp == [10, 5]
