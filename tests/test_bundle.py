"""On-device bundles, end to end: made from the default build, run in a virtual environment that has
only numpy and onnxruntime (no torch, no edgekd), merged back into the report, gated.

The bare environment: $EDGEKD_BARE_PYTHON (a python whose environment has numpy + onnxruntime
only) when set, else a venv created under tmp (`python -m venv` + `pip install numpy onnxruntime`,
~30 s with a warm pip cache). Skipped when pip cannot install, except under CI (env CI set): fail.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import edgekd

from edgekd.device_profiles import load_profile
from edgekd.device_results import device_run_checks, load_device_results, merge_device_results
from edgekd.errors import ConfigError, InputError

PROFILE = """\
name = "test-box"
description = "the test machine"
arch = "x86_64"
threads = 1
precision = "int8"
model_format = "ort"
input_size = 32
latency_runs = 50
warmup_runs = 5

[budgets]
max_latency_p90_ms = {latency}
max_size_bytes = 10_000_000
max_peak_memory_bytes = 2_000_000_000
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    given = os.environ.get("EDGEKD_BARE_PYTHON")
    if given:
        return given
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    py = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy",
                          "onnxruntime"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        msg = f"cannot pip install numpy onnxruntime into a venv: {pip.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return py


@pytest.fixture(scope="module")
def bundle(default_build, tmp_path_factory, env):
    work, proc = default_build
    assert proc.returncode == 0, proc.stderr
    d = tmp_path_factory.mktemp("bundle")
    (d / "test-box.toml").write_text(PROFILE.format(latency="1e6"))
    res = edgekd("bundle", str(work / "out"), "--device", str(d / "test-box.toml"), "-o", str(d / "b"),
                 "--first-images", "200", cwd=d, env=env)
    assert res.returncode == 0, res.stderr
    return d, res


