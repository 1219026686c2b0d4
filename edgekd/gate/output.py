"""The gate's verdict for people and CI: the table, a markdown summary, gate.json, JUnit XML.

    print(format_table(result)); write_gate_json(result, "edgekd-out/gate.json")
    write_junit(result, "gate.xml")

docs/gate.md describes gate.json's fields and the JUnit layout.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..files import write_atomic
from .result import GateResult


def format_check(unit: str, v: float) -> str:
    """A check's value or threshold in its unit: ``+1.25 pp``, ``93.10%``, ``0.412 ms``, ``60,000 B``."""
    if unit == "pp":
        return f"{100 * v:+.2f} pp"
    if unit == "rate":
        return f"{100 * v:.2f}%"
    if unit == "ms":
        return f"{v:.3f} ms"
    return f"{v:,.0f} B"


def _rows(result: GateResult) -> list[list[str]]:
    level = f"{100 * result.confidence:g}% interval"
    rows = [["check", "value", level, "threshold", "result"]]
    for c in result.checks:
        iv = f"[{format_check(c.unit, c.interval[0])}, {format_check(c.unit, c.interval[1])}]" if c.interval else "-"
        rows.append([c.id, format_check(c.unit, c.value), iv, f"{c.comparison} {format_check(c.unit, c.threshold)}",
                     "PASS" if c.passed else "FAIL"])
    return rows


def verdict_line(result: GateResult) -> str:
    if result.passed:
        return f"gate: PASS ({len(result.checks)} checks, mode {result.mode})"
    return (f"gate: FAIL ({len(result.failed)} of {len(result.checks)} checks failed, mode "
            f"{result.mode}: {', '.join(c.id for c in result.failed)})")


def format_table(result: GateResult) -> str:
    """Every check (value, interval, threshold, PASS/FAIL), the failing checks' details, the verdict."""
    rows = _rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"gate on {result.report} (mode {result.mode}"
             + (f", baseline {result.baseline}" if result.baseline else "") + ")"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for c in result.failed:
        lines.append(f"FAIL {c.id}: {c.name} {format_check(c.unit, c.value)} vs {c.comparison} "
                     f"{format_check(c.unit, c.threshold)}; {c.detail}")
    lines.append(verdict_line(result))
    return "\n".join(lines)


def markdown_summary(result: GateResult) -> str:
    """A GitHub-flavoured markdown block (for ``$GITHUB_STEP_SUMMARY``); text only."""
    rows = _rows(result)
    out = [f"### edgekd gate: {'PASS' if result.passed else 'FAIL'}", "",
           f"`{result.report}`, mode `{result.mode}`"
           + (f", baseline `{result.baseline}`" if result.baseline else ""), "",
           "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r in rows[1:]:
        r = r[:-1] + [("✅ PASS" if r[-1] == "PASS" else "❌ **FAIL**")]
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |")
    out += ["", verdict_line(result), ""]
    return "\n".join(out)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_gate_json(result: GateResult, path: str | Path) -> None:
    """gate.json: verdict, exit_code, failed ids, every check, the policy used."""
    write_atomic(path, json.dumps(_finite(result.to_dict()), indent=2) + "\n")


def write_junit(result: GateResult, path: str | Path) -> None:
    """JUnit XML: ``<testsuite name="edgekd.gate">`` with one ``<testcase>`` per check; a failing
    check has a ``<failure>`` whose message carries its value, interval and threshold."""
    n_fail = len(result.failed)
    root = ET.Element("testsuites", name="edgekd", tests=str(len(result.checks)), failures=str(n_fail),
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name="edgekd.gate", tests=str(len(result.checks)),
                          failures=str(n_fail), errors="0", skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    for k, v in (("report", result.report), ("mode", result.mode), ("confidence", result.confidence),
                 ("baseline", result.baseline or "")):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.gate.{c.model}", name=c.id, time="0")
        iv = f" ({100 * result.confidence:g}% interval {format_check(c.unit, c.interval[0])} to " \
             f"{format_check(c.unit, c.interval[1])})" if c.interval else ""
        summary = f"{c.name}: {format_check(c.unit, c.value)}{iv}, threshold {c.comparison} {format_check(c.unit, c.threshold)}"
        if not c.passed:
            fail = ET.SubElement(case, "failure", message=summary, type="GateCheckFailed")
            fail.text = c.detail
        ET.SubElement(case, "system-out").text = f"{summary}; {c.detail}"
    ET.indent(root)
    write_atomic(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
