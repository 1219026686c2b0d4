"""Device profiles: the built-in ones load, user files are validated with errors that name the key."""

from __future__ import annotations

import pytest

from edgekd.device_profiles import (
    DEVICE_RUNTIMES,
    builtin_dir,
    builtin_profiles,
    load_profile,
    profile_from_dict,
    profile_table,
)
from edgekd.errors import ConfigError


def test_builtin_profiles_cover_the_device_classes():
    profiles = {p.name: p for p in builtin_profiles()}
    assert {"rpi4", "android-arm64", "jetson-orin-cpu", "x86-edge"} <= set(profiles)
    rpi = profiles["rpi4"]
    assert rpi.arch == "arm64" and rpi.threads == 4 and rpi.precision == "int8"
    assert rpi.model_id == "student_int8_ort" and rpi.execution_provider == "CPUExecutionProvider"
    assert profiles["android-arm64"].cpu_affinity == [4, 5, 6, 7]  # the big cores
    for p in profiles.values():
        b = p.budgets
        assert b.max_latency_p90_ms > 0 and b.max_size_bytes > 0 and b.max_peak_memory_bytes > 0
        assert p.input_size > 0 and p.batch >= 1 and p.description
    table = profile_table(list(profiles.values()))
    assert "rpi4" in table and "p90 <= 20 ms" in table and "pin 4,5,6,7" in table


def test_builtin_profiles_are_the_repository_devices_folder():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert builtin_dir() == root / "devices"
    by_file = {p.stem: load_profile(p) for p in sorted((root / "devices").glob("*.toml"))}
    assert by_file and {p.name: p for p in builtin_profiles()} == by_file  # each file names itself
    assert all(p.source == str(root / "devices" / f"{n}.toml") for n, p in by_file.items())


def test_runtimes_come_from_the_runtime_registry():
    from edgekd import artifacts
    from edgekd.runtimes import RUNTIMES

    assert DEVICE_RUNTIMES == ("onnxruntime", "executorch")
    assert set(DEVICE_RUNTIMES) <= set(RUNTIMES.names()) and "torch" not in DEVICE_RUNTIMES
    assert all(a.runtime in DEVICE_RUNTIMES for a in artifacts.model_files())


def test_a_profile_survives_its_dict_form():
    """Device results embed profile.to_dict(); budgets that are not set (None) read back as not set."""
    p = profile_from_dict({"threads": 2, "cpu_affinity": [3, 1, 3], "budgets": {"max_size_bytes": 4e6}},
                          default_name="board")
    assert p.cpu_affinity == [1, 3] and p.budgets.max_latency_p90_ms is None
    again = profile_from_dict({k: v for k, v in p.to_dict().items() if k != "source"}, "results.json: profile")
    assert again == p


def test_load_by_path_and_user_folder(tmp_path, monkeypatch):
    f = tmp_path / "my-board.toml"
    f.write_text('arch = "arm64"\nthreads = 2\n[budgets]\nmax_latency_p90_ms = 3\n')
    p = load_profile(str(f))
    assert p.name == "my-board" and p.threads == 2 and p.budgets.max_latency_p90_ms == 3.0
    assert p.budgets.max_size_bytes is None
    monkeypatch.setenv("EDGEKD_DEVICES", str(tmp_path))
    assert load_profile("my-board").threads == 2
    assert "my-board" in [q.name for q in builtin_profiles()]


@pytest.mark.parametrize("text, needles", [
    ('thread = 2\n', ["unknown key 'thread'", "valid keys:", "threads"]),
    ('threads = "four"\n', ["threads must be an integer", "'four'"]),
    ('threads = 0\n', ["threads = 0 must lie in [1, 256]"]),
    ('precision = "int4"\n', ["precision = 'int4' is not one of int8, fp32"]),
    ('cpu_affinity = [-1]\n', ["cpu_affinity must be a list of CPU ids"]),
    ('precision = "fp32"\nmodel_format = "ort"\n', ["model_format = \"ort\" needs precision = \"int8\""]),
    ('[budgets]\nmax_latency_p90_ms = 0\n', ["budgets.max_latency_p90_ms must be a positive number", "got 0"]),
    ('[budgets]\nmax_size_bytes = -5\n', ["budgets.max_size_bytes must be a positive number"]),
    ('[budgets]\nmax_latency = 5\n', ["unknown key budgets.max_latency", "max_latency_p90_ms"]),
    ('budgets = 5\n', ["budgets must be a table"]),
    ('threads = \n', ["is not valid TOML"]),
])
def test_validation_errors_name_the_key(tmp_path, text, needles):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_profile(f)
    msg = str(e.value)
    assert str(f) in msg
    for n in needles:
        assert n in msg


def test_unknown_name_lists_profiles():
    with pytest.raises(ConfigError, match="unknown device profile 'rpi5'; valid: .*rpi4"):
        load_profile("rpi5")
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile("nowhere/board.toml")


def test_devices_command(capsys, tmp_path):
    import json

    from edgekd.cli import main

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "arch", "runtime"]
    for name in ("rpi4", "android-arm64", "jetson-orin-cpu", "x86-edge"):
        assert name in out
    assert main(["devices", "rpi4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["budgets"]["max_latency_p90_ms"] == 20.0
    (tmp_path / "bad.toml").write_text("threads = 0\n")
    assert main(["devices", str(tmp_path / "bad.toml")]) == 2
    assert "threads = 0 must lie in [1, 256]" in capsys.readouterr().err
