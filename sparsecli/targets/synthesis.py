"""Read a Vivado/Vitis HLS C-synthesis report and set it beside the FPGA estimate.

Both report formats the tools write are read: `<top>_csynth.xml` (the XML profile) and
`<top>_csynth.rpt` (the text report with the Timing, Latency and Utilization tables).
From either come the part, the clock, the latency and initiation interval in cycles and
the DSP/LUT/FF/BRAM/URAM use of one instance of the design.

Measured figures derived from them (`measured`, next to the `estimated` ones):

    latency_s        = latency_cycles (worst case) * target clock period
    throughput_ips   = 1 / (interval_cycles (max) * target clock period)     one instance

The hls4ml design implements the sparse-dense mode (zero weights are constants, so
their multipliers vanish; every input is read), so a report is compared with the
sparse-dense batch-1 estimate of one pipeline copy: ratio = estimated / measured.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from sparsecli.atomic import json_text
from sparsecli.errors import InputFileError

RESOURCES = ("dsp", "lut", "ff", "bram_18k", "uram")
COMPARED_MODE = "sparse-dense"
MEASURED = "measured"  # hardware/measured/<target>.{xml,rpt} + <target>.json: imported synthesis reports
_XML_RESOURCE = {"DSP": "dsp", "DSP48E": "dsp", "LUT": "lut", "FF": "ff", "BRAM_18K": "bram_18k", "URAM": "uram"}
_HOWTO = "pass the <top>_csynth.xml or <top>_csynth.rpt from <project>/solution1/syn/report/"


def read_report(path: str | Path) -> dict:
    """The synthesis figures of a csynth report (XML or text), or one InputFileError line."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise InputFileError(f"{path}: synthesis report not found; {_HOWTO}") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read synthesis report ({e.strerror})") from None
    if text.lstrip().startswith("<"):
        report = _read_xml(path, text)
    elif "== Performance Estimates" in text and "== Utilization Estimates" in text:
        report = _read_rpt(path, text)
    else:
        raise InputFileError(f"{path}: not a Vivado/Vitis HLS synthesis report; {_HOWTO}")
    for key in ("latency_cycles", "interval_cycles", "clock_period_ns"):
        if not report[key] or report[key] <= 0:
            raise InputFileError(f"{path}: {key} is {report[key]!r}; the design has no fixed latency to compare")
    return report


