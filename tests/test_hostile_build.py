"""Hostile and careless inputs to `edgekd build` and `edgekd gate` (issue 16): output folders that
are not edgekd's, signals, full disks, re-gating a build, special files, deeply nested documents.

Each test names the defect class of issue 16 it pins. Cheap: preflight checks and the file
helpers; one subprocess build is started and terminated with SIGTERM.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from edgekd import cli, errors, files, pipeline
from edgekd.config import load_config
from edgekd.errors import ConfigError, InputError


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_hang(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s (opened a FIFO or a device?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def fake_build(tmp_path) -> Path:
    """A folder shaped like an edgekd build: two files and a manifest that lists them."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}\n")
    (out / "gate.json").write_text('{"verdict": "pass"}\n')
    manifest = {"format": files.BUILD_FORMAT, "schema_version": 1, "edgekd_version": "0",
                "config": {}, "files": {p.name: {"sha256": files.sha256_file(p)} for p in out.iterdir()}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# ------------------------------------------------ 1. an output folder that is not an edgekd build

def test_a_folder_with_someone_elses_manifest_json_is_never_replaced(tmp_path, capsys):
    ext = tmp_path / "my-extension"
    ext.mkdir()
    (ext / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}')
    (ext / "background.js").write_text("console.log(1)")
    before = _hashes(ext)
    code, out, err = _main(capsys, "build", "-o", ext, "--quiet")
    assert code == 2 and "is not an edgekd build" in err and len(err.strip().splitlines()) == 1
    assert _hashes(ext) == before


def test_an_earlier_build_holding_unlisted_files_is_refused_and_kept(fake_build):
    pipeline.check_out_dir(fake_build)  # only what the manifest lists: may be replaced
    (fake_build / "notes.txt").write_text("mine")
    (fake_build / "plots").mkdir()
    with pytest.raises(ConfigError, match=r"also holds notes\.txt, plots, which its manifest does not list"):
        pipeline.check_out_dir(fake_build)
    assert (fake_build / "notes.txt").read_text() == "mine"


def test_a_manifest_without_the_build_marker_is_not_a_build(fake_build):
    doc = json.loads((fake_build / "manifest.json").read_text())
    for key in ("format", "edgekd_version"):
        doc.pop(key)
    (fake_build / "manifest.json").write_text(json.dumps(doc))
    assert files.build_manifest(fake_build) is None
    with pytest.raises(ConfigError, match="not an edgekd build"):
        pipeline.check_out_dir(fake_build)


# ------------------------------------------------------------- 5. re-gating and atomic writes

def test_regating_a_build_never_rewrites_its_own_files(default_build, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(default_build[0] / "out", out)
    before = _hashes(out)
    # a policy that fails every student: the build's gate.json says pass and must keep saying it
    code, stdout, err = _main(capsys, "gate", out, "--set", "max_clean_drop=0", "--set", "mode=strict")
    assert code in (0, 1) and "verdict not written" in err and "--json" in err
    assert _hashes(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(files.sha256_file(out / n) == rec["sha256"] for n, rec in manifest["files"].items())
    code, _, err = _main(capsys, "gate", out, "--json", out / "gate.json")
    assert code == 2 and "listed in its manifest.json" in err
    code, _, err = _main(capsys, "gate", out, "--junit", out / "report.md")
    assert code == 2 and _hashes(out) == before
    code, _, _ = _main(capsys, "gate", out, "--json", tmp_path / "regate.json")
    assert code in (0, 1) and json.loads((tmp_path / "regate.json").read_text())["verdict"] in ("pass", "fail")


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "gate.json"
    target.write_text('{"verdict": "pass"}\n')

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(InputError, match=r"cannot write .*gate\.json: No space left on device"):
        files.write_atomic(target, "x" * 10_000)
    assert target.read_text() == '{"verdict": "pass"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["gate.json"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_folder_is_an_input_error_naming_the_file(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match=r"cannot write .*ro/v\.json"):
            files.write_atomic(ro / "v.json", "{}")
    finally:
        ro.chmod(0o755)


def test_a_full_disk_during_a_build_names_the_path_and_keeps_the_old_build(fake_build, monkeypatch):
    before = _hashes(fake_build)

    def full(cfg, out, policy, progress, say):
        (out / "student.pt").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "student.pt"))

    monkeypatch.setattr(pipeline, "_build_into", full)
    monkeypatch.setattr(pipeline, "preflight", lambda cfg: None)
    with pytest.raises(InputError) as e:
        pipeline.build(load_config(None), fake_build, progress=False)
    msg = str(e.value)
    assert f"{fake_build}/student.pt" in msg and "No space left on device" in msg and "as it was" in msg
    assert _hashes(fake_build) == before
    assert sorted(p.name for p in fake_build.parent.iterdir()) == ["out"]


# ----------------------------------------------------------------------------- 6. signals

def test_a_sigterm_that_python_dropped_where_it_landed_still_keeps_the_previous_build(fake_build, monkeypatch, capsys):
    """SIGTERM's exception can land where Python drops it ("Exception ignored in ..."): CI saw it in
    importlib's module-lock weakref callback, and the build ran on, replaced the previous one and
    exited 0. The handler's note outlives the exception: nothing is published, exit 143, one line."""
    before = _hashes(fake_build)

    class Held:
        pass

    def build_into(cfg, out, policy, progress, say):
        (out / "report.json").write_text('{"new": true}\n')
        held = Held()
        ref = weakref.ref(held, lambda _: cli._on_sigterm(signal.SIGTERM, None))  # noqa: F841
        del held  # the callback runs here and raises Terminated, which Python drops
        return None  # the stage went on as if nothing had happened

    monkeypatch.setattr(pipeline, "_build_into", build_into)
    monkeypatch.setattr(pipeline, "preflight", lambda cfg: None)
    code, _, err = _main(capsys, "build", "-o", fake_build, "--quiet")
    assert code == 128 + signal.SIGTERM, err
    assert err.strip() == "edgekd: terminated (SIGTERM); nothing half-written was left"
    assert _hashes(fake_build) == before
    assert sorted(p.name for p in fake_build.parent.iterdir()) == ["out"]
    # answered: the next command in this process is not stopped by it
    errors.check_terminated()


def test_a_dropped_sigterm_stops_a_stages_output_and_the_build_at_its_next_stage(tmp_path):
    from edgekd.commands._stage import write_output

    target = tmp_path / "student.onnx"
    target.write_bytes(b"previous")
    timings: dict = {}
    try:
        with pytest.raises(errors.Terminated):
            errors.terminate()  # as if the exception had been dropped: only the note is left
        with pytest.raises(errors.Terminated):
            write_output(target, (".onnx",), lambda tmp: tmp.write_bytes(b"new"))
        with pytest.raises(errors.Terminated):
            files.write_atomic(tmp_path / "gate.json", "{}\n")
        with pytest.raises(errors.Terminated):
            pipeline._stages(timings)("teacher", time.perf_counter())
    finally:
        errors.clear_termination()
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]
    assert "teacher" in timings  # the stage's time is kept; the check comes after
    pipeline._stages(timings)("distill", time.perf_counter())  # once cleared, stages go on


