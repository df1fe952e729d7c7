import pytest

from sparsecli.errors import ParamsError
from sparsecli.params import load_params, parse_override


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.layers.0.kwta.percent_on=1.5", "model.layers.0.kwta.percent_on = 1.5: must be in (0, 1)"),
        ("model.layers.0.kwta.percent_on=0.01", "model.layers.0.kwta.percent_on = 0.01: k = round(percent_on * 32) = 0 must be >= 1 and < 32"),
        ("model.layers.0.kwta.percent_on=0.99", "k = round(percent_on * 32) = 32 must be >= 1 and < 32"),
        ("model.layers.0.weights.sparsity=1.0", "model.layers.0.weights.sparsity = 1.0: must be in [0, 1)"),
        ("model.layers.0.weights.sparsity=-0.1", "model.layers.0.weights.sparsity = -0.1: must be in [0, 1)"),
        ("model.layers.0.colour=red", "model.layers.0.colour: unknown key; allowed keys in model.layers.0: units, weights, kwta"),
        ("bogus=1", "bogus: unknown key; allowed keys: seed, data, model, train"),
        ("train.lr=fast", "train.lr = 'fast': must be a number"),
        ("train.epochs=2.5", "train.epochs = 2.5: must be an integer"),
        ("train.optimizer=rmsprop", "train.optimizer = 'rmsprop': must be one of: adam, sgd"),
        ("model.layers.3.units=8", "model.layers.3: index out of range"),
        ("data.source=csv", "data.path = null: required for source csv"),
        ("data.val_fraction=0.75", "val_fraction + test_fraction must be < 0.9"),
        ("model.conv=[{channels: 4}]", "model.arch = 'mlp': model.conv layers need arch cnn"),
        ("model.layers.0.kwta.k_inference_factor=9", "model.layers.0.kwta.k_inference_factor = 9.0: k at inference = 72 exceeds the 32 units"),
        ("hardware_map.hls.precision=ap_fixed<8,9>", "hardware_map.hls.precision = 'ap_fixed<8,9>': must be ap_fixed<W,I> with 2 <= W <= 32 and 0 < I < W"),
        ("hardware_map.precision.gpu=int8", "hardware_map.precision.gpu = 'int8': key must be cpu, fpga or a name in hardware_map.targets"),
        ("hardware_map.reuse_factor=0", "hardware_map.reuse_factor = 0: must be auto, a positive integer, or a list of them"),
        ("hardware_map.targets=[cpu-local, cpu-local]", "hardware_map.targets.1 = 'cpu-local': listed twice"),
    ],
)
def test_bad_params_name_the_key_and_the_fix(tiny_params_path, override, expected):
    with pytest.raises(ParamsError) as info:
        load_params(tiny_params_path, [override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_use_the_dvc_syntax(tiny_params_path):
    params = load_params(tiny_params_path, ["train.lr=0.05", "model.layers.0.kwta=null", "train.noise.levels=[0.2]"])
    assert params.train.lr == 0.05
    assert params.model.layers[0].kwta is None
    assert params.train.noise.levels == [0.2]
    assert parse_override("data.path=a=b") == ("data.path", "a=b")
    with pytest.raises(ParamsError, match="expected key.path=value"):
        parse_override("train.lr")


def test_flat_keys_are_dotted_paths(tiny_params):
    flat = tiny_params.flat()
    assert flat["model.layers.0.kwta.percent_on"] == 0.25
    assert flat["train.noise.levels.2"] == 0.5


def test_missing_and_malformed_params_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"bad.yaml: not valid YAML \(line"):
        load_params(bad)


def test_shipped_params_validate():
    from conftest import ROOT

    load_params(ROOT / "params.yaml")


def test_hardware_map_precisions_are_the_cost_models():
    from typing import get_args

    from sparsecli.params import Precision
    from sparsecli.targets import PRECISION_BITS

    assert set(get_args(Precision)) == set(PRECISION_BITS)
