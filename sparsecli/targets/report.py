"""Render the hardware-map results (the dict in reports/hardware_map.json) as Markdown, and
pick its headline figures (``headline``: metrics/hardware_map.json).

Every table row comes from that dict; the prose names the formulas (docstrings of
cost_fpga.py, cost_cpu.py and network.py) and the target-file fields they use, so a
figure can be recomputed by hand. A worked example does so for one FPGA layer.
"""

from __future__ import annotations

import math

from sparsecli.targets.network import MODES, PRECISION_BITS

RESOURCES = ("dsp", "lut", "ff", "memory")
HEADLINE = ("fits", "latency_s", "throughput_ips", "energy_j")  # per target, batch and mode


def render(detail: dict) -> str:
    parts = [_header(detail), _network(detail), _summary(detail)]
    for name, result in detail["targets"].items():
        parts.append(_fpga(name, result, detail) if result["kind"] == "fpga" else _cpu(name, result))
    parts += [_exports(detail), _assumptions()]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- formatting


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"


def _scaled(value, units: list[tuple[float, str]]) -> str:
    if value is None:
        return "—"
    for factor, unit in units:
        if abs(value) >= factor:
            return f"{value / factor:.4g} {unit}"
    factor, unit = units[-1]
    return f"{value / factor:.3g} {unit}"


