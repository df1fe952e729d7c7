"""Reading Vivado/Vitis HLS csynth reports (XML and text) and setting them beside the estimate."""

from pathlib import Path

import pytest

from sparsecli.errors import InputFileError
from sparsecli.targets.synthesis import compare, match_target, read_report

ASSETS = Path(__file__).parent / "assets"
XML = ASSETS / "sparsecli_model_csynth.xml"
RPT = ASSETS / "sparsecli_model_csynth.rpt"


def test_xml_and_rpt_give_the_same_figures():
    xml, rpt = read_report(XML), read_report(RPT)
    assert (xml["format"], rpt["format"]) == ("csynth.xml", "csynth.rpt")
    for report in (xml, rpt):
        assert report["part"] == "xcu250-figd2104-2L-e" and report["top"] == "sparsecli_model"
        assert report["tool_version"] == "2023.2"
        assert (report["clock_period_ns"], report["estimated_clock_period_ns"]) == (3.33, 2.431)
        assert (report["latency_cycles"], report["interval_cycles"]) == (9, 1)
        assert report["resources"] == {"dsp": 812, "lut": 48310, "ff": 21544, "bram_18k": 0, "uram": 0}
        assert report["available"]["dsp"] == 12288


def test_vivado_hls_rpt_with_dsp48e_and_short_latency_table(tmp_path):
    text = RPT.read_text().replace("Vitis HLS Report", "Vivado HLS Report").replace("|  DSP |", "|DSP48E|")
    text = text.replace(
        "|        9|        9|  29.970 ns|  29.970 ns|    1|    1|      yes|",
        "|       11|       12|    2|    2|   none  |",
    )
    path = tmp_path / "myproject_csynth.rpt"
    path.write_text(text)
    report = read_report(path)
    assert (report["latency_cycles_best"], report["latency_cycles"], report["interval_cycles"]) == (11, 12, 2)
    assert report["resources"]["dsp"] == 812


@pytest.mark.parametrize(
    "content, expected",
    [
        ("hello\n", "not a Vivado/Vitis HLS synthesis report"),
        ("<profile><broken>", "not valid XML"),
        (XML.read_text().replace("<Worst-caseLatency>9</Worst-caseLatency>", ""),
         "PerformanceEstimates/SummaryOfOverallLatency/Worst-caseLatency is missing"),
        (XML.read_text().replace("<Worst-caseLatency>9<", "<Worst-caseLatency>undef<"), "'undef', not a number"),
        (RPT.read_text().replace("|Total  ", "|Totals "), "no Total/Available utilization row"),
    ],
)
def test_bad_reports_are_one_line_errors_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "report.xml"
    path.write_text(content)
    with pytest.raises(InputFileError) as info:
        read_report(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message
    with pytest.raises(InputFileError, match="synthesis report not found"):
        read_report(tmp_path / "missing.xml")


def test_report_is_matched_to_a_target_by_part():
    report = read_report(XML)
    parts = {"fpga-alveo-u250": "xcu250-figd2104-2L-e", "fpga-zu3eg": "xczu3eg-sbva484-1-e"}
    assert match_target(report, parts, XML) == "fpga-alveo-u250"
    with pytest.raises(InputFileError, match="part xcu250-figd2104-2L-e matches no FPGA target.*fpga-zu3eg"):
        match_target(report, {"fpga-zu3eg": "xczu3eg-sbva484-1-e"}, XML)


def test_compare_with_one_copy_of_the_sparse_dense_estimate():
    # an estimate of 2 copies at 300 MHz: per copy 1,000 DSP, 50,000 LUT, 40,000 FF; II 2, latency 18 cycles
    totals = {"fits": True, "copies": 2, "ii_cycles": 2, "latency_cycles": 18,
              "resources": {"dsp": {"used": 2000}, "lut": {"used": 100_000}, "ff": {"used": 80_000}}}
    prediction = {"modes": {"sparse-dense": {"1": {"totals": totals}}}}
    figures = compare(read_report(XML), prediction, clock_mhz=300)
    assert figures["latency_cycles"] == {"estimated": 18, "measured": 9, "ratio": 2.0}
    assert figures["interval_cycles"]["ratio"] == 2.0
    assert figures["latency_s"]["estimated"] == pytest.approx(60e-9)
    assert figures["latency_s"]["measured"] == pytest.approx(9 * 3.33e-9)
    assert figures["throughput_ips"]["measured"] == pytest.approx(1 / 3.33e-9)
    assert figures["throughput_ips"]["estimated"] == pytest.approx(150e6)
    assert figures["dsp"] == {"estimated": 1000, "measured": 812, "ratio": pytest.approx(1000 / 812)}
    totals["fits"] = False
    assert compare(read_report(XML), prediction, clock_mhz=300)["dsp"]["ratio"] is None
