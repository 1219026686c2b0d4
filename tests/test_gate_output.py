"""edgekd.gate.output: the table, the markdown summary, gate.json and JUnit XML of a verdict."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from edgekd import gate as g


def result() -> g.GateResult:
    checks = [g.Check("s.clean_drop", "clean accuracy drop vs teacher", "s", "accuracy.clean", 0.0125,
                      (0.005, 0.02), 0.03, "<=", True, "fine", p_value=0.5),
              g.Check("s.size_bytes", "file size", "s", "size_bytes", 60_000, None, 50_000, "<=", False,
                      "too big", unit="bytes"),
              g.Check("s.latency_p90_ms", "latency p90 at batch 1", "s", "latency_ms.p90", float("nan"), None,
                      2.0, "<=", True, "odd", unit="ms")]
    return g.GateResult(checks, "out/report.json", "confident", 0.95, {"mode": "confident"})


def test_format_check_units():
    assert [g.format_check(u, v) for u, v in (("pp", 0.0125), ("rate", 0.931), ("ms", 0.4123),
                                               ("bytes", 60000))] == ["+1.25 pp", "93.10%", "0.412 ms", "60,000 B"]


def test_table_and_markdown_name_the_failing_check():
    r = result()
    table = g.format_table(r)
    assert table.splitlines()[0] == "gate on out/report.json (mode confident)"
    assert "FAIL s.size_bytes: file size 60,000 B vs <= 50,000 B; too big" in table
    assert table.splitlines()[-1] == g.verdict_line(r) == (
        "gate: FAIL (1 of 3 checks failed, mode confident: s.size_bytes)")
    md = g.markdown_summary(r)
    assert md.startswith("### edgekd gate: FAIL") and "| s.size_bytes |" in md and "❌ **FAIL**" in md


def test_gate_json_and_junit(tmp_path):
    r = result()
    g.write_gate_json(r, tmp_path / "gate.json")
    d = json.loads((tmp_path / "gate.json").read_text())
    assert d["verdict"] == "fail" and d["failed"] == ["s.size_bytes"] and d["n_checks"] == 3
    assert d["checks"][2]["value"] is None  # NaN is written as null: strict JSON
    assert d["checks"][0]["interval"] == [0.005, 0.02]
    g.write_junit(r, tmp_path / "gate.xml")
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("edgekd.gate", "3", "1")
    (fail,) = suite.findall("testcase/failure")
    assert fail.get("message") == "file size: 60,000 B, threshold <= 50,000 B" and fail.text == "too big"
