import re
from pathlib import Path

import pytest

from conftest import ASSETS, ROOT, template_overlay

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


def _shipped_params() -> list[Path]:
    """The root params.yaml and every template's (templates/default/params.yaml is a link to the root one)."""
    from sparsecli import scaffold

    return [ROOT / "params.yaml", *(scaffold.TEMPLATES / name / "params.yaml" for name in scaffold.templates())]


def _params_files() -> list[tuple[str, Path, dict]]:
    """(label, file, overlay): every shipped params file as is and with its test overlay, and the test assets."""
    from sparsecli import scaffold

    cases = []  # the root params.yaml is the default template's
    for name in scaffold.templates():
        path = Path(str(scaffold.TEMPLATES / name / "params.yaml"))
        cases += [(name, path, {}), (f"{name}+overlay", path, template_overlay(name))]
    cases += [(f"assets/{p.name}", p, {}) for p in sorted(ASSETS.glob("*.yaml"))]
    return cases


def _missing_keys(raw, model, prefix: str = "") -> list[str]:
    """Fields of ``model`` (recursively) that the raw params do not spell out.

    A search-space entry takes either low/high or values, by its dist: those are not required. An
    objective spells out metric, mode and threshold (a constraint, fits, has neither) and, for a
    hardware metric, its target; execution, batch, precision and name have defaults by metric."""
    from sparsecli.params import SearchDim, TuneObjective, _submodel
    from sparsecli.tune_metrics import CONSTRAINTS, HARDWARE

    if not isinstance(raw, dict):
        return []
    missing = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if name not in raw:
            if model is TuneObjective:
                metric = raw.get("metric")
                needed = ["metric"] + ([] if metric in CONSTRAINTS else ["mode", "threshold"])
                needed += ["target"] if metric in HARDWARE else []
                if name in needed:
                    missing.append(path)
            elif model is not SearchDim or name in ("key", "dist"):
                missing.append(path)
            continue
        sub = _submodel(field.annotation)
        if sub is None:
            continue
        kind, cls = sub
        items = [(path, raw[name])] if kind == "model" else [(f"{path}.{i}", v) for i, v in enumerate(raw[name] or [])]
        for where, item in items:
            missing += _missing_keys(item, cls, f"{where}.")
    return missing


@pytest.mark.parametrize("path", _shipped_params(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_key_is_spelled_out_in_every_shipped_params_file(path):
    from sparsecli.params import Params, read_yaml

    raw = read_yaml(path)
    assert _missing_keys(raw, Params) == []
    assert set(raw) == set(Params.model_fields)


def test_the_default_template_is_the_root_params_file():
    from sparsecli import scaffold

    assert Path(str(scaffold.TEMPLATES / "default" / "params.yaml")).resolve() == (ROOT / "params.yaml").resolve()


@pytest.mark.parametrize("label, path, overlay", _params_files(), ids=[c[0] for c in _params_files()])
def test_every_params_file_passes_the_full_validation(label, path, overlay, tmp_path):
    """Params model, the search space on the real data shape and the hardware target files."""
    from idx_digits import write_digits_as_mnist
    from sparsecli.params import read_yaml, set_key, validate
    from sparsecli.stages import data, hardware_map
    from sparsecli.training import read_splits
    from sparsecli.tuning.space import check_space

    raw = read_yaml(path)
    for key, value in overlay.items():
        set_key(raw, key, value, label)
    if raw.get("data", {}).get("source") == "idx":
        raw["data"]["path"] = str(write_digits_as_mnist(tmp_path / "raw" / "mnist"))
    if raw.get("data", {}).get("source") == "speech_commands":
        from wavs import make_speech_commands

        raw["data"]["path"] = str(make_speech_commands(tmp_path / "raw" / "speech_commands", raw["data"]["words"]))
    params = validate(raw, label)
    if params.data.source == "synthetic":  # the shapes matter here, not the sample count
        params.data.synthetic.samples = 200
    data.run(params, tmp_path)
    _, meta = read_splits(tmp_path)
    if params.tune.space:
        check_space(params, meta)
    targets = hardware_map._load_targets(ROOT / "hardware", params.hardware_map)
    hardware_map._check_precisions(targets, params.hardware_map)


def test_objective_executions_are_the_cost_models_modes():
    from typing import get_args

    from sparsecli.params import Execution
    from sparsecli.targets import MODES

    assert get_args(Execution) == MODES


def test_hardware_map_precisions_are_the_cost_models():
    from typing import get_args

    from sparsecli.params import Precision
    from sparsecli.targets import PRECISION_BITS

    assert set(get_args(Precision)) == set(PRECISION_BITS)


def test_numbers_are_read_as_dvc_reads_them_and_never_coerced(tiny_params_path, tmp_path):
    params = load_params(tiny_params_path, ["train.lr=1e-3", "prune.lr=2"])
    assert params.train.lr == 0.001 and params.prune.lr == 2.0  # YAML 1.2 exponents; an int is a valid float
    for override, message in (("train.epochs=6.0", "train.epochs = 6.0: must be an integer"),
                              ("train.epochs='6'", "train.epochs = '6': must be an integer"),
                              ("train.lr='0.1'", "train.lr = '0.1': must be a number"),
                              ("train.epochs=true", "train.epochs = True: must be an integer"),
                              ("data.standardize=1", "data.standardize = 1: must be true or false")):
        with pytest.raises(ParamsError, match=re.escape(message)):
            load_params(tiny_params_path, [override])
    empty = tmp_path / "params.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ParamsError, match="params.yaml: empty; write the params file's sections"):
        load_params(empty)


def test_cross_section_checks_belong_to_the_stage_that_reads_both(tiny_params_path):
    from sparsecli.params import check_stage

    params = load_params(tiny_params_path, ["tune.min_epochs=5"], stage="train")  # train does not read tune
    with pytest.raises(ParamsError, match=r"tune.min_epochs = 5: must be <= the full training, train.epochs \(3\)"):
        check_stage(params, "tune")
