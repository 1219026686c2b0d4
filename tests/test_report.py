"""edgekd.report: merging the stages' records, report.json's frame, the summary table and report.md."""

from __future__ import annotations

import copy
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd import __version__
from edgekd.config import load_config
from edgekd.report import (
    SCHEMA_VERSION,
    build_report,
    format_table,
    markdown_table,
    merge_records,
    render_markdown,
    report_json,
    summary_rows,
)

# ---- merge_records ------------------------------------------------------------------------------


def test_merge_records_nested_and_in_order():
    described = {"teacher": {"kind": "teacher", "format": "torch"},
                 "student_int8": {"kind": "student", "format": "onnx"}}
    clean = {"student_int8": {"accuracy": {"clean": 0.9}}, "teacher": {"accuracy": {"clean": 0.95}}}
    sweep = {"teacher": {"accuracy": {"mca": 0.8, "corruptions": {"fog": [0.7]}}},
             "student_int8": {"accuracy": {"mca": 0.7}}, "student_fp32": {"accuracy": {"clean": 0.91}}}
    merged = merge_records([described, clean, sweep])
    # model order: first seen first; field order: the parts' order
    assert list(merged) == ["teacher", "student_int8", "student_fp32"]
    assert merged["teacher"] == {"kind": "teacher", "format": "torch",
                                 "accuracy": {"clean": 0.95, "mca": 0.8, "corruptions": {"fog": [0.7]}}}
    assert list(merged["teacher"]) == ["kind", "format", "accuracy"]
    assert list(merged["teacher"]["accuracy"]) == ["clean", "mca", "corruptions"]
    assert merged["student_int8"] == {"kind": "student", "format": "onnx",
                                      "accuracy": {"clean": 0.9, "mca": 0.7}}
    assert merged["student_fp32"] == {"accuracy": {"clean": 0.91}}


def test_merge_records_field_measured_twice_raises():
    with pytest.raises(ValueError, match=r"student_int8\.accuracy\.clean measured twice"):
        merge_records([{"student_int8": {"accuracy": {"clean": 0.9}}},
                       {"student_int8": {"accuracy": {"clean": 0.8}}}])
    with pytest.raises(ValueError, match=r"teacher\.size_bytes measured twice"):
        merge_records([{"teacher": {"size_bytes": 1}}, {"teacher": {"size_bytes": 1}}])  # even if equal
    # a table where the earlier part has a plain value is a clash too
    with pytest.raises(ValueError, match=r"teacher\.latency_ms measured twice"):
        merge_records([{"teacher": {"latency_ms": None}}, {"teacher": {"latency_ms": {"p50": 1.0}}}])


def test_merge_records_does_not_mutate_or_alias_inputs():
    a = {"m": {"accuracy": {"clean": 0.5}, "samples": [1, 2]}}
    b = {"m": {"accuracy": {"mca": 0.4}}, "n": {"x": {"y": [3]}}}
    before = copy.deepcopy([a, b])
    merged = merge_records([a, b])
    assert [a, b] == before
    merged["m"]["accuracy"]["clean"] = 0.0
    merged["m"]["samples"].append(99)
    merged["n"]["x"]["y"].append(4)
    assert [a, b] == before


def test_merge_records_empty():
    assert merge_records([]) == {}
    assert merge_records([{}, {"m": {}}, {}]) == {"m": {}}


# ---- build_report -------------------------------------------------------------------------------


class _Split:
    def __init__(self, n: int) -> None:
        self.x = np.zeros((n, 8, 6, 3), np.uint8)
        self.y = np.arange(n) % 3

    def __len__(self) -> int:
        return len(self.y)


def _fake_dataset(n: int = 7):
    """What build_report reads of an edgekd.data.Dataset."""
    return SimpleNamespace(name="toy", test=_Split(n), image_shape=(8, 6, 3), classes=["a", "b", "c"], shifts={},
                           fingerprint=lambda: "f" * 64)


