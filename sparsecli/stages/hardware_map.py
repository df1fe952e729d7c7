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
import shutil
from pathlib import Path

import torch

from sparsecli import checkpoint
from sparsecli.atomic import json_text, staged_dir, write_all
from sparsecli.errors import CheckpointError, InputFileError, ParamsError
from sparsecli.exports import hls_export, onnx_export
from sparsecli.params import HardwareMapParams, Params
from sparsecli.progress import Progress
from sparsecli.targets import calibrate, load_targets, network_to_dicts, predict
from sparsecli.targets import report as markdown
from sparsecli.targets import synthesis
from sparsecli.targets.from_model import network_from_model
from sparsecli.targets.measure import time_forward
from sparsecli.targets.network import MODES, PRECISION_BITS, LayerShape
from sparsecli.targets.schema import CpuTarget, FpgaTarget, Target
from sparsecli.training import read_splits

MODELS = ("models/pruned.pt", "models/train.pt")  # the first that exists is mapped
MEASURED = "measured"  # hardware/measured/<target>.{xml,rpt} + <target>.json: imported synthesis reports
HEADLINE = ("fits", "latency_s", "throughput_ips", "energy_j")


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
    stored = _measured_reports(hardware, fpga_parts, imported, import_report, fingerprint)
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
        hls_info = _hls(model, test, features, targets, results, hp, folder, paths["exports"], progress)
        detail = {
            "model": {"path": str(source), "fingerprint": fingerprint, "arch": _arch(model),
                      "test_samples": len(test), "data": meta.get("source")},
            "network": _network_rows(network),
            "params": hp.model_dump(),
            "targets": results,
            "onnx": onnx_info,
            "hls": hls_info,
        }
        metrics = _headline(detail)
        writers = {
            paths["metrics"]: lambda tmp: tmp.write_text(json_text(metrics)),
            paths["detail"]: lambda tmp: tmp.write_text(json.dumps(detail, indent=1, allow_nan=False) + "\n"),
            paths["report"]: lambda tmp: tmp.write_text(markdown.render(detail)),
        }
        if imported is not None:
            writers.update(_import_writers(Path(import_report), stored[imported[0]]))
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


def _precision_key(hp: HardwareMapParams, target: Target) -> str | None:
    return target.name if target.name in hp.precision else target.kind if target.kind in hp.precision else None


def _check_precisions(targets: dict[str, Target], hp: HardwareMapParams) -> None:
    for name, target in targets.items():
        key = _precision_key(hp, target)
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


# ---------------------------------------------------------------- synthesis reports


