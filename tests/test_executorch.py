"""ExecuTorch (XNNPACK) artifacts: export and parity at fp32 and INT8, the delegate-coverage
failure, the runner's thread pool, a build + bundle + device run + gate with both runtimes, and
the skip path without the extra. Without executorch these tests skip locally but fail in CI ($CI
set): CI installs the [executorch] extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import edgekd


def _need(module: str):
    try:
        return pytest.importorskip(module)
    except pytest.skip.Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e.msg}; CI must not skip the ExecuTorch tests (pip install -e '.[executorch]')",
                        pytrace=False)
        raise


def _et():
    _need("executorch")
    from edgekd import executorch_export

    if not executorch_export.available():
        _need("executorch.backends.xnnpack")  # the import that failed, named
    return executorch_export


# a cheap build: few epochs, two corruptions, no attacks, short latency runs
CHEAP = ["--set", "teacher.epochs=2", "--set", "distill.epochs=2", "--set", "distill.augment=[]",
         "--set", 'robustness.perturbations=["gaussian_noise", "contrast"]', "--set", "robustness.adversarial=false",
         "--set", "measure.latency_runs=50", "--set", "measure.warmup_runs=2", "--set", "compute.device=cpu"]


@pytest.fixture(scope="module")
def ptes(trained_pair, digits, tmp_path_factory):
    """Both programs of the fixture student, with their records."""
    ee = _et()
    _, student = trained_pair
    d = tmp_path_factory.mktemp("pte")
    from edgekd.config import load_config

    ec = load_config(None).export
    files = {"fp32": d / "student.fp32.pte", "int8": d / "student.int8.pte"}
    return ee.executorch_stage(student, digits.calib.x, files, ec), files


def test_export_and_parity_at_both_precisions(ptes, trained_pair, digits):
    recs, files = ptes
    _, student = trained_pair
    from edgekd.runtimes import RUNTIMES

    for precision, path in files.items():
        rec = recs[precision]
        assert path.is_file() and rec["size_bytes"] == path.stat().st_size
        # every compute operator delegated; only the input cast / permute and the flatten outside
        d = rec["delegation"]
        assert d["compute_outside"] == [] and 0.5 < d["fraction"] <= 1.0 and d["delegated_nodes"] > 10
        assert rec["parity"]["samples"] == 128
    # fp32 reproduces the torch student's logits; INT8 is 4x smaller and agrees on the classes
    assert recs["fp32"]["parity"]["max_abs_logit_diff"] <= 1e-3
    assert recs["fp32"]["parity"]["argmax_agreement"] == 1.0
    assert recs["int8"]["size_bytes"] < 0.5 * recs["fp32"]["size_bytes"]
    x = digits.test.x
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy().argmax(1)
    fp32 = RUNTIMES.get("executorch")(files["fp32"]).predict(x)  # 359 images: chunks of max_batch
    int8 = RUNTIMES.get("executorch")(files["int8"]).predict(x)
    assert fp32.shape == (len(x), 10) and fp32.dtype == np.float32
    assert np.array_equal(fp32.argmax(1), ref)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.97


def test_thread_pool_resize_keeps_every_loaded_program_working(ptes, digits):
    """ExecuTorch's pool is process-wide and XNNPACK's delegates keep the one they were loaded
    with: a resize must reload every program (a program left on the old pool crashed)."""
    _, files = ptes
    from edgekd.harness import measure_latency
    from edgekd.runtimes import PteRunner

    a, b = PteRunner(files["fp32"]), PteRunner(files["int8"])
    before = a.predict(digits.test.x[:5])
    for threads in (1, 2, 1):
        rec = measure_latency(b, digits.test.x[:1], runs=5, warmup=1, threads=threads)
        assert rec["threads"] == threads and rec["runs"] == 5 and rec["p50"] > 0
        assert np.array_equal(a.predict(digits.test.x[:5]), before)


def test_an_operator_outside_the_delegate_is_one_sentence(digits, tmp_path):
    ee = _et()
    from edgekd.models import Preprocessed, build_model

    class CumsumHead(torch.nn.Module):  # cumsum: no XNNPACK kernel
        def __init__(self):
            super().__init__()
            self.body = build_model("digits_student", 10)

        def forward(self, x):
            return self.body(x).cumsum(1)

    model = Preprocessed(CumsumHead(), digits.mean, digits.std).eval()
    path = tmp_path / "student.fp32.pte"
    with pytest.raises(ee.DelegationError) as e:
        ee.export_pte(model, digits.calib.x[:64], path, "fp32", max_batch=8)
    msg = str(e.value)
    assert "\n" not in msg and msg.count(". ") == 0 and "cumsum" in msg and "XNNPACK" in msg
    assert not path.exists()  # nothing half-written
    assert e.value.exit_code == 3


@pytest.fixture(scope="module")
def et_build(tmp_path_factory, env):
    """`edgekd build --device android-arm64` (both runtimes) and its bundle."""
    _et()
    work = tmp_path_factory.mktemp("etbuild")
    proc = edgekd("build", "-o", "out", "--quiet", "--device", "android-arm64", *CHEAP, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return work


def test_device_build_measures_and_gates_both_runtimes(et_build):
    out = et_build / "out"
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    for mid in ("student_fp32", "student_int8", "student_fp32_pte", "student_int8_pte"):
        m = models[mid]
        assert m["accuracy"]["clean"] > 0.5 and len(m["accuracy"]["corruptions"]["gaussian_noise"]) == 5
        assert m["latency_ms"]["threads"] == 1 and len(m["latency_ms"]["samples"]) == 50
        assert m["memory"]["peak_rss_bytes"] > 0 and m["size_bytes"] == (out / m["file"]).stat().st_size
    assert models["student_int8_pte"]["runtime"] == "executorch-cpu"
    assert models["student_int8_pte"]["delegation"]["compute_outside"] == []
    gate = json.loads((out / "gate.json").read_text())
    gated = {c["model"] for c in gate["checks"]}
    assert {"student_int8", "student_int8_pte"} <= gated
    size_checks = [c for c in gate["checks"] if c["model"] == "student_int8_pte" and "size" in c["id"]]
    assert size_checks, "the profile's size budget applies to the ExecuTorch INT8 model too"
    html = (out / "report.html").read_text()
    assert "student_int8_pte" in html


def test_bundle_with_pte_runs_and_merges_back(et_build, env, tmp_path):
    out = et_build / "out"
    proc = edgekd("bundle", str(out), "--device", "android-arm64", "-o", str(tmp_path / "b"),
                  "--first-images", "64", cwd=et_build, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    b = tmp_path / "b"
    rec = json.loads((b / "bundle.json").read_text())
    assert [m["file"] for m in rec["models"]] == ["models/student.int8.onnx", "models/student.int8.ort",
                                                  "models/student.int8.pte"]
    assert rec["runtimes"] == ["onnxruntime", "executorch"]
    assert "executorch" in (b / "README.txt").read_text()
    with zipfile.ZipFile(tmp_path / "b.zip") as z:
        assert "b/models/student.int8.pte" in z.namelist()
    run = subprocess.run([sys.executable, "run.py", "--quiet", "--out", "results.json"], cwd=b,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((b / "results.json").read_text())
    pte = res["models"]["student_int8_pte"]
    assert pte["runtime"] == "executorch" and pte["latency_ms"]["runs"] == 200
    assert pte["accuracy"]["clean"] == pte["build_accuracy"]["clean"]
    merged = edgekd("report", str(out), "--device-results", str(b / "results.json"), cwd=et_build, env=env)
    assert merged.returncode == 0, merged.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert "student_int8_pte" in report["device_runs"][-1]["models"]
    # both runtimes' INT8 models against the teacher (the cheap build ran no attacks and two
    # corruptions) and the device run against the profile's budgets
    gate = edgekd("gate", str(out), "--json", str(tmp_path / "gate.json"), "--set",
                  'models=["student_int8", "student_int8_pte"]', "--set", "max_adversarial_drop=false",
                  "--set", "max_mca_drop=false", "--set", "max_corruption_drop=false", cwd=et_build, env=env)
    assert gate.returncode == 0, gate.stdout[-2000:] + gate.stderr[-2000:]
    verdict = json.loads((tmp_path / "gate.json").read_text())
    assert {"student_int8", "student_int8_pte"} <= {c["model"] for c in verdict["checks"]}
    assert any(c["id"].startswith("device.android-arm64") for c in verdict["checks"])


def test_without_the_extra_the_build_skips_with_one_line(tmp_path, env):
    """executorch made unimportable: the build says how to get the programs and makes the rest."""
    code = ("import sys; sys.modules['executorch'] = None; from edgekd.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "build", "-o", "out", *CHEAP, "--set",
                           'export.runtimes=["onnxruntime", "executorch"]'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "executorch: skipped" in ln]
    assert len(lines) == 1 and "pip install -e '.[executorch]'" in lines[0]
    out = tmp_path / "out"
    assert (out / "student.int8.onnx").is_file() and not list(out.glob("*.pte"))
    report = json.loads((out / "report.json").read_text())
    assert not any(m.endswith("_pte") for m in report["models"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert "executorch: skipped" in manifest["stages"]["executorch"]


def test_gate_naming_a_skipped_runtime_model_says_why(monkeypatch):
    from edgekd import executorch_export
    from edgekd.config import load_config
    from edgekd.errors import ConfigError
    from edgekd.preflight import build_policy, build_runtimes

    cfg = load_config(None, ['export.runtimes=["onnxruntime", "executorch"]',
                             'gate.models=["student_int8_pte"]'])
    monkeypatch.setattr(executorch_export, "available", lambda: False)
    runtimes, note = build_runtimes(cfg)
    assert runtimes == ("onnxruntime",) and "pip install -e '.[executorch]'" in note
    with pytest.raises(ConfigError) as e:
        build_policy(cfg)
    assert "student_int8_pte" in str(e.value) and "executorch: skipped" in str(e.value)


def test_measuring_an_onnx_model_names_the_runtime_without_importing_it():
    """machine_facts (every measurement's record) names the installed ExecuTorch runtime from its
    package metadata: importing executorch (and torch with it) cost every ONNX measurement 6 s."""
    _need("executorch")
    from importlib.metadata import PackageNotFoundError, version

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _ortbench, json; "
            "print(json.dumps([_ortbench.machine_facts()['executorch'], 'torch' in sys.modules, "
            "any(m.startswith('executorch') for m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__import__("edgekd").__file__)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, torch_loaded, et_loaded = json.loads(proc.stdout)
    try:
        want = f"executorch-numpy-runtime {version('executorch-numpy-runtime')}"
    except PackageNotFoundError:
        want = f"executorch {version('executorch')}"
    assert name == want and not torch_loaded and not et_loaded