def test_build_report_merges_every_record_table():
    described = {"teacher": {"kind": "teacher", "params": 100},
                 "student_int8": {"kind": "student", "params": 10}}
    clean = {"teacher": {"accuracy": {"clean": 1.0}}, "student_int8": {"accuracy": {"clean": 0.5}}}
    speed = {"student_int8": {"latency_ms": {"p50": 1.5}}}
    rob = {"corruption_table": "cifar10-c", "seed": 3}
    before = time.gmtime()
    rep = build_report(load_config(None), _fake_dataset(), [described, clean, {}, speed], rob, "cpu",
                       training={"student": {"epochs": 1}})
    assert list(rep) == ["schema_version", "edgekd_version", "created", "dataset", "teacher_device",
                         "corruption_table", "robustness", "training", "models"]
    assert rep["schema_version"] == SCHEMA_VERSION == 1 and rep["edgekd_version"] == __version__
    created = time.strptime(rep["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert time.mktime(created) >= time.mktime(before) - 1
    assert rep["dataset"] == {"name": "toy", "n_test": 7, "image_shape": [8, 6, 3], "classes": ["a", "b", "c"],
                              "test_sha256": "f" * 64}
    assert rep["teacher_device"] == "cpu" and rep["corruption_table"] == "cifar10-c"
    assert rep["robustness"] == rob and rep["training"] == {"student": {"epochs": 1}}
    assert rep["models"] == {"teacher": {"kind": "teacher", "params": 100, "accuracy": {"clean": 1.0}},
                             "student_int8": {"kind": "student", "params": 10, "accuracy": {"clean": 0.5},
                                              "latency_ms": {"p50": 1.5}}}
    assert json.loads(report_json(rep)) == rep and report_json(rep).endswith("}\n")


def test_build_report_without_sweep():
    rep = build_report(load_config(None), _fake_dataset(2), [{"teacher": {"kind": "teacher"}}], {}, "cuda")
    assert rep["corruption_table"] is None and rep["robustness"] == {} and rep["training"] is None
    assert rep["teacher_device"] == "cuda" and rep["models"] == {"teacher": {"kind": "teacher"}}


def test_build_report_refuses_a_field_measured_twice():
    with pytest.raises(ValueError, match="measured twice"):
        build_report(load_config(None), _fake_dataset(), [{"t": {"accuracy": {"clean": 1.0}}},
                                                          {"t": {"accuracy": {"clean": 1.0}}}], {}, "cpu")


# ---- summary table and report.md ----------------------------------------------------------------


def _model(fmt, prec, params, size, clean, agree, mca=None, p50=None):
    m = {"kind": "student", "format": fmt, "precision": prec, "params": params, "size_bytes": size,
         "accuracy": {"clean": clean}, "agreement_with_teacher": {"clean": agree}}
    if mca is not None:
        m["accuracy"]["mca"] = mca
    if p50 is not None:
        m["latency_ms"] = {"batch": 1, "threads": 2, "p50": p50, "p90": 2 * p50}
    return m


def _report(with_mca: bool = True) -> dict:
    return {"dataset": {"name": "toy", "n_test": 20, "image_shape": [8, 8, 3]}, "teacher_device": "cpu",
            "robustness": {},
            "models": {"teacher": _model("torch", "fp32", 1_234_567, 5 << 20, 0.95, 1.0,
                                         0.8 if with_mca else None, 3.0),
                       "student_fp32": _model("onnx", "fp32", 12_345, 4096, 0.9, 0.925, None, 0.5),
                       "student_int8": _model("onnx", "int8", 12_345, 1536, 0.875, 0.9,
                                              0.7 if with_mca else None)}}


def test_summary_rows_one_row_per_model():
    rows = summary_rows(_report())
    assert rows[0] == ["model", "format", "params", "size", "clean acc", "mCA", "agree(T)", "p50 ms", "p90 ms"]
    assert [r[0] for r in rows[1:]] == ["teacher", "student_fp32", "student_int8"]
    assert all(len(r) == len(rows[0]) for r in rows)
    teacher, fp32, int8 = rows[1:]
    assert teacher == ["teacher", "torch/fp32", "1,234,567", "5.00 MiB", "95.0%", "80.0%", "100.0%", "3.000",
                       "6.000"]
    assert fp32[1:4] == ["onnx/fp32", "12,345", "4.0 KiB"] and fp32[4:7] == ["90.0%", "—", "92.5%"]
    assert int8[5] == "70.0%" and int8[7:] == ["—", "—"]  # no latency measured


def test_summary_rows_mca_dash_when_absent():
    rows = summary_rows(_report(with_mca=False))
    mca = rows[0].index("mCA")
    assert [r[mca] for r in rows[1:]] == ["—", "—", "—"]


def test_format_table_aligns_columns():
    rows = summary_rows(_report())
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 1  # header, rule, one line per model
    assert set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # every line the same width
    assert [line.split()[0] for line in lines[2:]] == ["teacher", "student_fp32", "student_int8"]
    assert lines[0].startswith("model ") and lines[0].rstrip().endswith("p90 ms")
    assert "—" in lines[3]


def test_markdown_table_shape():
    rows = [["a", "b"], ["1", "2"], ["3", "4"]]
    assert markdown_table(rows) == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"


def test_render_markdown_without_robustness():
    md = render_markdown(_report(with_mca=False))
    assert md.startswith("# edgekd report\n")
    assert "Dataset **toy**, 20 test images of shape [8, 8, 3]; teacher ran on **cpu**" in md
    assert "Latency: batch 1, 2 thread(s)" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3  # header + one row per model
    assert table[3].startswith("| student_int8 | onnx/int8 | 12,345 | 1.5 KiB | 87.5% | — | 90.0% | — | — |")
    assert "## Robustness" not in md and "## Gate" not in md and "## Training" not in md


def test_render_markdown_with_gate_and_corruptions():
    rep = _report()
    for m, acc in zip(rep["models"].values(), (0.8, 0.75, 0.7)):
        m["accuracy"]["corruptions"] = {"fog": [acc, acc - 0.1], "snow": [acc, None]}
        m["robustness"] = {"mce": 1.0, "relative_mce": None, "retention": 1.0, "mean_flip_rate": 0.1}
    md = render_markdown(rep, "GATE: PASS\n")
    assert "## Robustness" in md and "## Gate\n\n```\nGATE: PASS\n```" in md
    assert "| fog | 75.0 | 70.0 | 65.0 |" in md  # mean over severities, per model
    assert "| snow | 80.0 | 75.0 | 70.0 |" in md  # None cells left out of the mean
    assert "| student_int8 | 87.5 | 70.0 | 100.0 | — | 100.0 | 10.0 |" in md