def _measured_reports(hardware: Path, fpga_parts: dict, imported, import_path, fingerprint: str) -> dict[str, dict]:
    """Imported reports of the FPGA targets mapped: the one imported now, and those stored before."""
    found = {}
    for name in fpga_parts:
        if imported is not None and imported[0] == name:
            report, origin, made_for = imported[1], str(import_path), fingerprint
            stored_as = str(_stored_report(hardware, name, Path(import_path)))
        else:
            sidecar = hardware / MEASURED / f"{name}.json"
            if not sidecar.is_file():
                continue
            try:
                record = json.loads(sidecar.read_text())
                stored_as = str(hardware / MEASURED / record["report"])
                origin, made_for = record["imported_from"], record["model_fingerprint"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputFileError(
                    f"{sidecar}: not a record of an imported report; delete it and import the report again "
                    f"(sparsecli hardware-map --import-report PATH)"
                ) from None
            report = synthesis.read_report(stored_as)
        stale = None
        if made_for != fingerprint:
            stale = "synthesised for another model (weights differ); export and synthesise again, then import"
        elif report["part"].lower() != fpga_parts[name].lower():
            stale = f"synthesised for part {report['part']}, the target file now names {fpga_parts[name]}"
        found[name] = {
            "label": "measured",
            "source": stored_as,
            "imported_from": origin,
            "compared_mode": synthesis.COMPARED_MODE,
            "stale": stale,
            "model_fingerprint": made_for,
            "report": report,
        }
    return found


def _stored_report(hardware: Path, name: str, source: Path) -> Path:
    suffix = ".xml" if source.read_text(errors="replace").lstrip().startswith("<") else ".rpt"
    return hardware / MEASURED / f"{name}{suffix}"


def _import_writers(source: Path, record: dict) -> dict:
    """Copy the imported report into hardware/measured/ with a note of the model it was made for."""
    target = Path(record["source"])
    sidecar = {"report": target.name, "imported_from": str(source), "model_fingerprint": record["model_fingerprint"]}
    return {
        target: lambda tmp: shutil.copyfile(source, tmp),
        target.with_suffix(".json"): lambda tmp: tmp.write_text(json_text(sidecar)),
    }


# ---------------------------------------------------------------- HLS


def _hls(model, test, features, targets, results, hp, folder: Path, final: Path, progress: Progress) -> dict:
    fpga = [name for name, target in targets.items() if isinstance(target, FpgaTarget)]
    version = hls_export.hls4ml_version()
    info: dict = {"enabled": hp.hls.enabled, "hls4ml": version, "projects": {}, "csim": None}
    if not hp.hls.enabled or not fpga:
        info["note"] = "HLS export off (hardware_map.hls.enabled: false)" if fpga else "no FPGA target mapped"
        return info
    if version is None:
        info["note"] = "hls4ml is not installed: no HLS project (pip install 'sparsecli[fpga]')"
        progress.message(f"hardware-map: {info['note']}; continuing with the model only")
        return info
    network = hls_export.export_network(model)
    shape = hls_export.input_shape(model, features)
    reference = hls_export.float_outputs(network, shape, test.x)
    for i, name in enumerate(fpga):
        target = targets[name]
        design = results[name]["modes"]["sparse-dense"]["1"]["layers"]
        csim = i == 0 and hp.hls.csim
        if csim:
            progress.message(f"hardware-map: compiling the HLS C simulation of {name} with g++")
        built = hls_export.write_project(
            network, shape, folder / "hls" / name, target.part, target.clock_mhz,
            [layer["reuse_factor"] for layer in design], hp.hls.precision,
            testbench=(test.x.numpy(), reference), csim_input=test.x.numpy() if csim else None,
            recorded_as=str(final / "hls" / name),
        )
        if csim:
            outputs = built.pop("outputs")
            info["csim"] = {"project": name, **hls_export.compare(outputs, reference, model, test)}
            progress.message(
                f"hardware-map: HLS C simulation (kWTA -> ReLU, {hp.hls.precision}): test accuracy "
                f"{info['csim']['test_accuracy_csim']:.4f} vs torch {info['csim']['test_accuracy_torch']:.4f}"
            )
        info["projects"][name] = built
    return info


# ---------------------------------------------------------------- metrics


def _headline(detail: dict) -> dict:
    """The figures `dvc metrics show` / `dvc exp show` compare; the rest is in reports/hardware_map.json."""
    onnx, csim = detail["onnx"], detail["hls"]["csim"]
    metrics: dict = {
        "model": detail["model"]["path"],
        "test_accuracy": onnx["test_accuracy_torch"],
        "onnx_argmax_agreement": onnx["argmax_agreement"],
        "onnx_max_abs_diff": onnx["max_abs_diff"],
    }
    if csim is not None:
        metrics["hls_csim_accuracy"] = csim["test_accuracy_csim"]
        metrics["hls_relu_float_accuracy"] = csim["test_accuracy_relu_float"]
    metrics["targets"] = {}
    for name, result in detail["targets"].items():
        entry: dict = {"label": result["label"], "precision": result["precision"]}
        for batch in result["modes"]["dense"]:
            entry[f"batch_{batch}"] = {
                mode: {**{k: by_batch[batch]["totals"][k] for k in HEADLINE},
                       "speedup": by_batch[batch]["speedup_over_dense"]["throughput"]}
                for mode, by_batch in result["modes"].items()
            }
        if "check" in result:
            entry["measured_dense_s"] = {b: row["measured_dense_s"] for b, row in result["check"].items()}
            entry["predicted_over_measured_dense"] = {b: row["ratio_dense"] for b, row in result["check"].items()}
        if "measured" in result:
            figures = result["measured"]["figures"]
            entry["synthesis"] = {"stale": result["measured"]["stale"] is not None,
                                  **{f"{k}_estimated_over_measured": v["ratio"] for k, v in figures.items()}}
        metrics["targets"][name] = entry
    return metrics