def _read_xml(path: Path, text: str) -> dict:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise InputFileError(f"{path}: not valid XML (line {e.position[0]}); {_HOWTO}") from None

    def get(where: str, number: bool = True):
        node = root.find(where)
        if node is None or node.text is None:
            raise InputFileError(f"{path}: not a complete csynth.xml: {where} is missing; {_HOWTO}")
        return _number(path, where, node.text) if number else node.text.strip()

    def resources(where: str) -> dict:
        node = root.find(where)
        if node is None:
            raise InputFileError(f"{path}: not a complete csynth.xml: {where} is missing; {_HOWTO}")
        found = {_XML_RESOURCE[c.tag]: _number(path, f"{where}/{c.tag}", c.text) for c in node if c.tag in _XML_RESOURCE}
        return {key: found.get(key, 0) for key in RESOURCES}

    latency = "PerformanceEstimates/SummaryOfOverallLatency/"
    version = root.find("ReportVersion/Version")
    return {
        "format": "csynth.xml",
        "tool_version": version.text.strip() if version is not None and version.text else None,
        "part": get("UserAssignments/Part", number=False),
        "top": get("UserAssignments/TopModelName", number=False),
        "clock_period_ns": get("UserAssignments/TargetClockPeriod"),
        "estimated_clock_period_ns": get("PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "latency_cycles_best": get(latency + "Best-caseLatency"),
        "latency_cycles": get(latency + "Worst-caseLatency"),
        "interval_cycles_min": get(latency + "Interval-min"),
        "interval_cycles": get(latency + "Interval-max"),
        "resources": resources("AreaEstimates/Resources"),
        "available": resources("AreaEstimates/AvailableResources"),
    }


def _read_rpt(path: Path, text: str) -> dict:
    def field(pattern: str, what: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        if not match:
            raise InputFileError(f"{path}: not a complete csynth.rpt: no {what} found; {_HOWTO}")
        return match[1].strip()

    clock = _rows(_section(text, "+ Timing:"))
    latency = _rows(_section(text, "+ Latency:"))
    usage = _rows(_section(text, "== Utilization Estimates"))
    if not clock or not latency or len(usage) < 3:
        raise InputFileError(f"{path}: not a complete csynth.rpt: Timing, Latency or Utilization table missing; {_HOWTO}")
    target_ns, estimated_ns = (_number(path, "clock", cell.removesuffix("ns")) for cell in clock[-1][1:3])
    cells = latency[-1]
    # Vitis: latency min, max, absolute min, max, interval min, max, type; Vivado: latency min, max, interval min, max, type
    columns = {7: (0, 1, 4, 5), 5: (0, 1, 2, 3)}.get(len(cells))
    if columns is None:
        raise InputFileError(f"{path}: not a complete csynth.rpt: unexpected Latency table row {'|'.join(cells)}; {_HOWTO}")
    lat_min, lat_max, int_min, int_max = (_number(path, "latency table", cells[i]) for i in columns)
    header = [h.lower().replace("dsp48e", "dsp") for h in usage[0]]
    rows = {row[0].lower(): row for row in usage[1:]}
    if "total" not in rows or "available" not in rows:
        raise InputFileError(f"{path}: not a complete csynth.rpt: no Total/Available utilization row; {_HOWTO}")

    def resources(row: list[str]) -> dict:
        values = dict(zip(header[1:], row[1:]))
        return {key: _number(path, f"utilization {key}", values.get(key, "0").replace("-", "0")) for key in RESOURCES}

    version = re.search(r"^\* Version:\s*(\S+)", text, re.MULTILINE)
    return {
        "format": "csynth.rpt",
        "tool_version": version[1] if version else None,
        "part": field(r"^\* Target device:\s*(\S+)", "Target device"),
        "top": field(r"HLS Report for '([^']+)'", "HLS Report for '<top>'"),
        "clock_period_ns": target_ns,
        "estimated_clock_period_ns": estimated_ns,
        "latency_cycles_best": lat_min,
        "latency_cycles": lat_max,
        "interval_cycles_min": int_min,
        "interval_cycles": int_max,
        "resources": resources(rows["total"]),
        "available": resources(rows["available"]),
    }


def _section(text: str, title: str) -> str:
    """The text from `title` up to the next blank-line-separated section."""
    start = text.find(title)
    if start < 0:
        return ""
    rest = text[start + len(title):]
    end = re.search(r"\n\s*\n\s*(\+ |==|\* Detail)", rest)
    return rest[: end.start()] if end else rest


def _rows(section: str) -> list[list[str]]:
    """Cells of each `|a|b|` table row in a section (borders and blank lines dropped)."""
    rows = []
    for line in section.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _number(path: Path, where: str, text: str | None) -> float | int:
    value = (text or "").strip().removesuffix("ns").strip().lstrip("~")
    try:
        number = float(value)
    except ValueError:
        raise InputFileError(f"{path}: {where} is {text!r}, not a number; {_HOWTO}") from None
    return int(number) if number.is_integer() else number


def match_target(report: dict, parts: dict[str, str], source: Path) -> str:
    """The target whose `part` is the report's part (`parts`: target name -> part)."""
    matches = [name for name, part in parts.items() if part.lower() == str(report["part"]).lower()]
    if len(matches) != 1:
        known = ", ".join(f"{name} ({part})" for name, part in parts.items()) or "none"
        why = "matches no" if not matches else "matches more than one"
        raise InputFileError(
            f"{source}: part {report['part']} {why} FPGA target in hardware_map.targets; targets: {known}"
        )
    return matches[0]


def compare(report: dict, prediction: dict, clock_mhz: float) -> dict:
    """Measured figures of one design instance beside the sparse-dense batch-1 estimate of one copy."""
    cost = prediction["modes"][COMPARED_MODE]["1"]["totals"]
    period = report["clock_period_ns"] * 1e-9
    measured = {
        "latency_cycles": report["latency_cycles"],
        "interval_cycles": report["interval_cycles"],
        "latency_s": report["latency_cycles"] * period,
        "throughput_ips": 1.0 / (report["interval_cycles"] * period),
        **{res: report["resources"][res] for res in ("dsp", "lut", "ff")},
    }
    estimated: dict = dict.fromkeys(measured)
    if cost["fits"]:
        copies, clock = cost["copies"], clock_mhz * 1e6
        estimated.update({
            "latency_cycles": cost["latency_cycles"],
            "interval_cycles": cost["ii_cycles"],
            "latency_s": cost["latency_cycles"] / clock,
            "throughput_ips": clock / cost["ii_cycles"],
            **{res: cost["resources"][res]["used"] / copies for res in ("dsp", "lut", "ff")},
        })
    return {
        key: {
            "estimated": estimated[key],
            "measured": measured[key],
            "ratio": estimated[key] / measured[key] if estimated[key] is not None and measured[key] else None,
        }
        for key in measured
    }


# ---------------------------------------------------------------- reports kept in hardware/measured/


def measured_reports(hardware: Path, fpga_parts: dict, imported, import_path, fingerprint: str) -> dict[str, dict]:
    """Imported reports of the FPGA targets mapped (``fpga_parts``: name -> part): the one imported
    now (``imported`` = (target name, report) read from ``import_path``) and those stored before
    in ``hardware/measured/``, each marked stale when made for another model or part."""
    found = {}
    for name in fpga_parts:
        if imported is not None and imported[0] == name:
            report, origin, made_for = imported[1], str(import_path), fingerprint
            stored_as = str(stored_report_path(hardware, name, Path(import_path)))
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
            report = read_report(stored_as)
        stale = None
        if made_for != fingerprint:
            stale = "synthesised for another model (weights differ); export and synthesise again, then import"
        elif report["part"].lower() != fpga_parts[name].lower():
            stale = f"synthesised for part {report['part']}, the target file now names {fpga_parts[name]}"
        found[name] = {
            "label": "measured",
            "source": stored_as,
            "imported_from": origin,
            "compared_mode": COMPARED_MODE,
            "stale": stale,
            "model_fingerprint": made_for,
            "report": report,
        }
    return found


def stored_report_path(hardware: Path, name: str, source: Path) -> Path:
    """Where an imported report of target ``name`` is kept: ``hardware/measured/<name>.xml|.rpt``."""
    suffix = ".xml" if source.read_text(errors="replace").lstrip().startswith("<") else ".rpt"
    return hardware / MEASURED / f"{name}{suffix}"


def import_writers(source: Path, record: dict) -> dict:
    """Copy the imported report into hardware/measured/ with a note of the model it was made for."""
    target = Path(record["source"])
    sidecar = {"report": target.name, "imported_from": str(source), "model_fingerprint": record["model_fingerprint"]}
    return {
        target: lambda tmp: shutil.copyfile(source, tmp),
        target.with_suffix(".json"): lambda tmp: tmp.write_text(json_text(sidecar)),
    }