def test_bundle_contents(bundle):
    d, res = bundle
    b = d / "b"
    assert {p.name for p in b.iterdir()} == {"run.py", "_ptesession.py", "bundle.json", "device.json",
                                             "eval.npz", "models", "README.txt"}
    meta = json.loads((b / "bundle.json").read_text())
    assert [(m["id"], m["primary"]) for m in meta["models"]] == [("student_int8", False),
                                                                  ("student_int8_ort", True)]
    assert meta["eval"]["sets"][0] == "clean" and len(meta["eval"]["sets"]) == 6
    assert meta["eval"]["n_images"] == 200 and meta["profile"]["name"] == "test-box"
    import numpy as np

    ev = np.load(b / "eval.npz")
    assert ev["images/clean"].shape == (200, 32, 32, 3) and ev["images/clean"].dtype == np.uint8
    assert {"labels/gaussian_noise/3", "teacher/contrast/3", "images/occlusion/3"} <= set(ev.files)
    # the build's accuracy on these images, recorded for comparison with the device's
    assert 0.9 <= meta["models"][0]["build_accuracy"]["clean"] <= 1.0
    imported = set()
    for node in ast.walk(ast.parse((b / "run.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime", "_ptesession"}
    # its ExecuTorch sessions beside it: numpy at import, a runtime only when a .pte is run
    top = ast.parse((b / "_ptesession.py").read_text()).body
    mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in top if isinstance(n, ast.ImportFrom)}
    assert mods - set(sys.stdlib_module_names) == {"numpy", "__future__"} - set(sys.stdlib_module_names)
    with zipfile.ZipFile(d / "b.zip") as z:
        assert "b/run.py" in z.namelist() and "b/models/student.int8.ort" in z.namelist()
    assert "python run.py" in (b / "README.txt").read_text() and "(deployed)" in res.stdout


def test_bundle_refuses_other_folders_and_sizes(default_build, tmp_path, env):
    from edgekd.bundle import make_bundle

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an edgekd bundle"):
        make_bundle(default_build[0] / "out", load_profile("rpi4"), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "big.toml").write_text("input_size = 224\n")
    with pytest.raises(ConfigError, match="input_size = 224, but .* was built for 32-pixel images"):
        make_bundle(default_build[0] / "out", load_profile(tmp_path / "big.toml"), tmp_path / "x")
    with pytest.raises(InputError, match="not an edgekd artifact directory"):
        make_bundle(tmp_path, load_profile("rpi4"), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bundle_runs_without_torch_and_merges_into_the_report(bundle, bare_python, default_build, env,
                                                              tmp_path):
    d, _ = bundle
    no_torch = subprocess.run([bare_python, "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    no_edgekd = subprocess.run([bare_python, "-c", "import edgekd"], capture_output=True, text=True,
                               cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert no_edgekd.returncode != 0
    # on the "device": a copy of the bundle elsewhere, run with the bare interpreter
    dev = tmp_path / "device" / "b"
    shutil.copytree(d / "b", dev)
    run = subprocess.run([bare_python, "run.py", "--out", "results.json"], cwd=dev, capture_output=True,
                         text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    assert "student_int8_ort *" in run.stdout and "acc clean" in run.stdout
    res = load_device_results(dev / "results.json")
    assert res["profile"]["name"] == "test-box" and res["threads"] == 1
    assert res["device"]["python"] and res["device"]["onnxruntime"] and res["device"]["cpu_count"] >= 1
    for m in res["models"].values():
        assert m["sha256_ok"] and m["runs"] == 50 and m["warmup"] == 5
        assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p90"] <= m["latency_ms"]["p99"]
        assert m["memory"]["peak_rss_bytes"] > m["memory"]["baseline_rss_bytes"] > 0
        # the device reproduces the build's accuracy on the same images (same onnxruntime here)
        assert m["accuracy"] == pytest.approx(m["build_accuracy"], abs=0.02)
        assert m["accuracy"]["clean"] >= 0.9 and m["agreement_with_teacher"]["clean"] >= 0.9

    out = tmp_path / "out"
    shutil.copytree(default_build[0] / "out", out)
    merged = edgekd("report", "out", "--device-results", str(dev / "results.json"), cwd=tmp_path, env=env)
    assert merged.returncode == 0, merged.stderr
    report = json.loads((out / "report.json").read_text())
    run_rec = report["device_runs"][-1]
    assert run_rec["profile"] == "test-box" and run_rec["primary_model"] == "student_int8_ort"
    assert "## Device runs" in (out / "report.md").read_text()
    assert len(merge_device_results(out, dev / "results.json")["device_runs"]) == 1  # idempotent
    manifest = json.loads((out / "manifest.json").read_text())
    from edgekd.pipeline import sha256_file

    assert manifest["files"]["report.json"]["sha256"] == sha256_file(out / "report.json")

    # the gate: the run's recorded (generous) budgets pass; a tight copy of the profile fails
    p90 = run_rec["models"]["student_int8_ort"]["latency_ms"]["p90"]
    (tmp_path / "tight.toml").write_text(PROFILE.format(latency=p90 / 2))
    (tmp_path / "generous.toml").write_text(PROFILE.format(latency=max(1.0, 100 * p90)))
    ok = edgekd("gate", "out", cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "device.test-box.student_int8_ort.latency_p90_ms" in ok.stdout
    tight = edgekd("gate", "out", "--device", "tight.toml", cwd=tmp_path, env=env)
    assert tight.returncode == 1, tight.stdout + tight.stderr
    assert "FAIL device.test-box.student_int8_ort.latency_p90_ms" in tight.stdout
    checks = device_run_checks(report, "report.json", [load_profile(tmp_path / "generous.toml")])
    assert [c.passed for c in checks] == [True, True, True]
    missing = edgekd("gate", "out", "--device", "rpi4", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no device run of profile 'rpi4'" in missing.stderr


def test_merge_rejects_bad_results(default_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(default_build[0] / "out", out)
    bad = tmp_path / "r.json"
    for text, needle in [("{", "not valid JSON"), ('{"format": "x"}', "not an edgekd device results file"),
                         ('{"format": "edgekd-device-results", "version": 2}', "results version 2")]:
        bad.write_text(text)
        with pytest.raises(InputError, match=needle):
            merge_device_results(out, bad)
    with pytest.raises(InputError, match="do not exist"):
        merge_device_results(out, tmp_path / "none.json")
    assert "device_runs" not in json.loads((out / "report.json").read_text())


def test_merge_rejects_results_of_another_build(default_build, tmp_path):
    res = {"format": "edgekd-device-results", "version": 1, "created": "2026-01-01T00:00:00Z",
           "profile": {"name": "rpi4"}, "bundle": {"test_sha256": "0" * 64}, "device": {}, "threads": 1,
           "models": {"student_int8": {"latency_ms": dict.fromkeys(
               ("min", "mean", "std", "p50", "p90", "p95", "p99", "max"), 1.0), "size_bytes": 1,
               "memory": {"peak_rss_bytes": 1}, "accuracy": {"clean": 0.5},
               "agreement_with_teacher": {"clean": 0.5}}}}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(res))
    with pytest.raises(InputError, match="comes from a bundle of another build"):
        merge_device_results(default_build[0] / "out", p)
    res["models"]["student_int8"]["accuracy"]["clean"] = 2
    p.write_text(json.dumps(res))
    with pytest.raises(InputError, match=r"models\.student_int8\.accuracy\.clean must be a fraction in \[0, 1\], got 2"):
        load_device_results(p)
    assert Path(default_build[0] / "out" / "report.json").is_file()
