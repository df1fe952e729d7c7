"""Weight structures on targets: `structures:` in target files, the cost models' structure terms, tune's restriction.

On paper (tests/targets/assets): a 64 -> 32 layer with 25% non-zero weights (512), fp32 on tiny-cpu
(peak 16 GFLOP/s, 16 GB/s, efficiencies dense 0.5 / sparse-dense 0.25); int16 on tiny-fpga.
"""

from pathlib import Path

import pytest

from sparsecli.errors import InputFileError, ParamsError
from sparsecli.params import SearchDim
from sparsecli.targets import LayerShape, load_target
from sparsecli.targets import cost_cpu, cost_fpga
from sparsecli.targets.structures import check_space

ASSETS = Path(__file__).parent / "assets"
HARDWARE = Path(__file__).parent.parent.parent / "hardware"


def listing(target, structures):
    return type(target).model_validate({**target.model_dump(), "structures": structures})


def layer(structure="unstructured", input_density=1.0):
    return LayerShape("fc", 64, 32, weight_density=0.25, input_density=input_density, structure=structure)


def test_cpu_roofline_runs_a_listed_block_at_the_dense_rate_with_one_index_per_block():
    plain = load_target(ASSETS / "tiny-cpu.yaml")  # lists only unstructured (the default)
    blocks = listing(plain, ["unstructured", "16x1"])
    # unstructured CSR: weights 512 * (4 + 4) + input 64*4 + output 32*4 = 4480 B -> 280 ns; compute 1024 / 4e9 = 256 ns
    unstructured = cost_cpu.layer_cost(layer(), blocks, "sparse-dense", 1, "fp32")
    assert unstructured["memory_traffic_bytes"] == 4480 and unstructured["latency_s"] == pytest.approx(280e-9)
    # 16x1 listed: weights 512 * 4 + 32 block indices * 4 = 2176, traffic 2560 B -> 160 ns; compute 1024 / 8e9 = 128 ns
    listed = cost_cpu.layer_cost(layer("16x1"), blocks, "sparse-dense", 1, "fp32")
    assert listed["memory_traffic_bytes"] == 2560 and listed["time_compute_s"] == pytest.approx(128e-9)
    assert listed["latency_s"] == pytest.approx(160e-9) and listed["structure_used"] == "16x1"
    # a target that does not list 16x1 runs the layer as unstructured
    assert cost_cpu.layer_cost(layer("16x1"), plain, "sparse-dense", 1, "fp32") == unstructured
    # dense mode ignores the mask and its structure
    assert cost_cpu.layer_cost(layer("16x1"), blocks, "dense", 1, "fp32")["structure_used"] == "unstructured"
    # N:M listed: ceil(log2 4) = 2 bits per non-zero: 512 * 4 + 128 = 2176 B as well
    nm = cost_cpu.layer_cost(layer("2:4"), listing(plain, ["2:4"]), "sparse-dense", 1, "fp32")
    assert nm["memory_traffic_bytes"] == 2560


def test_fpga_sparse_sparse_blocks_share_their_row_index():
    plain = load_target(ASSETS / "tiny-fpga.yaml")
    blocks = listing(plain, ["unstructured", "16x1"])

    def storage(target, structure):
        return cost_fpga.network_cost([layer(structure, 0.25)], target, "sparse-sparse", 1, "int16")["layers"][0]

    # unstructured: 512 * (16 + ceil(log2 32) = 5) bits; 16x1: 512 * (16 + ceil(log2 2) / 16) bits
    assert storage(blocks, "unstructured")["storage_bits"] == 512 * 21
    assert storage(blocks, "16x1")["storage_bits"] == 512 * 16 + 32
    assert storage(plain, "16x1")["storage_bits"] == 512 * 21
    assert storage(blocks, "16x1")["bram36_for_ports"] <= storage(blocks, "unstructured")["bram36_for_ports"]


def test_shipped_targets_list_16x1_and_bad_structures_are_one_line_errors(tmp_path):
    for name in ("cpu-avx2", "cpu-avx512", "cpu-local", "fpga-zu3eg", "fpga-pynq-z2", "fpga-alveo-u250"):
        assert "16x1" in load_target(HARDWARE / f"{name}.yaml").structures
    text = (HARDWARE / "cpu-avx2.yaml").read_text()
    for bad, message in [("[unstructured, 16x1, 16x1]", "'16x1' is listed twice"),
                         ("[unstructured, blocks]", "'blocks': must be unstructured, ROWSxCOLS blocks"),
                         ("[]", "structures")]:
        path = tmp_path / "cpu-avx2.yaml"
        path.write_text(text.replace("structures: [unstructured, 16x1]", f"structures: {bad}"))
        with pytest.raises(InputFileError, match=message) as info:
            load_target(path)
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_a_structure_search_must_stay_within_the_targets_structures():
    target = load_target(HARDWARE / "cpu-avx2.yaml")
    space = [SearchDim(key="train.lr", dist="loguniform", low=0.001, high=0.1),
             SearchDim(key="model.layers.0.weights.structure", dist="choice", values=["unstructured", "16x1"])]
    check_space(space, target)
    space.append(SearchDim(key="model.conv.0.weights.structure", dist="choice", values=["16x1", "2:4"]))
    with pytest.raises(ParamsError, match=r"tune.space.2.values = \['16x1', '2:4'\]: cpu-avx2 executes the "
                                          r"structures unstructured, 16x1 .*; drop 2:4"):
        check_space(space, target)
    check_space(space, load_target(HARDWARE / "fpga-zu3eg.yaml"))  # FPGAs list 2:4 too


def test_layer_shapes_reject_a_bad_structure():
    with pytest.raises(ValueError, match="layer 'fc': structure '16y1'"):
        layer("16y1")