def _time(seconds) -> str:
    return _scaled(seconds, [(1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")])


def _rate(per_second) -> str:
    """Inferences per second with an SI prefix."""
    return _scaled(per_second, [(1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")]).strip()


def _energy(joules) -> str:
    return _scaled(joules, [(1, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")])


def _times(ratio) -> str:
    return "—" if ratio is None else f"{ratio:.3g}×"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------- sections


def _header(detail: dict) -> str:
    model = detail["model"]
    return "\n".join([
        "# Hardware map",
        "",
        f"Model `{model['path']}` ({model['arch']}, weights fingerprint `{model['fingerprint'][:12]}`); input "
        f"densities measured on the {model['test_samples']}-sample test split ({model['data']}). Written by "
        "`sparsecli hardware-map` from `hardware_map` params; every figure, per layer, with the target fields it "
        "came from, is in `reports/hardware_map.json`.",
        "",
        "**Labels.** `estimated`: a cost model applied to the target file (formulas in the docstrings of "
        "`sparsecli/targets/cost_fpga.py` and `cost_cpu.py`; MACs in `network.py`). `calibrated`: the CPU cost "
        "model with this machine's figures measured by the microbenchmark in this run (`calibrate.py`). "
        "`measured`: a timing or synthesis of this network (the torch forward timed by this stage; an imported "
        "HLS synthesis report).",
        "",
        "**Modes.** `dense`: nothing exploited. `sparse-dense`: zero weights skipped. `sparse-sparse`: zero "
        "weights and zero inputs skipped (a layer whose input is fully dense runs its sparse-dense kernel). "
        "Speedup = throughput of the mode / throughput of dense, same target, batch and precision.",
    ])


def _network(detail: dict) -> str:
    rows = [
        [f"`{r['name']}`", r["kind"], r["in_features"], r["out_features"], r["output_positions"],
         _num(r["weight_count"]), _num(r["nonzero_weights"]), f"{r['weight_density']:.4f}",
         f"{r['input_density']:.4f}", *(_num(r["macs"][mode]) for mode in MODES)]
        for r in detail["network"]
    ]
    total = ["**total**", "", "", "", "", _num(sum(r["weight_count"] for r in detail["network"])),
             _num(sum(r["nonzero_weights"] for r in detail["network"])), "", "",
             *(_num(sum(r["macs"][mode] for r in detail["network"])) for mode in MODES)]
    headers = ["layer", "kind", "in_features", "out_features", "output positions", "weights", "non-zero weights",
               "weight density", "input density", "MACs dense", "MACs sparse-dense", "MACs sparse-sparse"]
    return "## Network\n\n" + _table(headers, rows + [total]) + (
        "\n\nPer sample. weight density = non-zero weights / weights; input density = non-zero inputs / inputs on "
        "the test split. MACs: dense = weights × positions; sparse-dense = non-zero weights × positions; "
        "sparse-sparse = non-zero weights × input density × positions. Batch norm, pooling and activations are "
        "not costed."
    )


def _summary(detail: dict) -> str:
    rows = []
    for name, result in detail["targets"].items():
        one = {mode: result["modes"][mode]["1"] for mode in MODES}
        dense = one["dense"]["totals"]
        rows.append([
            f"`{name}`", result["label"], result["precision"], _num(dense["fits"]),
            _num(dense["weights_on_chip"]) if "weights_on_chip" in dense else "—", _time(dense["latency_s"]),
            _rate(dense["throughput_ips"]),
            *(_times(one[mode]["speedup_over_dense"]["throughput"]) for mode in MODES[1:]),
            _rate(one["sparse-sparse"]["totals"]["throughput_ips"]), _energy(one["sparse-sparse"]["totals"]["energy_j"]),
        ])
    headers = ["target", "label", "precision", "dense fits", "dense weights on chip", "dense latency", "dense inf/s",
               "sparse-dense speedup",
               "sparse-sparse speedup", "sparse-sparse inf/s", "sparse-sparse energy/inf"]
    return "## Summary (batch 1)\n\n" + _table(headers, rows)


def _mode_rows(result: dict, fpga: bool) -> list[list]:
    rows = []
    for mode, by_batch in result["modes"].items():
        for batch, cost in by_batch.items():
            t = cost["totals"]
            row = [mode, batch, _num(t["fits"]), _time(t["latency_s"]), _rate(t["throughput_ips"]),
                   _energy(t["energy_j"]), _times(cost["speedup_over_dense"]["throughput"]), t["bound"] or "—"]
            if fpga:
                res = t["resources"]
                row += [t.get("binding_resource") or "—", _num(t["copies"]), _num(t.get("ii_cycles")),
                        *(f"{_num(res[r]['used'])} ({_pct(res[r].get('utilisation'))})" for r in RESOURCES),
                        _num(t["weights_on_chip"])]
            else:
                row += [_num(t["achieved_gflops"]), _pct(t["resources"]["compute_utilisation"]),
                        _pct(t["resources"]["bandwidth_utilisation"])]
            rows.append(row)
    return rows


def _fpga(name: str, result: dict, detail: dict) -> str:
    f = result["target_fields"]
    p = result["precision"]
    est, res, caps = f["estimator"], f["resources"], f["caps"]
    inputs = (
        f"Inputs from `{result['target_file']}`: part {f['part']}, clock_mhz {_num(f['clock_mhz'])}; "
        f"resources dsp {_num(res['dsp'])}, lut {_num(res['lut'])}, ff {_num(res['ff'])}, onchip_memory_bits "
        f"{_num(f['onchip_memory_bits'])}; caps dsp {caps['dsp']}, lut {caps['lut']}, ff {caps['ff']}, memory "
        f"{caps['memory']}; macs_per_dsp[{p}] {_num(f['macs_per_dsp'][p])}; offchip_bandwidth_gbps "
        f"{_num(f['offchip_bandwidth_gbps'])}; power.typical_w {_num(f['power']['typical_w'])}. Estimator: "
        f"lut_per_multiplier[{p}] {est['lut_per_multiplier'][p]}, ff_per_multiplier[{p}] "
        f"{est['ff_per_multiplier'][p]}, lut_per_layer {est['lut_per_layer']}, pipeline_overhead_cycles "
        f"{est['pipeline_overhead_cycles']}, sparse_sparse_lut_per_multiplier "
        f"{est['sparse_sparse_lut_per_multiplier']}, sparse_sparse_index_cycles {est['sparse_sparse_index_cycles']}. "
        f"Precision {p} ({PRECISION_BITS[p]} bits); reuse factor policy `{result['reuse_policy']}`."
    )
    headers = ["mode", "batch", "fits", "latency", "inf/s", "energy/inf", "speedup", "bound", "binding resource",
               "copies", "II (cycles)", "DSP", "LUT", "FF", "memory bits", "weights on chip"]
    layer_rows = []
    for mode in MODES:
        for layer in result["modes"][mode]["1"]["layers"]:
            layer_rows.append([mode, f"`{layer['name']}`", layer["mode_used"], _num(layer["macs"]), _num(layer["work"]),
                               _num(layer["reuse_factor"]), _num(layer["multipliers"]), _num(layer["dsp"]),
                               _num(layer["lut"]), _num(layer["ff"]), _num(layer["ii_cycles"]),
                               _num(layer["latency_cycles"]), _num(layer["storage_bits"])])
    layer_headers = ["mode", "layer", "kernel", "MACs", "work / position", "reuse R", "lanes", "DSP", "LUT", "FF",
                     "II (cycles)", "latency (cycles)", "storage bits"]
    parts = [
        f"## `{name}` ({result['label']})",
        inputs,
        _verdict(result),
        _table(headers, _mode_rows(result, fpga=True)),
        "Resources are those of all copies, with utilisation of the device total; energy = power.typical_w / "
        "throughput. `fits: no` leaves latency and throughput undefined and names the binding resource.",
        "### Per layer, batch 1 (one pipeline copy)",
        _table(layer_headers, layer_rows),
        _worked_example(name, result, detail),
    ]
    if "measured" in result:
        parts.append(_measured(result["measured"]))
    return "\n\n".join(parts)


def _verdict(result: dict) -> str:
    """Whether the dense network fits, and where its weights live."""
    t = result["modes"]["dense"]["1"]["totals"]
    memory = t["resources"]["memory"]
    budget = memory["cap"] * memory["available"]
    stored = sum(layer["storage_bits"] for layer in result["modes"]["dense"]["1"]["layers"])
    if not t["fits"]:
        return f"**Dense network: does not fit** (binding resource: {t['binding_resource']})."
    where = (f"its weights ({_num(stored)} bits) fit on chip (cap × onchip_memory_bits = {_num(budget)} bits)"
             if t["weights_on_chip"] else
             f"its weights ({_num(stored)} bits) exceed cap × onchip_memory_bits = {_num(budget)} bits, so they "
             f"stream from off-chip memory at {_num(result['target_fields']['offchip_bandwidth_gbps'])} GB/s "
             f"(batch 1 is {t['bound']} bound)")
    return f"**Dense network: fits**; {where}."


def _worked_example(name: str, result: dict, detail: dict) -> str:
    """One layer's sparse-sparse design and the network's throughput, recomputed in words."""
    cost = result["modes"]["sparse-sparse"]["1"]
    if not cost["totals"]["fits"]:
        return "### Worked example\n\nThe sparse-sparse design does not fit, so no worked example."
    f, p = result["target_fields"], result["precision"]
    est = f["estimator"]
    # the biggest layer that runs the sparse-sparse kernel (else the biggest layer)
    order = sorted(range(len(detail["network"])), key=lambda i: -detail["network"][i]["macs"]["dense"])
    index = next((i for i in order if cost["layers"][i]["mode_used"] == "sparse-sparse"), order[0])
    shape, layer = detail["network"][index], cost["layers"][index]
    lines = [f"### Worked example: `{shape['name']}`, sparse-sparse, batch 1", ""]
    if layer["mode_used"] == "sparse-sparse":
        work = (f"ceil(non-zero weights × input density) = ceil({shape['nonzero_weights']:,} × "
                f"{shape['input_density']:.6g}) = {layer['work']:,}")
    else:
        work = f"non-zero weights = {layer['work']:,} (input density 1: this layer runs the sparse-dense kernel)"
    ss = layer["mode_used"] == "sparse-sparse"
    lut = (f"lanes × (lut_per_multiplier[{p}] + sparse_sparse_lut_per_multiplier) + lut_per_layer = "
           f"{layer['multipliers']:,} × ({est['lut_per_multiplier'][p]} + {est['sparse_sparse_lut_per_multiplier']}) + "
           f"{est['lut_per_layer']}" if ss else
           f"lanes × lut_per_multiplier[{p}] + lut_per_layer = {layer['multipliers']:,} × "
           f"{est['lut_per_multiplier'][p]} + {est['lut_per_layer']}")
    latency = (f"II + pipeline_overhead_cycles + sparse_sparse_index_cycles = {layer['ii_cycles']:,} + "
               f"{est['pipeline_overhead_cycles']} + {est['sparse_sparse_index_cycles']}" if ss else
               f"II + pipeline_overhead_cycles = {layer['ii_cycles']:,} + {est['pipeline_overhead_cycles']}")
    policy = ("auto: the smallest interval T at which every layer, with R = clamp(floor(T / positions), 1, work), "
              "fits the capped resources" if result["reuse_policy"] == "auto" else f"from params: {result['reuse_policy']}")
    lines += [
        f"- non-zero weights = round({shape['in_features']:,} × {shape['out_features']:,} × "
        f"{shape['weight_density']:.6g}) = {shape['nonzero_weights']:,}",
        f"- work = {work} MACs per output position",
        f"- reuse R = {layer['reuse_factor']:,} ({policy})",
        f"- lanes = ceil(work / R) = ceil({layer['work']:,} / {layer['reuse_factor']:,}) = {layer['multipliers']:,}",
        f"- DSP = ceil(lanes / macs_per_dsp[{p}]) = ceil({layer['multipliers']:,} / {_num(f['macs_per_dsp'][p])}) "
        f"= {layer['dsp']:,}",
        f"- LUT = {lut} = {layer['lut']:,}",
        f"- FF = lanes × ff_per_multiplier[{p}] = {layer['multipliers']:,} × {est['ff_per_multiplier'][p]} = {layer['ff']:,}",
        f"- II = R × output positions = {layer['reuse_factor']:,} × {shape['output_positions']} = {layer['ii_cycles']:,} "
        f"cycles; latency = {latency} = {layer['latency_cycles']:,} cycles",
        f"- storage = stored weights × (precision bits" + (" + ceil(log2(out_features))" if ss else "") +
        f") = {layer['storage_bits']:,} bits",
    ]
    for mode in ("sparse-sparse", "dense"):
        t = result["modes"][mode]["1"]["totals"]
        if not t["fits"]:
            lines.append(f"- {mode}: does not fit (binding resource {t['binding_resource']})")
            continue
        per_copy = {r: t["resources"][r]["used"] / t["copies"] for r in RESOURCES}
        budget = {r: t["resources"][r]["cap"] * t["resources"][r]["available"] for r in RESOURCES}
        ratios = ", ".join(f"{r} {_num(budget[r])} / {_num(per_copy[r])}" for r in RESOURCES if per_copy[r])
        compute = t["copies"] * f["clock_mhz"] * 1e6 / t["ii_cycles"]
        line = (f"- {mode} network: copies = floor(min(cap × available / used per copy: {ratios})) = {t['copies']:,}; "
                f"compute throughput = copies × clock / max II = {t['copies']:,} × {_num(f['clock_mhz'])}e6 / "
                f"{t['ii_cycles']:,} = {_num(compute)} inf/s")
        if t["offchip_traffic_bytes"]:
            memory = f["offchip_bandwidth_gbps"] * 1e9 / t["offchip_traffic_bytes"]
            line += (f"; weights streamed: memory throughput = offchip_bandwidth / weight bytes per inference = "
                     f"{_num(f['offchip_bandwidth_gbps'])}e9 / {_num(t['offchip_traffic_bytes'])} = {_num(memory)} inf/s")
        line += (f"; throughput = {_num(t['throughput_ips'])} inf/s ({_rate(t['throughput_ips'])}, {t['bound']} bound); "
                 f"energy = power.typical_w / throughput = {_num(f['power']['typical_w'])} / "
                 f"{_num(t['throughput_ips'])} = {_energy(t['energy_j'])}")
        lines.append(line)
    gain = cost["speedup_over_dense"]["throughput"]
    lines.append(f"- sparse-sparse speedup = throughput ratio = {_times(gain)}")
    return "\n".join(lines)


def _measured(record: dict) -> str:
    report = record["report"]
    show = {"latency_s": _time, "throughput_ips": _rate}
    rows = [[key, show.get(key, _num)(v["estimated"]), show.get(key, _num)(v["measured"]), _times(v["ratio"])]
            for key, v in record["figures"].items()]
    stale = f"\n\n**Stale:** {record['stale']}." if record["stale"] else ""
    return (
        f"### Measured: HLS synthesis report (`measured`)\n\n`{record['source']}` (imported from "
        f"`{record['imported_from']}`; {report['format']}, tool version {report['tool_version'] or '?'}, part "
        f"{report['part']}, top `{report['top']}`, clock {report['clock_period_ns']} ns, estimated "
        f"{report['estimated_clock_period_ns']} ns). Compared with the {record['compared_mode']} batch-1 estimate "
        f"of one pipeline copy (the hls4ml design keeps zero weights as constants and reads every input)."
        f"{stale}\n\n" + _table(["figure", "estimated", "measured", "estimated / measured"], rows)
    )


def _cpu(name: str, result: dict) -> str:
    f, p = result["target_fields"], result["precision"]
    lanes = f["simd_width_bits"] // PRECISION_BITS[p]
    peak = f["cores"] * lanes * f["fma_units"] * 2 * f["clock_ghz"]
    eff = f["efficiency"]
    calibrated = ", ".join(f["calibrated"]) or "none"
    inputs = (
        f"Inputs from `{result['target_file']}` (fields measured in this run: {calibrated}): processor "
        f"{f['processor']}; cores {f['cores']}, clock_ghz {_num(f['clock_ghz'])}, simd_width_bits "
        f"{f['simd_width_bits']} (lanes[{p}] = {lanes}), fma_units {f['fma_units']} → peak = cores × lanes × "
        f"fma_units × 2 × clock = {_num(peak)} GFLOP/s; memory_bandwidth_gbps {_num(f['memory_bandwidth_gbps'])} × "
        f"memory_efficiency {_num(f['memory_efficiency'])}; efficiency dense {_num(eff['dense'])}, sparse_dense "
        f"{_num(eff['sparse_dense'])}, sparse_sparse {_num(eff['sparse_sparse'])}; layer_overhead_us "
        f"{_num(f['layer_overhead_us'])}; tdp_w {_num(f['tdp_w'])}. Precision {p}."
    )
    parts = [f"## `{name}` ({result['label']})", inputs]
    if result.get("calibration"):
        c = result["calibration"]
        parts.append(
            f"Calibration (this run, numpy {c['numpy']}, {c['seconds']:.2f} s): dense GEMM {_num(c['gemm_gflops'])} "
            f"GFLOP/s, GEMV {_num(c['gemv_gbps'])} GB/s, CSR gather {_num(c['sparse_dense_gflops'])} GFLOP/s, "
            f"active-column CSC {_num(c['sparse_sparse_gflops'])} GFLOP/s, call overhead "
            f"{_num(c['call_overhead_us'])} µs; nominal peak {_num(c['peak_gflops_nominal'])} GFLOP/s."
        )
    elif result.get("calibration_note"):
        parts.append(f"Calibration: {result['calibration_note']}.")
    headers = ["mode", "batch", "fits", "latency", "inf/s", "energy/inf", "speedup", "bound", "achieved GFLOP/s",
               "compute use", "bandwidth use"]
    parts.append(_table(headers, _mode_rows(result, fpga=False)))
    layer_rows = [
        [mode, f"`{layer['name']}`", layer["mode_used"], _num(layer["macs"]), _num(layer["flops"]),
         _num(layer["memory_traffic_bytes"]), _time(layer["time_compute_s"]), _time(layer["time_memory_s"]),
         _time(layer["latency_s"]), layer["bound"]]
        for mode in MODES for layer in result["modes"][mode]["1"]["layers"]
    ]
    parts += ["### Per layer, batch 1",
              _table(["mode", "layer", "kernel", "MACs", "flops", "DRAM bytes", "t_compute", "t_memory",
                      "latency (max + overhead)", "bound"], layer_rows)]
    if "check" in result:
        rows = [[batch, _time(r["predicted_dense_s"]), _time(r["measured_dense_s"]), f"{r['ratio_dense']:.3g}",
                 _time(r["predicted_sparse_sparse_s"]), "pending (benchmark stage)"]
                for batch, r in result["check"].items()]
        measured_by = next(iter(result["check"].values()))["measured_by"]
        parts += ["### Predicted vs measured on this machine",
                  _table(["batch", "dense predicted (calibrated)", "dense measured", "predicted / measured",
                          "sparse-sparse predicted (calibrated)", "sparse-sparse measured"], rows),
                  f"Measured: {measured_by}. The prediction counts the weight layers' multiply-adds and memory "
                  "traffic plus one call overhead per layer; the torch forward also runs batch norm, kWTA "
                  "(top-k, scatter) and framework dispatch, which a small network at small batch is dominated by."]
    return "\n\n".join(parts)


def _exports(detail: dict) -> str:
    onnx, hls = detail["onnx"], detail["hls"]
    parts = [
        "## Exports",
        f"**ONNX** `{onnx['file']}`: opset {onnx['opset']}, operators {', '.join(onnx['operators'])} (kWTA as TopK "
        f"+ ScatterElements + Mul, masked weights as zeros). onnxruntime {onnx['onnxruntime']} on the "
        f"{onnx['samples']} test samples: max |onnx − torch| = {onnx['max_abs_diff']:.3g}, argmax agreement "
        f"{_pct(onnx['argmax_agreement'])}, test accuracy {_pct(onnx['test_accuracy_onnx'])} (torch "
        f"{_pct(onnx['test_accuracy_torch'])}). Label: `measured` (run here).",
    ]
    if not hls["projects"]:
        parts.append(f"**HLS**: {hls.get('note', 'none')}.")
        return "\n\n".join(parts)
    parts.append(
        f"**HLS** (hls4ml {hls['hls4ml']}): one project per FPGA target. Substitutions in the exported network: "
        "**kWTA is replaced by ReLU** (hls4ml has no top-k layer), batch norm is folded into the preceding "
        "weights, masks are baked into the weights and the zeros kept as constants, so HLS removes their "
        "multipliers. Reuse factors are those of the target's sparse-dense estimate (the mode this design "
        "implements), as hls4ml rounded them. Build with the vendor tools in the project folder "
        "(`vitis_hls -f build_prj.tcl`), then `sparsecli hardware-map --import-report <top>_csynth.xml`."
    )
    rows = []
    for name, info in hls["projects"].items():
        reuse = ", ".join(f"{a}→{b}" if a != b else str(a) for a, b in zip(info["reuse_requested"], info["reuse_used"]))
        rows.append([f"`{name}`", f"`{info['folder']}`", info["part"], f"{info['clock_period_ns']:.4g} ns",
                     info["precision"], reuse, ", ".join(_num(z) for z in info["zero_weights"])])
    parts.append(_table(["target", "project", "part", "clock", "precision", "reuse factors", "zero weights"], rows))
    csim = hls["csim"]
    if csim is None:
        parts.append("C simulation: not run (`hardware_map.hls.csim: false`).")
    else:
        project = hls["projects"][csim["project"]]
        accum = sorted({v for k, v in project["types"].items() if k.endswith("accum_t")})
        parts.append(
            f"C simulation: `{csim['project']}` compiled with g++ (hls4ml's bit-accurate ap_fixed C++), run on the "
            f"{csim['samples']} test samples; accumulators {', '.join(accum) or '?'} (widened by hls4ml). Its "
            "numerics are the same for every target (fixed-point sums are exact whatever the reuse factor).\n\n"
            + _table(["network", "test accuracy"], [
                ["torch, trained model (kWTA)", _pct(csim["test_accuracy_torch"])],
                ["torch, kWTA → ReLU (float)", _pct(csim["test_accuracy_relu_float"])],
                [f"HLS C simulation, kWTA → ReLU, {project['precision']}", _pct(csim["test_accuracy_csim"])],
            ])
            + f"\n\nC simulation vs float ReLU network: argmax agreement "
            f"{_pct(csim['csim_argmax_agreement_with_relu_float'])}, max abs diff "
            f"{csim['csim_max_abs_diff_from_relu_float']:.3g}."
        )
    return "\n\n".join(parts)


def _assumptions() -> str:
    return "## Assumptions\n\n" + "\n".join(f"- {line}" for line in [
        "FPGA (cost_fpga.py, after hls4ml, Duarte et al. 2018): every layer has its own multipliers, layers run as "
        "a pipeline; a layer with reuse factor R accepts an input every R × positions cycles; all multipliers map "
        "to DSPs; zero weights are constants and cost nothing; in sparse-sparse mode weights are stored by input "
        "column with their output index and only active columns are multiplied; whole-pipeline copies fill the "
        "capped resources; weights live on chip (each copy its own) or, if they do not fit, stream from off-chip "
        "memory once per batch. `estimator:` fields of the target file are assumptions, not datasheet figures.",
        "CPU (cost_cpu.py, roofline, Williams et al. 2009): time per layer = max(flops / (peak × efficiency of the "
        "kernel family), DRAM bytes / achieved bandwidth) + a per-call overhead; weights are read from DRAM once "
        "per batch; sparse kernels use int32 indices (CSR for sparse-dense, active-column CSC for sparse-sparse).",
        "Active inputs are spread evenly over weight columns (exact in expectation); a batch of b inputs of density "
        "d touches 1 − (1 − d)^b of the weight columns.",
        "Energy = board power (FPGA: power.typical_w; CPU: tdp_w) × time; no idle or host power is counted.",
        "The torch timing is one quick measurement on this machine, not a benchmark.",
    ])


# ---------------------------------------------------------------- headline metrics


def headline(detail: dict) -> dict:
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
