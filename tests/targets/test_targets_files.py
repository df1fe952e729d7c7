"""Every shipped hardware file validates; broken files give one line naming file and field."""

from pathlib import Path

import pytest
import yaml

from sparsecli.errors import InputFileError
from sparsecli.targets import CpuTarget, FpgaTarget, load_target, load_targets
from sparsecli.targets.schema import BRAM36_BITS, URAM_BITS

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
SHIPPED = sorted(HARDWARE.glob("*.yaml"))
REQUIRED = {"fpga-alveo-u250", "fpga-zu3eg", "fpga-pynq-z2", "cpu-avx512", "cpu-avx2", "cpu-local"}


def test_required_targets_are_shipped():
    assert REQUIRED <= {path.stem for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_target_validates(path):
    target = load_target(path)
    assert target.name == path.stem
    assert target.source == str(path)
    assert path.read_text().startswith("#"), "each target file starts with a header comment"
    if isinstance(target, FpgaTarget):
        r = target.resources
        assert target.onchip_memory_bits == r.bram36 * BRAM36_BITS + r.uram * URAM_BITS


def test_datasheet_figures():
    targets = load_targets(HARDWARE, ["fpga-alveo-u250", "fpga-zu3eg", "fpga-pynq-z2"])
    u250, zu3eg, z7020 = targets.values()
    assert (u250.resources.lut, u250.resources.dsp, u250.resources.uram) == (1_728_000, 12_288, 1_280)
    assert (zu3eg.resources.lut, zu3eg.resources.dsp, zu3eg.resources.uram) == (70_560, 360, 0)
    assert (z7020.resources.lut, z7020.resources.dsp, z7020.resources.bram36) == (53_200, 220, 140)
    assert u250.macs_per_dsp["int8"] == 2 and u250.macs_per_dsp["int16"] == 1


def test_cpu_local_marks_calibrated_fields():
    target = load_target(HARDWARE / "cpu-local.yaml")
    assert isinstance(target, CpuTarget)
    assert {"memory_bandwidth_gbps", "efficiency.dense", "efficiency.sparse_dense"} <= set(target.calibrated)


def _broken(tmp_path, edit):
    raw = yaml.safe_load((HARDWARE / "fpga-zu3eg.yaml").read_text())
    edit(raw)
    path = tmp_path / "fpga-zu3eg.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(InputFileError) as info:
        load_target(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_missing_field_names_file_and_field(tmp_path):
    message = _broken(tmp_path, lambda raw: raw["resources"].pop("dsp"))
    assert "resources.dsp: missing required field" in message


def test_negative_count_names_file_and_field(tmp_path):
    def edit(raw):
        raw["resources"]["bram36"] = -4

    message = _broken(tmp_path, edit)
    assert "resources.bram36:" in message and "-4" in message


def test_unknown_key_names_file_and_field(tmp_path):
    def edit(raw):
        raw["caps"]["dsps"] = 0.5

    message = _broken(tmp_path, edit)
    assert "caps.dsps: unknown key" in message and "allowed keys here: lut, ff, dsp, memory" in message


def test_wrong_kind_and_name(tmp_path):
    def kind(raw):
        raw["kind"] = "gpu"

    assert "kind: must be one of cpu, fpga" in _broken(tmp_path, kind)

    def name(raw):
        raw["name"] = "zu3eg"

    assert "name: is 'zu3eg' but must equal the file name" in _broken(tmp_path, name)


def test_missing_target_and_bad_yaml(tmp_path):
    with pytest.raises(InputFileError, match="no target file for fpga-nope; available: cpu-"):
        load_targets(HARDWARE, ["fpga-nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputFileError, match="bad.yaml: not valid YAML"):
        load_target(bad)
