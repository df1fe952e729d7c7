"""The benchmark stage's Markdown report (``reports/benchmark.md``) from its metrics dict."""

from __future__ import annotations

from sparsecli.targets.network import MODES



def _us(seconds) -> str:
    return "–" if not seconds else f"{seconds * 1e6:.3g} µs"


def _fmt(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(metrics: dict) -> str:
    m = metrics["machine"]
    lines = ["# Benchmark: sparse CPU inference vs dense torch (measured)", "",
             f"{m['cpu']}, {m['cores']} cores, {' '.join(m['simd_flags'])}; kernels compiled for {m.get('path', '?')}; "
             f"torch {m['torch']}, numba {m['numba']}; "
             f"load average {m['load_average']:.2f} at the end.", "", metrics["method"] + ".", ""]
    if metrics["check_failures"]:
        lines += ["**Kernels that disagreed with dense (no speedup reported):**", ""]
        lines += [f"- {f}" for f in metrics["check_failures"]] + [""]
    for label, entry in metrics["networks"].items():
        lines += [f"## {label}", ""]
        if "skipped" in entry:
            lines += [f"Skipped: {entry['skipped']}", ""]
            continue
        if "fidelity" in entry:
            f = entry["fidelity"]
            lines += [f"Sparse engine vs the torch model on the test split: argmax agreement "
                      f"{f['argmax_agreement']:.2%}, max abs diff {f['max_abs_diff']:.3g} (kWTA boosting not folded).", ""]
        lines += ["| batch | threads | stage | dense µs | sparse-dense × (ideal) | sparse-sparse × (ideal) |",
                  "|---|---|---|---|---|---|"]
        for row in entry["rows"]:
            dense = row["times_s"]["dense"]
            cells = [f"{_fmt(row['speedup'].get(k))}× ({_fmt(row['ideal'].get(k))})" if row["times_s"].get(k)
                     else "–" for k in ("sparse-dense", "sparse-sparse")]
            lines.append(f"| {row['batch']} | {row['threads']} | {row['stage']} | "
                         f"{dense['median_s'] * 1e6:.1f} | {cells[0]} | {cells[1]} |")
        for o in entry.get("onnxruntime", []):
            lines.append(f"| {o['batch']} | {o['threads']} | onnxruntime (dense model) | "
                         f"{o['times_s']['dense']['median_s'] * 1e6:.1f} | dense torch / onnxruntime = "
                         f"{o['dense_over_onnxruntime']:.2f} | |")
        lines.append("")
    predictions = metrics.get("hardware_map")
    if predictions:
        lines += ["## Beside the hardware-map predictions (pipeline model, batch 1)", "",
                  "| target | label | dense latency | sparse-sparse latency | sparse-dense × | sparse-sparse × |",
                  "|---|---|---|---|---|---|"]
        for name, p in predictions.items():
            lat = p["latency_s"]
            lines.append(f"| {name} | {p['label']} | {_us(lat.get('dense'))} | {_us(lat.get('sparse-sparse'))} | "
                         f"{_fmt(p['speedup'].get('sparse-dense'))} | {_fmt(p['speedup'].get('sparse-sparse'))} |")
        measured = metrics.get("measured_latency_s")
        speeds = metrics["headline"].get("pipeline model b1 t1")
        if measured and speeds:
            lines.append(f"| this CPU, 1 thread | measured | {_us(measured.get('dense'))} | "
                         f"{_us(measured.get('sparse-sparse'))} | {_fmt(speeds.get('sparse-dense'))} | "
                         f"{_fmt(speeds.get('sparse-sparse'))} |")
        ratio = (predictions.get("cpu-local") or {}).get("predicted_over_measured")
        if ratio:
            lines += ["", "cpu-local predicted / measured latency: " +
                      ", ".join(f"{mode} {value:.2f}" for mode, value in ratio.items())]
        lines.append("")
    ratios = [(label, e["prediction_ratio"]) for label, e in metrics["networks"].items() if e.get("prediction_ratio")]
    if ratios:
        lines += ["## Cost model vs measurement (cpu-local kernel model, 1 thread)", "",
                  "Predicted / measured end-to-end latency: the median of the ratios within each interleaved "
                  "round (the ratio of the medians in brackets); `sparsecli.targets.cost_kernels`, each layer "
                  "timed on a synthetic twin in this run.",
                  "", "| network | batch | dense | sparse-dense | sparse-sparse |", "|---|---|---|---|---|"]
        for label, ratio in ratios:
            for batch in ratio["dense"]:
                cells = [f"{ratio[m][batch]['ratio']:.2f} ({ratio[m][batch].get('ratio_of_medians', float('nan')):.2f})"
                         if ratio[m].get(batch) else "–" for m in MODES]
                lines.append(f"| {label} | {batch} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
