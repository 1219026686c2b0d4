"""Hostile and careless device inputs (issue 16, classes 5, 7, 8 and 9): device profiles whose name
is a path, bundle destinations that are not earlier bundles, device results that cannot be true,
merges that must leave the build consistent with its manifest, unwritable bundle folders.

Cheap: no build; a synthetic artifact directory stands in where one is needed (the checks run
before anything of a real build is read).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from edgekd.bundle import BUNDLE_FORMAT, make_bundle
from edgekd.cli import main
from edgekd.device_profiles import load_profile
from edgekd.device_results import load_device_results
from edgekd.errors import ConfigError, InputError
from edgekd.gate import device_run_checks

SHA = "ab" * 32
STATS = {"min": 1.0, "mean": 2.0, "std": 0.5, "p50": 2.0, "p90": 3.0, "p95": 3.5, "p99": 4.0, "max": 5.0}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def good_results() -> dict:
    """A results.json as a bundle's run.py writes it."""
    model = {"file": "models/student.int8.ort", "format": "ort", "precision": "int8", "primary": True,
             "sha256_ok": True, "model": "student.int8.ort", "size_bytes": 1_000_000,
             "provider": "CPUExecutionProvider", "batch": 1, "input_shapes": {"x": [1, 32, 32, 3]},
             "threads": 1, "os_threads": 4, "affinity": [0, 1], "session_create_ms": 8.0,
             "first_inference_ms": 1.0, "warmup": 5, "runs": 50, "seconds": None, "wall_s": 0.1,
             "latency_ms": dict(STATS), "throughput": {"inferences_per_s": 500.0, "images_per_s": 500.0},
             "memory": {"baseline_rss_bytes": 50_000_000, "peak_rss_bytes": 70_000_000,
                        "model_rss_bytes": 20_000_000, "source": "/proc/self/status VmRSS, VmHWM"},
             "warnings": [], "accuracy": {"clean": 0.95, "gaussian_noise/3": 0.9},
             "agreement_with_teacher": {"clean": 0.97, "gaussian_noise/3": 0.93},
             "build_accuracy": {"clean": 0.95, "gaussian_noise/3": 0.9}}
    return {"format": "edgekd-device-results", "version": 1, "created": "2026-01-01T00:00:00Z",
            "profile": load_profile("rpi4").to_dict(), "threads": 1,
            "bundle": {"artifact_dir": "/x/out", "report_created": "2025-12-31T00:00:00Z",
                       "dataset": "digits", "test_sha256": SHA, "report_sha256": SHA,
                       "bundle_created": "2026-01-01T00:00:00Z"},
            "device": {"machine": "aarch64", "processor": "", "cpu_model": "Raspberry Pi 4", "platform": "Linux",
                       "system": "Linux", "node": "pi", "cpu_count": 4, "affinity": [0, 1, 2, 3],
                       "mem_total_bytes": 4_000_000_000, "python": "3.11.2", "numpy": "1.26.4",
                       "onnxruntime": "1.17.0", "providers": ["CPUExecutionProvider"]},
            "models": {"student_int8_ort": model}, "warnings": [], "n_images": {"clean": 200}}


@pytest.fixture
def build(tmp_path) -> Path:
    """A synthetic artifact directory: report.json / .md / .html, gate.json and a manifest that
    hashes them (what `edgekd report --device-results` reads and rewrites)."""
    out = tmp_path / "out"
    out.mkdir()
    report = {"created": "2025-12-31T00:00:00Z", "dataset": {"name": "digits", "test_sha256": SHA},
              "models": {"student_int8": {"accuracy": {"clean": 0.95}}}}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text("# edgekd report\n\ntext\n\n## Gate\n\nPASS\n")
    (out / "report.html").write_text("<html>the build's page</html>\n")
    (out / "gate.json").write_text(json.dumps({"verdict": "pass", "checks": []}) + "\n")
    files = {p.name: {"sha256": _sha(p), "size_bytes": p.stat().st_size} for p in sorted(out.iterdir())}
    manifest = {"format": "edgekd-build", "schema_version": 1, "edgekd_version": "0", "config": {},
                "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _merge(out: Path, results: dict | str, capsys) -> tuple[int, str]:
    path = out.parent / "results.json"
    path.write_text(results if isinstance(results, str) else json.dumps(results))
    code = main(["report", str(out), "--device-results", str(path)])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 7. bundle paths
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".hidden", "..", "a b", "x" * 65, ""])
def test_profile_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    f = tmp_path / "board.toml"
    f.write_text(f"name = {json.dumps(name)}\n")
    with pytest.raises(ConfigError, match="name") as e:
        load_profile(f)
    assert str(f) in str(e.value)


