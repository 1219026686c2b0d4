"""The CLI in-process through ``edgekd.cli.main([...])`` (no subprocess): listings, one-line errors
with exit code 2, and distill -> export -> quantize on the embedded digits data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekd import artifacts, perturb
from edgekd.attacks import ATTACKS
from edgekd.cli import EXIT_USAGE, main
from edgekd.config import SECTIONS
from edgekd.losses import LOSSES
from edgekd.models import MODELS


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run in a scratch folder with a private cache, so nothing lands in the repository or ~/.cache."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKD_DEVICES", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return work


def _error(capsys, argv: list[str]) -> str:
    """Run a command that must fail as a usage / input error; its one stderr line."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == EXIT_USAGE, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


# ---- listings -----------------------------------------------------------------------------------


def test_config_prints_every_key(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for name, f in SECTIONS.items():
        if name == "gate":  # owned by the gate policy, not listed here
            continue
        assert f"[{name}]" in out
        for sf in dataclasses.fields(f.default_factory()):
            assert f"\n{sf.name} = " in out, (name, sf.name)


def test_config_with_overrides_prints_the_resolved_config(capsys):
    import json

    assert main(["config", "--set", "distill.epochs=3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["distill"]["epochs"] == 3


def test_models_lists_architectures_and_every_registered_loss(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == MODELS.names() + LOSSES.names()
    assert "distillation losses:" in out and "architectures:" in out


def test_perturb_list(capsys):
    assert main(["perturb", "list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("groups:")]
    assert names == list(perturb.names()) + list(ATTACKS)
    assert "gaussian_noise" in names and "pgd" in names


def test_perturb_unknown_action(capsys):
    assert "invalid choice" in _usage_error(capsys, ["perturb", "show"])


def _usage_error(capsys, argv: list[str]) -> str:
    """argparse's refusal: usage line plus one error line, exit 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgekd: error: ")
    return last


def test_devices_lists_the_builtin_profiles(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and not set(line) <= {"-", " "}]
    assert sorted(rows) == ["android-arm64", "jetson-orin-cpu", "rpi4", "x86-edge"]


# ---- one-line errors ------------------------------------------------------------------------------


def test_bundle_unknown_device_profile(capsys, _isolated):
    line = _error(capsys, ["bundle", "nonexistent-dir", "--device", "nope"])
    assert "unknown device profile 'nope'" in line
    for name in ("android-arm64", "jetson-orin-cpu", "rpi4", "x86-edge"):
        assert name in line
    assert list(_isolated.iterdir()) == []  # no bundle folder started


def test_export_missing_checkpoint(capsys, _isolated):
    line = _error(capsys, ["export", "missing.pt"])
    assert "missing.pt" in line and "does not exist" in line
    assert list(_isolated.iterdir()) == []


def test_quantize_refuses_a_non_onnx_file(capsys, tmp_path):
    x = tmp_path / "x.txt"
    x.write_text("not a model\n")
    line = _error(capsys, ["quantize", str(x)])
    assert str(x) in line and ".onnx" in line
    assert "does not exist" in _error(capsys, ["quantize", str(tmp_path / "absent.onnx")])


def test_debug_flag_shows_the_traceback(capsys):
    assert main(["export", "missing.pt", "--debug"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("edgekd: error: ")


# ---- distill -> export -> quantize ----------------------------------------------------------------

TINY = ["--set", "distill.epochs=1", "--set", "teacher.epochs=1", "--set", "distill.min_steps=0",
        "--set", "teacher.min_steps=0"]


def test_distill_export_quantize(capsys, tmp_path):
    from edgekd.config import load_config
    from edgekd.data import load_dataset
    from edgekd.models import load_checkpoint
    from edgekd.runtimes import RUNTIMES

    out = tmp_path / "stages"
    out.mkdir()
    pt = out / artifacts.get(artifacts.STUDENT_TORCH).file
    fp32 = out / artifacts.get(artifacts.STUDENT_FP32).file
    int8 = out / artifacts.get(artifacts.STUDENT_INT8).file

    # a -o in a missing folder is refused before any work, and nothing is left behind
    missing = tmp_path / "missing"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    line = _error(capsys, ["distill", *TINY, "-q", "-o", str(missing / pt.name)])
    assert "does not exist" in line and str(missing) in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    assert main(["distill", *TINY, "-q", "-o", str(pt)]) == 0, capsys.readouterr().err
    assert "student" in capsys.readouterr().out
    assert main(["export", str(pt), "-o", str(fp32)]) == 0, capsys.readouterr().err
    assert "max |logit diff| vs torch" in capsys.readouterr().out
    assert main(["quantize", str(fp32), "-o", str(int8)]) == 0, capsys.readouterr().err
    assert "static INT8" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([pt.name, fp32.name, int8.name])  # no temp files
    assert int8.stat().st_size < fp32.stat().st_size
    # --set on top of the stored config: another quantisation preset is applied, not ignored
    u8 = out / "u8.onnx"
    assert main(["quantize", str(fp32), "-o", str(u8), "--set", 'quantize.preset="int8-static-u8s8"']) == 0
    assert "uint8 activations" in capsys.readouterr().out
    u8.unlink()
    # an ONNX file that carries no build config is refused unless -c says which data to calibrate on
    import onnx

    bare = onnx.load(str(fp32))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert "carries no build config" in _error(capsys, ["quantize", str(tmp_path / "bare.onnx"),
                                                        "-o", str(tmp_path / "bare.int8.onnx")])
    (tmp_path / "bare.onnx").unlink()

    # the later stages refuse a -o in a missing folder too, after loading their inputs, leaving nothing
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert "does not exist" in _error(capsys, ["export", str(pt), "-o", str(missing / fp32.name)])
    assert "does not exist" in _error(capsys, ["quantize", str(fp32), "-o", str(missing / int8.name)])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    # onnxruntime runs both files, and they agree with the torch student
    images = load_dataset(load_config(None).data).test.x[:32]
    student, ck = load_checkpoint(pt, key="student")
    ref = RUNTIMES.get("torch")(student, "cpu").predict(images).argmax(1)
    for path in (fp32, int8):
        runner = RUNTIMES.get("onnxruntime")(path)
        logits = runner.predict(images)
        assert logits.shape == (32, 10)
        agree = float(np.mean(logits.argmax(1) == ref))
        assert agree >= 0.9, (path.name, agree)
