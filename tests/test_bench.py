"""The latency / memory harness (edgekd/_ortbench.py, the device runner; edgekd bench) and the
ORT-format artifact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import edgekd

from edgekd.bench import bench, format_bench, resolve_models
from edgekd.errors import InputError, ParityError
from edgekd.ort_mobile import check_ort_parity, convert_to_ort

STATS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


def test_build_writes_ort_format_and_memory(default_build):
    work, proc = default_build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = work / "out"
    names = {p.name for p in out.iterdir()}
    assert {"student.int8.ort", "student.int8.required_operators.config",
            "student.int8.required_operators_and_types.config"} <= names
    config = (out / "student.int8.required_operators.config").read_text()
    assert "QLinearConv" in config and str(work) not in config  # no build-machine paths
    report = json.loads((out / "report.json").read_text())
    ort = report["models"]["student_int8"]["ort_format"]
    assert ort["file"] == "student.int8.ort" and ort["parity"]["argmax_agreement"] == 1.0
    assert ort["parity"]["max_abs_logit_diff"] <= ort["parity"]["atol"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["ort_format"]["target_platform"] == "arm"
    assert "student.int8.ort" in manifest["files"]
    for mid in ("student_fp32", "student_int8"):
        mem = report["models"][mid]["memory"]
        assert mem["peak_rss_bytes"] >= mem["baseline_rss_bytes"] > 10e6  # python + numpy + ort
        assert 0 < mem["model_rss_bytes"] < 300e6


def test_ort_parity_check_and_failure(default_build, tmp_path, digits):
    src = default_build[0] / "out"
    shutil.copy(src / "student.int8.onnx", tmp_path / "student.int8.onnx")
    rec = convert_to_ort(tmp_path / "student.int8.onnx", digits.calib.x[:64])
    assert rec["parity"]["max_abs_logit_diff"] <= 0.05 and rec["parity"]["argmax_agreement"] >= 0.99
    assert (tmp_path / "student.int8.ort").is_file() and rec["operators"]
    # an .ort of another model does not reproduce the .onnx: ParityError names both files. The
    # other model: the fp32 student with its classifier's weights negated
    import onnx
    from onnx import numpy_helper

    other = onnx.load(src / "student.fp32.onnx")
    head = [t for t in other.graph.initializer if len(t.dims) == 2][-1]
    head.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(head), head.name))
    onnx.save(other, tmp_path / "student.fp32.onnx")
    with pytest.raises(ParityError, match="student.int8.ort does not reproduce student.fp32.onnx"):
        check_ort_parity(tmp_path / "student.fp32.onnx", tmp_path / "student.int8.ort", digits.calib.x[:64],
                         atol=1e-6, min_agreement=1.0)


def test_bench_script_records_every_statistic(default_build):
    out = default_build[0] / "out"
    models = resolve_models(out)
    assert [m.name for m in models] == ["student.fp32.onnx", "student.int8.onnx", "student.int8.ort"]
    recs = bench(models[1:], threads=[1, 2], runs=30, warmup=3)
    assert [(r["model"], r["threads"]) for r in recs] == [("student.int8.onnx", 1), ("student.int8.onnx", 2),
                                                          ("student.int8.ort", 1), ("student.int8.ort", 2)]
    for r in recs:
        lat = r["latency_ms"]
        assert r["runs"] == 30 and r["warmup"] == 3 and r["batch"] == 1
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
        # latency_ms is the device runner's latency_record, as in a build's report.json
        assert (lat["batch"], lat["threads"], lat["runs"], lat["warmup"]) == (1, r["threads"], 30, 3)
        assert lat["wall_s"] == r["wall_s"]
        assert r["session_create_ms"] > 0 and r["first_inference_ms"] > 0
        assert r["throughput"]["images_per_s"] == pytest.approx(r["throughput"]["inferences_per_s"])
        mem = r["memory"]
        assert mem["peak_rss_bytes"] > mem["baseline_rss_bytes"] > 0
        assert mem["model_rss_bytes"] == mem["peak_rss_bytes"] - mem["baseline_rss_bytes"]
        assert r["os_threads"] >= 1 and r["affinity"] and r["input_shapes"] == {"image": [1, 32, 32, 3]}
        m = r["machine"]
        assert m["cpu_count"] >= 1 and "CPUExecutionProvider" in m["providers"] and m["onnxruntime"]
    # a time budget instead of a run count; batch 4
    r = bench(models[1:2], threads=[1], seconds=0.2, batch=4)[0]
    assert r["seconds"] == 0.2 and r["runs"] >= 10 and r["wall_s"] >= 0.2 and r["batch"] == 4
    assert r["throughput"]["images_per_s"] == pytest.approx(4 * r["throughput"]["inferences_per_s"])
    table = format_bench(recs)
    for col in ("session ms", "first ms", *STATS, "inf/s", "img/s", "peak MB"):
        assert col in table


def test_bench_command(default_build, env, tmp_path):
    work = default_build[0]
    proc = edgekd("bench", "out", "--device", "rpi4", "--runs", "20", "--threads", "1",
                  "--json", str(tmp_path / "b.json"), cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "student.int8.ort" in proc.stdout and "budgets of rpi4" in proc.stdout
    assert "within budget" in proc.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["profile"]["name"] == "rpi4" and len(data["measurements"]) == 3
    assert all(m["threads"] == 1 and m["warmup"] == 20 for m in data["measurements"])  # profile's warm-up
    bad = edgekd("bench", "out/student.pt", cwd=work, env=env)
    assert bad.returncode == 2 and "not a model file (.onnx, .ort, .pte)" in bad.stderr
    with pytest.raises(InputError, match="no models in this directory"):
        resolve_models(tmp_path)


def test_random_input_matches_model(default_build):
    from edgekd import _ortbench as ob

    session, warning = ob.make_session(str(default_build[0] / "out" / "student.int8.onnx"), 1,
                                       "NoSuchExecutionProvider")
    assert warning and "used CPUExecutionProvider" in warning
    feeds = ob.random_input(session, 3)
    assert feeds["image"].dtype == np.uint8 and feeds["image"].shape == (3, 32, 32, 3)


def test_memory_budgets_in_build_config_and_gate(default_build):
    from edgekd.config import from_dict
    from edgekd.errors import ConfigError
    from edgekd.gate import evaluate_gate, load_policy
    from edgekd.pipeline import build_policy

    ok = from_dict({"gate": {"budgets": {"student_int8": {"max_peak_memory_bytes": 5e8}}}})
    assert build_policy(ok).budgets["student_int8"].max_peak_memory_bytes == 5e8
    bad = from_dict({"gate": {"budgets": {"teacher": {"max_peak_memory_bytes": 5e8}}}})
    with pytest.raises(ConfigError, match="measures peak memory of the model files only"):
        build_policy(bad)
    out = default_build[0] / "out"
    for limit, passed in ((1e9, True), (1e6, False)):
        policy = load_policy({"budgets": {"student_int8": {"max_peak_memory_bytes": limit}}})
        check = [c for c in evaluate_gate(out, policy).checks if c.id == "student_int8.peak_memory_bytes"]
        assert len(check) == 1 and check[0].passed is passed