def test_profile_name_from_an_unsafe_file_name_is_refused(tmp_path):
    f = tmp_path / "my board.toml"
    f.write_text("threads = 2\n")
    with pytest.raises(ConfigError, match="not a valid profile name .*taken from the file name"):
        load_profile(f)


def test_bundle_with_a_path_profile_name_writes_nothing_outside(tmp_path, monkeypatch, capsys):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    (work / "evil.toml").write_text('name = "../../x"\n')
    code = main(["bundle", "missing-out", "--device", "evil.toml"])
    err = capsys.readouterr().err
    assert code == 2 and "not a valid profile name" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "evil.toml"]
    # the same name inside device results (which embed the profile) is refused too
    res = good_results()
    res["profile"]["name"] = "../../x"
    (work / "r.json").write_text(json.dumps(res))
    with pytest.raises(InputError, match="profile: name = '../../x' is not a valid profile name"):
        load_device_results(work / "r.json")


def _earlier_bundle(folder: Path) -> None:
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "student.int8.onnx").write_bytes(b"onnx")
    (folder / "bundle.json").write_text(json.dumps(
        {"format": BUNDLE_FORMAT, "version": 1, "models": [{"file": "models/student.int8.onnx"}]}))
    for name in ("run.py", "device.json", "eval.npz", "README.txt"):
        (folder / name).write_text("x")


def test_bundle_never_replaces_an_unrelated_zip(tmp_path):
    zpath = tmp_path / "b.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("b/holiday.jpg", b"photo")
    before = zpath.read_bytes()
    with pytest.raises(ConfigError, match=r"b\.zip exists and is not the zip of an edgekd bundle"):
        make_bundle(tmp_path / "no-build", load_profile("rpi4"), tmp_path / "b")
    assert zpath.read_bytes() == before and not (tmp_path / "b").exists()
    zpath.write_bytes(b"not a zip at all")
    with pytest.raises(ConfigError, match="not the zip of an edgekd bundle"):
        make_bundle(tmp_path / "no-build", load_profile("rpi4"), tmp_path / "b")
    assert zpath.read_bytes() == b"not a zip at all"
    # --no-zip leaves it alone and does not ask
    with pytest.raises(InputError, match="not an edgekd artifact directory"):
        make_bundle(tmp_path / "no-build", load_profile("rpi4"), tmp_path / "b", make_zip=False)
    # a FIFO named b.zip is refused without being opened (opening it would block)
    zpath.unlink()
    os.mkfifo(zpath)
    with pytest.raises(ConfigError, match="not the zip of an edgekd bundle"):
        make_bundle(tmp_path / "no-build", load_profile("rpi4"), tmp_path / "b")


