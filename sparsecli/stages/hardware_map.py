"""The ``hardware-map`` stage: what the trained sparse network would do on each hardware target.

Reads the model (``models/pruned.pt`` once the prune stage has written it, else
``models/train.pt``), the test split, ``hardware/<name>.yaml`` for each name in
``hardware_map.targets`` and the synthesis reports imported into ``hardware/measured/``.
Writes:

- ``metrics/hardware_map.json``: headline figures per target and mode (DVC metrics);
- ``reports/hardware_map.json``: every figure, per layer, with the target fields it came from;
- ``reports/hardware_map.md``: the same as tables, with the labels and assumptions;
- ``exports/model.onnx`` and, with the ``fpga`` extra, ``exports/hls/<fpga target>/``.

Params, targets and an imported report are all checked before any heavy work; every
output is staged and renamed into place at the end, so a failure leaves the old ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sparsecli import checkpoint
from sparsecli.atomic import json_text, staged_dir, write_all
from sparsecli.errors import CheckpointError, ParamsError
from sparsecli.exports import hls_export, onnx_export
from sparsecli.params import HardwareMapParams, Params
from sparsecli.progress import Progress
from sparsecli.targets import calibrate, load_targets, network_to_dicts, predict
from sparsecli.targets import report as hardware_report
from sparsecli.targets import synthesis
from sparsecli.targets.from_model import network_from_model
from sparsecli.targets.measure import time_forward
from sparsecli.targets.network import MODES, PRECISION_BITS, LayerShape
from sparsecli.targets.predict import precision_key
from sparsecli.targets.schema import CpuTarget, FpgaTarget, Target
from sparsecli.training import read_splits

MODELS = ("models/pruned.pt", "models/train.pt")  # the first that exists is mapped


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {
        "metrics": workdir / "metrics" / "hardware_map.json",
        "detail": workdir / "reports" / "hardware_map.json",
        "report": workdir / "reports" / "hardware_map.md",
        "exports": workdir / "exports",
    }


def model_path(workdir: Path = Path(".")) -> Path:
    for name in MODELS:
        if (workdir / name).is_file():
            return workdir / name
    raise CheckpointError(f"{workdir / MODELS[-1]}: checkpoint not found; run `sparsecli train` (or `dvc repro`) first")


def run(
    params: Params,
    workdir: Path = Path("."),
    progress: Progress | None = None,
    hardware_dir: Path | None = None,
    import_report: Path | None = None,
) -> dict:
    """Predict, export and report; `import_report` also records a synthesis report as measured."""
    progress = progress or Progress()
    hp = params.hardware_map
    workdir = Path(workdir)
    hardware = Path(hardware_dir) if hardware_dir is not None else workdir / "hardware"
    targets = _load_targets(hardware, hp)
    fpga_parts = {name: t.part for name, t in targets.items() if isinstance(t, FpgaTarget)}
    imported = None
    if import_report is not None:
        report = synthesis.read_report(import_report)
        imported = (synthesis.match_target(report, fpga_parts, Path(import_report)), report)

    source = model_path(workdir)
    model, _, _ = checkpoint.load(source)
    splits, meta = read_splits(workdir)
    test = splits["test"]
    network = network_from_model(model, test.x, quantile=hp.active_quantile)
    reuse = _reuse_policy(hp.reuse_factor, network)
    _check_precisions(targets, hp)
    fingerprint = _fingerprint(model)
    progress.message(f"hardware-map: {source} ({len(network)} weight layers), {len(test)} test samples")

    results = {name: _predict(name, target, network, hp, reuse, params.seed, progress) for name, target in targets.items()}
    calibrated = [name for name, result in results.items() if result["label"] == "calibrated"]
    if calibrated:
        timing = time_forward(model, test.x, hp.batch_sizes, hp.measure_repeats, hp.measure_threads)
        for name in calibrated:
            results[name]["check"] = _cpu_check(results[name], timing)
            _say_check(name, results[name]["check"], progress)
    stored = synthesis.measured_reports(hardware, fpga_parts, imported, import_report, fingerprint)
    for name, record in stored.items():
        record["figures"] = synthesis.compare(record["report"], results[name], targets[name].clock_mhz)
        results[name]["measured"] = record

    paths = outputs(workdir)
    features = int(test.x.shape[1])
    with staged_dir(paths["exports"]) as folder:
        onnx_file = folder / "model.onnx"
        onnx_export.export_onnx(model, onnx_file, features, hp.onnx_opset)
        onnx_info = {"file": str(paths["exports"] / "model.onnx"), **onnx_export.verify_onnx(onnx_file, model, test)}
        progress.message(
            f"hardware-map: ONNX opset {onnx_info['opset']}: argmax agreement {onnx_info['argmax_agreement']:.4f}, "
            f"max abs diff {onnx_info['max_abs_diff']:.3g} on {onnx_info['samples']} test samples"
        )
        fpga = {name: t for name, t in targets.items() if isinstance(t, FpgaTarget)}
        hls_info = hls_export.fpga_projects(model, test, features, fpga, results, hp.hls, folder, paths["exports"],
                                            progress)
        detail = {
            "model": {"path": str(source), "fingerprint": fingerprint, "arch": _arch(model),
                      "test_samples": len(test), "data": meta.get("source")},
            "network": _network_rows(network),
            "params": hp.model_dump(),
            "targets": results,
            "onnx": onnx_info,
            "hls": hls_info,
        }
        metrics = hardware_report.headline(detail)
        writers = {
            paths["metrics"]: lambda tmp: tmp.write_text(json_text(metrics)),
            paths["detail"]: lambda tmp: tmp.write_text(json.dumps(detail, indent=1, allow_nan=False) + "\n"),
            paths["report"]: lambda tmp: tmp.write_text(hardware_report.render(detail)),
        }
        if imported is not None:
            writers.update(synthesis.import_writers(Path(import_report), stored[imported[0]]))
        write_all(writers)
    if imported is not None:  # a report imported before in the other format is replaced
        kept = Path(stored[imported[0]]["source"])
        kept.with_suffix(".rpt" if kept.suffix == ".xml" else ".xml").unlink(missing_ok=True)
    return metrics


# ---------------------------------------------------------------- checks


def _load_targets(hardware: Path, hp: HardwareMapParams) -> dict[str, Target]:
    available = sorted(p.stem for p in hardware.glob("*.yaml")) if hardware.is_dir() else []
    for i, name in enumerate(hp.targets):
        if available and name not in available:
            raise ParamsError(
                f"hardware_map.targets.{i} = {name!r}: no {hardware / (name + '.yaml')}; available: {', '.join(available)}"
            )
    return load_targets(hardware, hp.targets)


def _reuse_policy(policy, network: list[LayerShape]):
    if isinstance(policy, list) and len(policy) != len(network):
        names = ", ".join(layer.name for layer in network)
        raise ParamsError(
            f"hardware_map.reuse_factor = {policy}: {len(policy)} factors for {len(network)} weight layers ({names}); "
            f"give one per layer or use auto"
        )
    return policy


def _check_precisions(targets: dict[str, Target], hp: HardwareMapParams) -> None:
    for name, target in targets.items():
        key = precision_key(target, hp.precision)
        chosen = hp.precision[key] if key else target.precisions[0]
        if key and chosen not in target.precisions:
            raise ParamsError(
                f"hardware_map.precision.{key} = {chosen!r}: {name} supports {', '.join(target.precisions)} "
                f"(see {target.source}); pick one of them or name the target in hardware_map.precision"
            )
        if isinstance(target, FpgaTarget) and hp.hls.enabled and PRECISION_BITS[chosen] != hp.hls.width:
            raise ParamsError(
                f"hardware_map.hls.precision = {hp.hls.precision!r}: {hp.hls.width} bits, but {name} is costed at "
                f"{chosen} ({PRECISION_BITS[chosen]} bits); make hardware_map.precision and hls.precision the same width"
            )


def _fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the weights and buffers: identifies the network a synthesis report was made for."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _arch(model: torch.nn.Module) -> str:
    return "cnn" if hasattr(model, "conv") else "mlp"


# ---------------------------------------------------------------- predictions


def _predict(name, target, network, hp, reuse, seed, progress) -> dict:
    if isinstance(target, CpuTarget) and target.calibrated:
        progress.message(f"hardware-map: calibrating {name} by microbenchmark (best of {hp.calibration_repeats})")
        target = calibrate(target, repeats=hp.calibration_repeats, seed=seed)
    result = predict(network, target, MODES, hp.batch_sizes, hp.precision, reuse)
    result["target_fields"] = target.model_dump()
    one = result["modes"]
    gains = ", ".join(
        f"{mode} {_x(one[mode]['1']['speedup_over_dense']['throughput'])}" for mode in MODES if mode != "dense"
    )
    fits = "fits" if one["dense"]["1"]["totals"]["fits"] else f"dense does not fit ({one['dense']['1']['totals']['binding_resource']})"
    progress.message(f"hardware-map: {name} ({result['label']}, {result['precision']}): {fits}; throughput vs dense: {gains}")
    return result


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.3g}x"


def _cpu_check(result: dict, timing: dict) -> dict:
    """Predicted latencies beside the quick torch measurement, per batch size."""
    check = {}
    for batch, measured in timing.items():
        dense = result["modes"]["dense"][batch]["totals"]["latency_s"]
        sparse = result["modes"]["sparse-sparse"][batch]["totals"]["latency_s"]
        check[batch] = {
            "predicted_dense_s": dense,
            "measured_dense_s": measured["median_s"],
            "ratio_dense": dense / measured["median_s"],
            "predicted_sparse_sparse_s": sparse,
            "measured_sparse_sparse_s": None,
            "measured_by": f"torch dense forward of the model, median of {measured['repeats']} runs "
                           f"({measured['threads']} threads), this stage",
        }
    return check


def _say_check(name: str, check: dict, progress: Progress) -> None:
    for batch, row in check.items():
        progress.message(
            f"hardware-map: {name} batch {batch}: dense predicted {_time(row['predicted_dense_s'])}, "
            f"measured {_time(row['measured_dense_s'])} (torch), predicted/measured {row['ratio_dense']:.3g}; "
            f"sparse-sparse predicted {_time(row['predicted_sparse_sparse_s'])}, measured: pending the benchmark stage"
        )


def _time(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _network_rows(network: list[LayerShape]) -> list[dict]:
    rows = network_to_dicts(network)
    for row, layer in zip(rows, network):
        row.update(
            weight_count=layer.weight_count,
            nonzero_weights=layer.nonzero_weights,
            macs={mode: layer.macs(mode) for mode in MODES},
        )
    return rows