def test_sigterm_during_a_build_leaves_the_previous_build_and_no_partial_folder(default_build, tmp_path, env):
    work = tmp_path
    shutil.copytree(default_build[0] / "out", work / "out")
    before = _hashes(work / "out")
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "build", "-o", "out", "--quiet"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(work.glob(".out.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the build ended before it could be terminated"
    time.sleep(1.0)  # into the data / teacher stage
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status")
        sig = [ln for ln in status.read_text().splitlines() if ln.startswith("Sig")] if status.exists() else []
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the build did not stop within 180 s of SIGTERM; parent's blocked signals "
                    f"{signal.pthread_sigmask(signal.SIG_BLOCK, [])}; child {sig}; stderr: {err[-2000:]}")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert _hashes(work / "out") == before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_killed_builds_are_cleaned_and_a_lost_build_is_put_back(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".out.partial-{dead}").mkdir()
    (tmp_path / f".out.partial-{alive}").mkdir()  # a build still running: not touched
    old = tmp_path / f".out.old-{dead}"  # killed between the two renames of the final move
    old.mkdir()
    (old / "report.json").write_text("{}")
    done = files.recover_interrupted(tmp_path / "out")
    assert (tmp_path / "out" / "report.json").is_file() and len(done) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.partial-{alive}", "out"]


def test_the_final_move_swaps_old_and_new_builds_without_a_gap(tmp_path):
    dest, new = tmp_path / "out", tmp_path / ".out.partial-1"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    files.move_into_place(new, dest)
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------- 2 and 9. special files, nested documents

@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_or_policy_that_is_a_special_file_is_refused_unread(tmp_path, capsys, kind):
    if kind == "fifo":
        path = tmp_path / "edgekd.toml"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    code, _, err = _no_hang(lambda: _main(capsys, "build", "-c", path, "-o", tmp_path / "o"))
    assert code == 2 and "not a regular file" in err
    code, _, err = _no_hang(lambda: _main(capsys, "gate", tmp_path, "--policy", path))
    assert code == 2 and "not a regular file" in err


def test_deeply_nested_toml_and_json_are_input_errors(tmp_path, capsys, fake_build):
    deep = 100_000
    toml = tmp_path / "deep.toml"
    toml.write_text("x = " + "[" * deep + "]" * deep + "\n")
    code, _, err = _main(capsys, "build", "-c", toml, "-o", tmp_path / "o")
    assert code == 2 and "nested too deeply" in err and str(toml) in err
    code, _, err = _main(capsys, "gate", fake_build, "--policy", toml)
    assert code == 2 and "nested too deeply" in err
    (fake_build / "report.json").write_text("[" * deep + "]" * deep)
    code, _, err = _main(capsys, "gate", fake_build)
    assert code == 2 and "nested too deeply" in err and "report.json" in err