def test_bundle_replaces_only_an_earlier_bundle_holding_only_its_files(tmp_path):
    prof = load_profile("rpi4")
    b = tmp_path / "b"
    _earlier_bundle(b)
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:  # an earlier bundle's zip passes the check
        z.writestr("b/bundle.json", (b / "bundle.json").read_text())
    with pytest.raises(InputError, match="not an edgekd artifact directory"):
        make_bundle(tmp_path / "no-build", prof, b)
    # run.py's results.json left in the bundle is the user's: refused, not deleted
    (b / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="earlier edgekd bundle but also holds results.json"):
        make_bundle(tmp_path / "no-build", prof, b)
    (b / "results.json").unlink()
    (b / "models" / "mine.onnx").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="also holds models/mine.onnx"):
        make_bundle(tmp_path / "no-build", prof, b)
    # a bundle.json without edgekd's marker does not make a folder a bundle
    other = tmp_path / "other"
    other.mkdir()
    (other / "bundle.json").write_text('{"format": "webpack"}')
    with pytest.raises(ConfigError, match="is not an edgekd bundle"):
        make_bundle(tmp_path / "no-build", prof, other)
    assert (other / "bundle.json").read_text() == '{"format": "webpack"}'
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        make_bundle(tmp_path / "no-build", prof, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep"


# ---------------------------------------------------------------------------------------------
# 9. a bundle folder that cannot be written
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that chmod restricts")
def test_read_only_bundle_folder_is_an_input_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["bundle", str(tmp_path / "no-build"), "--device", "rpi4", "-o", str(ro / "b")])
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write the bundle {ro / 'b'}" in err and "Permission denied" in err
    assert err.count("\n") == 1 and list(ro.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 8. device results that cannot be true; 5. the merge leaves the build as it was, or consistent
# ---------------------------------------------------------------------------------------------

NAN = float("nan")


def _set(path: str, value):
    def edit(res: dict) -> None:
        node = res
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return edit


M = "models.student_int8_ort."


@pytest.mark.parametrize("edit, needle", [
    (_set(M + "latency_ms.p90", -1.0), M + "latency_ms.p90 must be a finite number >= 0, got -1.0"),
    (_set(M + "latency_ms.p90", "3.2"), M + "latency_ms.p90 must be a finite number >= 0, got \"3.2\""),
    (_set(M + "latency_ms.p90", {"value": 3}), M + "latency_ms.p90 must be a finite number >= 0, got an object"),
    (_set(M + "latency_ms.p99", NAN), M + "latency_ms.p99 must be a finite number >= 0, got NaN"),
    (_set(M + "latency_ms.max", float("inf")), M + "latency_ms.max must be a finite number >= 0"),
    (_set(M + "latency_ms.p50", True), M + "latency_ms.p50 must be a finite number >= 0, got true"),
    (_set(M + "latency_ms.p90", 1.5), M + "latency_ms.p90 = 1.5 is below latency_ms.p50 = 2"),
    (_set(M + "latency_ms.p99", 2.5), M + "latency_ms.p99 = 2.5 is below latency_ms.p95 = 3.5"),
    (_set(M + "size_bytes", "big"), M + "size_bytes must be a whole number >= 1"),
    (_set(M + "size_bytes", 0), M + "size_bytes must be a whole number >= 1, got 0"),
    (_set(M + "memory.peak_rss_bytes", {"x": 1}), M + "memory.peak_rss_bytes must be a whole number >= 1"),
    (_set(M + "memory.peak_rss_bytes", -5), M + "memory.peak_rss_bytes must be a whole number >= 1"),
    (_set(M + "memory", [1]), M + "memory must be an object, got a list"),
    (_set(M + "runs", 2.5), M + "runs must be a whole number >= 1, got 2.5"),
    (_set(M + "throughput.images_per_s", -3), M + "throughput.images_per_s must be a finite number >= 0"),
    (_set(M + "accuracy.clean", 1.5), M + "accuracy.clean must be a fraction in [0, 1], got 1.5"),
    (_set(M + "agreement_with_teacher", "all"), M + "agreement_with_teacher must be an object"),
    (_set(M + "primary", "yes"), M + "primary must be true or false"),
    (_set(M + "warnings", [{"deep": [1]}]), M + "warnings[0] must be a string, got an object"),
    (_set("threads", 0), "threads must be a whole number >= 1, got 0"),
    (_set("threads", True), "threads must be a whole number >= 1, got true"),
    (_set("device.cpu_count", "four"), "device.cpu_count must be a whole number >= 1"),
    (_set("device", [1, 2]), "device must be an object, got a list"),
    (_set("bundle.test_sha256", 5), "bundle.test_sha256 must be a string, got 5"),
    (_set("n_images.clean", -1), "n_images.clean must be a whole number >= 0, got -1"),
    (_set("created", None), "created is missing"),
    (_set("models", {}), "models is empty"),
    (_set("profile.threads", "4"), "profile: threads must be an integer"),
])
def test_device_results_that_cannot_be_true_are_refused_before_anything_is_written(build, capsys, edit,
                                                                                   needle):
    res = good_results()
    edit(res)
    before = _snapshot(build)
    code, err = _merge(build, json.dumps(res), capsys)
    assert code == 2, err
    assert needle in err and "results.json" in err and err.count("\n") == 1
    assert _snapshot(build) == before  # nothing in the build changed


def test_missing_field_and_deep_nesting_are_input_errors(build, capsys):
    res = good_results()
    del res["models"]["student_int8_ort"]["latency_ms"]["p90"]
    before = _snapshot(build)
    code, err = _merge(build, res, capsys)
    assert code == 2 and M + "latency_ms.p90 is missing" in err
    res = good_results()
    nested = "[" * 100_000 + "]" * 100_000
    code, err = _merge(build, json.dumps(res).replace('"warnings": []', f'"warnings": {nested}', 1), capsys)
    assert code == 2 and "nested too deeply" in err
    assert _snapshot(build) == before


def test_successful_merge_leaves_every_file_matching_the_manifest(build, capsys):
    code, err = _merge(build, good_results(), capsys)
    assert code == 0, err
    report = json.loads((build / "report.json").read_text())
    assert report["device_runs"][-1]["models"]["student_int8_ort"]["latency_ms"]["p90"] == 3.0
    assert "## Device runs" in (build / "report.md").read_text()
    assert "Device runs" in (build / "report.html").read_text()
    manifest = json.loads((build / "manifest.json").read_text())
    names = {p.name for p in build.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == names  # nothing left behind (no .tmp files), nothing unlisted
    for name, rec in manifest["files"].items():
        assert rec["sha256"] == _sha(build / name), name
        assert rec["size_bytes"] == (build / name).stat().st_size
    # only known fields are copied from the results: an extra nested one stays out of the report
    res = good_results()
    res["device"]["extra"] = {"a": {"b": 1}}
    res["created"] = "2026-01-02T00:00:00Z"
    assert _merge(build, res, capsys)[0] == 0
    assert "extra" not in json.loads((build / "report.json").read_text())["device_runs"][-1]["device"]


def test_report_page_written_elsewhere_leaves_the_build_alone(build, tmp_path, capsys):
    before = _snapshot(build)
    assert main(["report", str(build), "-o", str(tmp_path / "page.html")]) == 0
    assert _snapshot(build) == before and (tmp_path / "page.html").is_file()
    # the page never replaces another file of the build (report.json, a model, the manifest)
    for name in ("report.md", "gate.json", "manifest.json"):
        assert main(["report", str(build), "-o", str(build / name)]) == 2
        assert "is a file of the build" in capsys.readouterr().err
    assert _snapshot(build) == before
    # a page into another build's listed file would make that build lie: refused
    other = tmp_path / "other"
    other.mkdir()
    for p in build.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    code = main(["report", str(build), "-o", str(other / "report.md")])
    assert code == 2 and "is a file of another edgekd build" in capsys.readouterr().err
    assert _snapshot(other) == before


def test_gate_refuses_a_negative_device_measurement_in_the_report():
    run = {"profile": "rpi4", "primary_model": "student_int8_ort", "device": {}, "created": "x", "threads": 1,
           "profile_budgets": {"max_latency_p90_ms": 20.0},
           "models": {"student_int8_ort": {"latency_ms": {**STATS, "p90": -1.0}, "size_bytes": 1,
                                           "memory": {"peak_rss_bytes": 1}}}}
    with pytest.raises(InputError, match=r"no valid latency_ms.p90 \(a finite number >= 0, got -1.0\)"):
        device_run_checks({"device_runs": [run]}, "report.json")
    good = copy.deepcopy(run)
    good["models"]["student_int8_ort"]["latency_ms"]["p90"] = 3.0
    assert [c.passed for c in device_run_checks({"device_runs": [good]}, "report.json")] == [True]
    with pytest.raises(InputError, match="device_runs must be a list of objects"):
        device_run_checks({"device_runs": ["x"]}, "report.json")


def test_results_as_run_py_writes_them_are_accepted():
    from edgekd.device_results import validate_device_results

    validate_device_results(good_results(), "results.json")
