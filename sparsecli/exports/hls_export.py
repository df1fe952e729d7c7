"""hls4ml HLS C++ project of a sparsecli model for an FPGA target, and its bit-accurate C simulation.

What the exported network is (stated in the hardware-map report):
- masks baked in: each weight layer's weight is the masked weight, its zeros written as
  constants, so HLS removes their multipliers (hls4ml's `Latency` strategy, weights
  fully unrolled; `n_zeros` is recorded per layer in `firmware/parameters.h`);
- batch norm folded into the preceding layer (w' = w * g, b' = (b - mean) * g + beta,
  g = gamma / sqrt(var + eps)): a per-output scale, so zero weights stay zero;
- kWTA replaced by ReLU: hls4ml has no top-k layer. The report gives the test accuracy
  of torch with kWTA, of torch with the ReLU substitute (float) and of the C simulation
  (fixed point), so the two losses are told apart;
- fixed-point precision `hardware_map.hls.precision` for weights, biases, inputs and
  activations; hls4ml widens the accumulators so sums do not overflow;
- reuse factor per layer: the one the FPGA cost model chose for the target in
  sparse-dense mode (the mode this design implements), rounded by hls4ml to a valid one.

The C simulation is compiled with g++ (hls4ml's `build_lib.sh`) and run on the test
split; its numerics do not depend on the part or the reuse factors (fixed-point sums
are exact), so one compiled project stands for every FPGA target.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsecli.evaluation import Split
from sparsecli.sparse import SparseWeights, is_kwinners

PROJECT = "sparsecli_model"
STRATEGY = "Latency"  # constant weights, fully unrolled: zero weights cost no multiplier
BACKEND = "Vitis"


def hls4ml_version() -> str | None:
    """The installed hls4ml version, or None when the `fpga` extra is not installed."""
    try:
        import hls4ml
    except ImportError:
        return None
    return hls4ml.__version__


def export_network(model: nn.Module) -> nn.Sequential:
    """A plain Sequential hls4ml can convert: BN folded, kWTA -> ReLU, masks baked into the weights."""
    modules: list[nn.Module] = []
    for name, child in model.named_children():
        if name == "conv":
            for block in child:
                modules += [_folded(block.weights, block.norm), _activation(block.act)]
                if isinstance(block.pool, nn.MaxPool2d):
                    modules.append(nn.MaxPool2d(block.pool.kernel_size))
            modules.append(nn.Flatten())
        elif name == "layers":
            modules += [m for block in child for m in (_folded(block.weights, block.norm), _activation(block.act))]
        elif name == "head":
            modules.append(_folded(child, nn.Identity()))
        else:
            raise ValueError(f"cannot export model part {name!r} to HLS")
    return nn.Sequential(*modules).eval()


def _activation(act: nn.Module) -> nn.Module:
    if is_kwinners(act) or isinstance(act, nn.ReLU):
        return nn.ReLU()
    raise ValueError(f"cannot export activation {type(act).__name__} to HLS")


@torch.no_grad()
def _folded(weights: SparseWeights, norm: nn.Module) -> nn.Module:
    """A copy of the wrapped Linear/Conv2d with the batch norm folded in (zeros stay zeros)."""
    layer = weights.module
    weight = (layer.weight * weights.mask).clone()
    bias = layer.bias.clone() if layer.bias is not None else torch.zeros(weight.shape[0])
    if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = (bias - norm.running_mean) * scale + norm.bias
    if isinstance(layer, nn.Conv2d):
        copy = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding)
    else:
        copy = nn.Linear(layer.in_features, layer.out_features)
    copy.weight.copy_(weight)
    copy.bias.copy_(bias)
    return copy


def input_shape(model: nn.Module, features: int) -> tuple[int, ...]:
    """(C, H, W) for a CNN, (features,) for an MLP."""
    return tuple(getattr(model, "image_shape", None) or (features,))


def write_project(
    network: nn.Sequential,
    shape: tuple[int, ...],
    folder: Path,
    part: str,
    clock_mhz: float,
    reuse: list[int],
    precision: str,
    testbench: tuple[np.ndarray, np.ndarray] | None = None,
    csim_input: np.ndarray | None = None,
    recorded_as: str | None = None,
) -> dict:
    """Write the HLS project into `folder`; with `csim_input`, compile its C simulation and run it.

    `reuse` has one reuse factor per weight layer, in order; `testbench` (inputs, expected
    outputs) goes to the project's tb_data for the vendor tools' own C simulation.
    Returns what was built (reuse factors hls4ml settled on, types, files) and, with
    `csim_input`, the simulated outputs under "outputs" (not JSON; the caller pops it).
    `recorded_as` is where the folder will live once staged into place (written into
    the project's hls4ml_config.yml and the returned record instead of `folder`).
    """
    import hls4ml

    weight_names = [f"_{i}" for i, m in enumerate(network) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if len(weight_names) != len(reuse):
        raise ValueError(f"{len(reuse)} reuse factors for {len(weight_names)} weight layers")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = hls4ml.utils.config_from_pytorch_model(
            network, input_shape=shape, granularity="name", default_precision=precision,
            default_reuse_factor=1, backend=BACKEND,
        )
        config["Model"]["Strategy"] = STRATEGY
        for name, factor in zip(weight_names, reuse):
            config["LayerName"][name]["ReuseFactor"] = int(factor)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tb_files = _testbench_files(folder.parent, testbench)
        model = hls4ml.converters.convert_from_pytorch_model(
            network, output_dir=str(folder), project_name=PROJECT, backend=BACKEND, part=part,
            clock_period=1000.0 / clock_mhz, hls_config=config, io_type="io_parallel", **tb_files,
        )
        outputs = None
        if csim_input is not None:
            model.compile()
            outputs = model.predict(np.ascontiguousarray(csim_input.reshape(len(csim_input), -1), dtype=np.float32))
        else:
            model.write()
    for path in tb_files.values():
        Path(path).unlink()
    for built in (folder / "firmware").glob("*.so"):  # the compiled simulation, not part of the project
        built.unlink()
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    recorded_as = recorded_as or str(folder)
    _tidy_config(folder / "hls4ml_config.yml", recorded_as)
    info = {
        "folder": recorded_as,
        "part": part,
        "clock_period_ns": 1000.0 / clock_mhz,
        "backend": BACKEND,
        "strategy": STRATEGY,
        "io_type": "io_parallel",
        "precision": precision,
        "reuse_requested": [int(r) for r in reuse],
        "reuse_used": [int(model.graph[name].get_attr("reuse_factor")) for name in weight_names],
        "zero_weights": [int(model.graph[name].get_weights("weight").nzeros) for name in weight_names],
        "types": _types(folder / "firmware" / "defines.h"),
    }
    if outputs is not None:
        info["outputs"] = np.asarray(outputs).reshape(len(csim_input), -1)
    return info


def _tidy_config(path: Path, folder: str) -> None:
    """hls4ml's record of the build, without the pickled torch model and the scratch paths."""
    text = re.sub(r"(?ms)^PytorchModel:.*?(?=^\S)", "", path.read_text())
    text = re.sub(r"(?m)^OutputDir: .*$", f"OutputDir: {folder}", text)
    text = re.sub(r"(?m)^(InputData|OutputPredictions): .*$", r"\1: null", text)
    path.write_text(text)


def _testbench_files(scratch: Path, testbench) -> dict:
    if testbench is None:
        return {}
    inputs, expected = testbench
    files = {"input_data_tb": scratch / ".tb_input.npy", "output_data_tb": scratch / ".tb_output.npy"}
    np.save(files["input_data_tb"], inputs.reshape(len(inputs), -1).astype(np.float32))
    np.save(files["output_data_tb"], expected.astype(np.float32))
    return {key: str(path) for key, path in files.items()}


def _types(defines: Path) -> dict[str, str]:
    """The C++ typedefs hls4ml chose (inputs, weights, accumulators, results)."""
    if not defines.is_file():
        return {}
    found = re.findall(r"typedef\s+(.+?)\s+(\w+);", defines.read_text())
    return {name: kind for kind, name in found}


@torch.no_grad()
def float_outputs(network: nn.Sequential, shape: tuple[int, ...], x: torch.Tensor) -> np.ndarray:
    """The exported network's outputs in float (torch): the reference of the C simulation."""
    return network(x.view(len(x), *shape)).numpy()


@torch.no_grad()
def compare(outputs: np.ndarray, relu: np.ndarray, model: nn.Module, split: Split) -> dict:
    """C-simulation outputs against torch: accuracies and agreement with the float ReLU network."""
    labels = split.y.numpy()
    model.eval()
    original = model(split.x).numpy()
    return {
        "samples": len(labels),
        "test_accuracy_torch": float((original.argmax(1) == labels).mean()),
        "test_accuracy_relu_float": float((relu.argmax(1) == labels).mean()),
        "test_accuracy_csim": float((outputs.argmax(1) == labels).mean()),
        "csim_argmax_agreement_with_relu_float": float((outputs.argmax(1) == relu.argmax(1)).mean()),
        "csim_max_abs_diff_from_relu_float": float(np.abs(outputs - relu).max()),
    }


# ---------------------------------------------------------------- the hardware-map stage's projects


def fpga_projects(model, test, features: int, fpga: dict, results: dict, hls, folder: Path, final: Path,
                  progress) -> dict:
    """One HLS project per FPGA target (``fpga``: name -> target) under ``folder/hls/<name>``, each
    with the reuse factors the cost model chose for it (``results[name]``, sparse-dense, batch 1),
    and the C simulation of the first when ``hls.csim``; ``hls``: the ``hardware_map.hls`` params,
    ``final``: where ``folder`` will be once renamed into place (recorded in the projects)."""
    version = hls4ml_version()
    info: dict = {"enabled": hls.enabled, "hls4ml": version, "projects": {}, "csim": None}
    if not hls.enabled or not fpga:
        info["note"] = "HLS export off (hardware_map.hls.enabled: false)" if fpga else "no FPGA target mapped"
        return info
    if version is None:
        info["note"] = "hls4ml is not installed: no HLS project (pip install 'sparsecli[fpga]')"
        progress.message(f"hardware-map: {info['note']}; continuing with the model only")
        return info
    network = export_network(model)
    shape = input_shape(model, features)
    reference = float_outputs(network, shape, test.x)
    for i, name in enumerate(fpga):
        target = fpga[name]
        design = results[name]["modes"]["sparse-dense"]["1"]["layers"]
        csim = i == 0 and hls.csim
        if csim:
            progress.message(f"hardware-map: compiling the HLS C simulation of {name} with g++")
        built = write_project(
            network, shape, folder / "hls" / name, target.part, target.clock_mhz,
            [layer["reuse_factor"] for layer in design], hls.precision,
            testbench=(test.x.numpy(), reference), csim_input=test.x.numpy() if csim else None,
            recorded_as=str(final / "hls" / name),
        )
        if csim:
            outputs = built.pop("outputs")
            info["csim"] = {"project": name, **compare(outputs, reference, model, test)}
            progress.message(
                f"hardware-map: HLS C simulation (kWTA -> ReLU, {hls.precision}): test accuracy "
                f"{info['csim']['test_accuracy_csim']:.4f} vs torch {info['csim']['test_accuracy_torch']:.4f}"
            )
        info["projects"][name] = built
    return info
