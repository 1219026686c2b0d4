"""End-to-end: the real `edgekd` command on the embedded default (digits), as a user runs it."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import edgekd

from edgekd import perturb


def test_default_build_succeeds_and_meets_targets(default_build):
    work, proc = default_build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = work / "out"
    assert {"student.pt", "student.fp32.onnx", "student.int8.onnx", "manifest.json", "report.json",
            "report.md", "predictions.npz", "gate.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in work.iterdir() if p.name.startswith(".out")], "temporary folder left"
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    assert set(models) == {"teacher", "student_torch", "student_fp32", "student_int8"}
    int8, fp32 = models["student_int8"], models["student_fp32"]
    assert int8["accuracy"]["clean"] >= 0.95
    assert int8["size_bytes"] <= 0.40 * fp32["size_bytes"]
    preds = np.load(out / "predictions.npz")
    assert (preds["student_int8/clean"] == preds["student_fp32/clean"]).mean() >= 0.99
    assert models["teacher"]["params"] >= 5 * models["student_torch"]["params"]
    # the summary table names all four models
    for mid in models:
        assert mid in proc.stdout


def test_report_schema_fields(default_build):
    report = json.loads((default_build[0] / "out" / "report.json").read_text())
    assert report["schema_version"] == 1 and report["corruption_table"] == "cifar10-c"
    assert report["robustness"]["frost_source"] == "photos"  # the reference's photographs, named
    assert "frost from the reference's frost photographs" in (default_build[0] / "out" / "report.md").read_text()
    names = list(perturb.COMMON) + list(perturb.EXTRA)
    for m in report["models"].values():
        assert m["kind"] in ("teacher", "student") and m["format"] in ("torch", "onnx")
        assert m["precision"] in ("fp32", "int8", "fp16") and m["runtime"]
        assert m["params"] > 0 and m["size_bytes"] > 0
        acc = m["accuracy"]
        assert 0 <= acc["clean"] <= 1 and 0 <= m["agreement_with_teacher"]["clean"] <= 1
        lat = m["latency_ms"]
        assert lat["batch"] == 1 and lat["threads"] >= 1 and lat["runs"] >= 50
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert set(acc["corruptions"]) == set(names)
        assert all(len(v) == 5 and all(0 <= a <= 1 for a in v) for v in acc["corruptions"].values())
        cells = [a for n in perturb.COMMON for a in acc["corruptions"][n]]
        assert acc["mca"] == pytest.approx(np.mean(cells))
        assert set(acc["missing"]) == {"occlusion", "pixel_dropout"}
        assert set(acc["adversarial"]) == {"fgsm", "pgd"}
        assert set(acc["adversarial"]["pgd"]) == {"1", "2", "4", "8"}
        rb = m["robustness"]
        assert rb["retention"] is not None
    # mCE is defined when the teacher (the reference) errs on every common corruption; a teacher
    # that is perfect on one (digits: JPEG, on some machines) leaves that CE, and so mCE, undefined
    t = report["models"]["teacher"]
    perfect = [n for n in perturb.COMMON if min(t["accuracy"]["corruptions"][n]) == 1.0]
    for mid, m in report["models"].items():
        assert (m["robustness"]["mce"] is None) == bool(perfect), (mid, perfect)
        assert all(m["robustness"]["ce"][n] is None for n in perfect)
    assert t["robustness"]["mce"] in (None, pytest.approx(1.0)) and t["robustness"]["retention"] == 1.0
    assert report["models"]["student_int8"]["adversarial_source"] == "transfer:student_torch"
    assert report["models"]["teacher"]["adversarial_source"] == "white-box"
    # PGD at 8/255 white-box must hurt the teacher more than the clean set does
    assert t["accuracy"]["adversarial"]["pgd"]["8"] < t["accuracy"]["clean"] - 0.2


def test_manifest_hashes_every_file(default_build):
    out = default_build[0] / "out"
    man = json.loads((out / "manifest.json").read_text())
    files = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert set(man["files"]) == files
    for name, rec in man["files"].items():
        data = (out / name).read_bytes()
        assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["size_bytes"] == len(data)
    assert man["input_contract"]["dtype"] == "uint8" and man["input_contract"]["layout"] == "NHWC"
    assert man["stages"]["export"]["parity"]["argmax_agreement"] == 1.0
    assert man["stages"]["export"]["opset"] >= 17
    assert man["versions"]["onnxruntime"] and man["seeds"]["split"] == 0
    assert man["gate"]["verdict"] == "pass"


def test_eval_command_on_artifacts(default_build, env):
    work = default_build[0]
    for model in ("out/student.int8.onnx", "out/student.pt"):
        proc = edgekd("eval", model, "--perturb", "gaussian_noise,fog", "--severities", "1,5",
                      "--json", "ev.json", "--quiet", cwd=work, env=env)
        assert proc.returncode == 0, proc.stderr
        res = json.loads((work / "ev.json").read_text())
        assert set(res["accuracy"]["perturbed"]) == {"gaussian_noise", "fog"}
        assert res["accuracy"]["clean"] >= 0.9
    report = json.loads((work / "out" / "report.json").read_text())
    # the same images and the same model give the same figure as the build's sweep
    assert res["accuracy"]["perturbed"]["fog"][4] == report["models"]["student_torch"]["accuracy"][
        "corruptions"]["fog"][4]


def test_untrained_student_is_rejected(tmp_path, env):
    proc = edgekd("build", "-o", "bad", "--quiet", "--set", "distill.epochs=0",
                  "--set", "compute.device=cpu", cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "clean" in proc.stdout
    man = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    assert man["gate"]["verdict"] == "fail"  # artifacts are still written, with the verdict
    junit = tmp_path / "j.xml"
    g = edgekd("gate", "bad", "--junit", str(junit), cwd=tmp_path, env=env)
    assert g.returncode == 1
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("failures")) >= 1
    assert len(suite.findall("testcase/failure")) == int(suite.get("failures"))


@pytest.mark.parametrize("args, needle", [
    (["build", "-c", "missing.toml"], "missing.toml does not exist"),
    (["build", "--set", "distill.epochz=3"], "unknown key distill.epochz"),
    (["build", "--set", "teacher.weights=nope.pt"], "teacher.weights = 'nope.pt': file does not exist"),
    (["build", "--set", "student.arch=resnet99"], "unknown model architecture 'resnet99'"),
    (["build", "--set", "robustness.epsilons=[4, 8]"], "gate.adversarial_epsilon = 2 is not among"),
    (["build", "--set", "data.image_size=8"], "cannot run on 8x8 images (data.image_size)"),
    (["build", "--set", "distill.alpha=nan"], "distill.alpha must be a finite number"),
    (["gate", "no-such-report.json"], "no-such-report.json"),
    (["eval", "nothing.onnx"], "nothing.onnx"),
])
def test_input_errors_exit_2_with_one_sentence(tmp_path, env, args, needle):
    proc = edgekd(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "edgekd-out").exists()


def test_foreign_output_dir_is_not_overwritten(tmp_path, env):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    proc = edgekd("build", "-o", "mine", "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "is not an edgekd build" in proc.stderr
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"
