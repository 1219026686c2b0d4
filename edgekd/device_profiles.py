"""Device profiles: where a student is deployed, how it runs there, and the budgets it must meet.

    profile = load_profile("rpi4")                 # a built-in profile (edgekd/devices/rpi4.toml)
    profile = load_profile("my-board.toml")        # or your own file, by path
    profile.threads, profile.budgets.max_latency_p90_ms   # -> 4, 20.0
    [p.name for p in builtin_profiles()]           # -> ["android-arm64", "jetson-orin-cpu", ...]

A profile is a TOML file with the keys of :class:`DeviceProfile` at the top level and a
``[budgets]`` table (keys of :class:`DeviceBudgets`); docs/devices.md shows one. Unknown keys, wrong
types, non-positive budgets and unsafe names raise :class:`ConfigError` naming the file and the key
(a name must match :data:`PROFILE_NAME`: it becomes the default bundle folder name). Put your own
profiles in any folder and pass the path, or drop them into ``$EDGEKD_DEVICES`` (a folder; its
profiles are listed by ``edgekd devices`` and found by name like the built-in ones).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import read_toml

BUILTIN_DIR = Path(__file__).parent / "devices"
USER_DIR_ENV = "EDGEKD_DEVICES"

PRECISIONS = ("int8", "fp32")
MODEL_FORMATS = ("onnx", "ort")
RUNTIMES = ("onnxruntime",)
# a profile's name names files (the default bundle folder bundle-NAME): a plain file name, no
# separators, no leading dot, nothing a shell or a file system treats specially
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _f(default: Any, help: str, **meta: Any) -> Any:
    meta = {"help": help, **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceBudgets:
    """What the deployed model must meet on the device; None = not checked."""

    max_latency_p90_ms: float | None = _f(None, "90th-percentile latency of one call at the "
                                          "profile's batch, in ms")
    max_size_bytes: float | None = _f(None, "model file size in bytes")
    max_peak_memory_bytes: float | None = _f(None, "peak resident memory of the process running "
                                             "the model (python + numpy + onnxruntime + model), bytes")


@dataclass(frozen=True)
class DeviceProfile:
    name: str = _f("", "profile name (default: the file name without .toml)")
    description: str = _f("", "one line: what class of device this is")
    arch: str = _f("arm64", "CPU architecture: arm64, x86_64, armv7", choices=("arm64", "x86_64", "armv7"))
    cpu: str = _f("", "the cores, e.g. '4x Cortex-A72 @ 1.5 GHz' (informative)")
    runtime: str = _f("onnxruntime", "inference runtime", choices=RUNTIMES)
    execution_provider: str = _f("CPUExecutionProvider", "onnxruntime execution provider; the "
                                 "runner falls back to CPUExecutionProvider (and says so) where absent")
    threads: int = _f(1, "intra-op threads", min=1, max=256)
    cpu_affinity: list[int] = _f([], "CPU ids to pin the runner to (e.g. the big cores); [] = OS default")
    precision: str = _f("int8", "precision of the deployed model", choices=PRECISIONS)
    model_format: str = _f("onnx", "file format of the deployed model: onnx, or ort (ORT format for a "
                           "reduced onnxruntime build; int8 only)", choices=MODEL_FORMATS)
    input_size: int = _f(32, "side in pixels of the square uint8 image the model takes", min=8, max=4096)
    batch: int = _f(1, "images per call", min=1, max=4096)
    latency_runs: int = _f(200, "timed runs per model", min=10, max=1_000_000)
    warmup_runs: int = _f(20, "untimed runs before timing", min=0, max=100_000)
    budgets: DeviceBudgets = field(default_factory=DeviceBudgets,
                                   metadata={"help": "[budgets] table: max_latency_p90_ms, "
                                             "max_size_bytes, max_peak_memory_bytes"})
    source: str = field(default="", compare=False, metadata={"help": "file it was read from"})

    @property
    def model_id(self) -> str:
        """The bundle / report model id of the deployed model: student_int8, student_int8_ort, ..."""
        from .artifacts import deployed

        return deployed(self.precision, self.model_format).id

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        b = self.budgets
        parts = [f"p90 <= {b.max_latency_p90_ms:g} ms" if b.max_latency_p90_ms else "",
                 f"size <= {b.max_size_bytes / 1e6:g} MB" if b.max_size_bytes else "",
                 f"peak RSS <= {b.max_peak_memory_bytes / 1e6:g} MB" if b.max_peak_memory_bytes else ""]
        return ", ".join(p for p in parts if p) or "no budgets"


_PROFILE_FIELDS = {f.name: f for f in fields(DeviceProfile) if f.name not in ("budgets", "source")}
_BUDGET_FIELDS = {f.name: f for f in fields(DeviceBudgets)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(where: str, key: str, value: Any, f) -> Any:
    meta, kind = f.metadata, type(f.default) if f.default is not None else None
    if f.name == "cpu_affinity":
        if not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value):
            raise ConfigError(f"{where}: {key} must be a list of CPU ids (integers >= 0), got {value!r}")
        return sorted(set(value))
    if kind is int:
        if not _is_int(value):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        if not meta["min"] <= value <= meta["max"]:
            raise ConfigError(f"{where}: {key} = {value} must lie in [{meta['min']}, {meta['max']}]")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: {key} = {value!r} is not one of {', '.join(meta['choices'])}")
    return value


def profile_from_dict(raw: dict, where: str = "device profile", default_name: str = "") -> DeviceProfile:
    """Validate a profile table (as read from TOML). Errors name ``where`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a device profile must be a table of keys")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "budgets":
            values["budgets"] = _budgets(value, where)
        elif key in _PROFILE_FIELDS:
            values[key] = _check(where, key, value, _PROFILE_FIELDS[key])
        else:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: "
                              f"{', '.join([*_PROFILE_FIELDS, 'budgets'])}")
    values.setdefault("name", default_name)
    if not values["name"]:
        raise ConfigError(f"{where}: name must not be empty")
    if not PROFILE_NAME.fullmatch(values["name"]):
        origin = "" if "name" in raw else " (taken from the file name; set name = \"...\" in the file)"
        raise ConfigError(f"{where}: name = {values['name']!r} is not a valid profile name{origin}: use "
                          "at most 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    profile = DeviceProfile(**values, source=where)
    if profile.model_format == "ort" and profile.precision != "int8":
        raise ConfigError(f"{where}: model_format = \"ort\" needs precision = \"int8\" (edgekd converts "
                          "the INT8 model to the ORT format)")
    return profile


def _budgets(value: Any, where: str) -> DeviceBudgets:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: budgets must be a table with keys {', '.join(_BUDGET_FIELDS)}")
    out = {}
    for key, v in value.items():
        if key not in _BUDGET_FIELDS:
            raise ConfigError(f"{where}: unknown key budgets.{key}; valid budget keys: "
                              f"{', '.join(_BUDGET_FIELDS)}")
        if v is False:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
            raise ConfigError(f"{where}: budgets.{key} must be a positive number (or false for no "
                              f"budget), got {v!r}")
        out[key] = float(v)
    return DeviceBudgets(**out)


def read_profile_file(path: str | Path) -> DeviceProfile:
    """A profile from a .toml file (read with :func:`edgekd.files.read_toml`: regular files only,
    size-capped, no RecursionError)."""
    p = Path(path)
    missing = f"device profile {p} does not exist"
    raw = read_toml(p, missing)  # ConfigError: a profile is configuration
    return profile_from_dict(raw, str(p), default_name=p.stem)


def _profile_dirs() -> list[Path]:
    dirs = [BUILTIN_DIR]
    user = os.environ.get(USER_DIR_ENV)
    if user:
        dirs.insert(0, Path(user))  # a user's profile of the same name wins
    return dirs


def builtin_profiles() -> list[DeviceProfile]:
    """Every profile found by name: ``$EDGEKD_DEVICES/*.toml`` first, then the built-in ones."""
    seen: dict[str, DeviceProfile] = {}
    for d in _profile_dirs():
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            prof = read_profile_file(p)
            seen.setdefault(prof.name, prof)
    return sorted(seen.values(), key=lambda p: p.name)


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (``rpi4``) or by path (``boards/my-board.toml``).

    Unknown names raise :class:`ConfigError` listing the profiles that exist.
    """
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        return read_profile_file(text)
    profiles = builtin_profiles()
    for prof in profiles:
        if prof.name == text:
            return prof
    raise ConfigError(f"unknown device profile {text!r}; valid: {', '.join(p.name for p in profiles)} "
                      "(or the path of a .toml profile)")


def profile_table(profiles: list[DeviceProfile]) -> str:
    """``edgekd devices``: one row per profile."""
    rows = [["name", "arch", "runtime / EP", "threads", "precision", "input", "budgets"]]
    for p in profiles:
        ep = p.execution_provider.removesuffix("ExecutionProvider")
        pin = f" pin {','.join(map(str, p.cpu_affinity))}" if p.cpu_affinity else ""
        rows.append([p.name, p.arch, f"{p.runtime} / {ep}", f"{p.threads}{pin}",
                     f"{p.precision} {p.model_format}", f"{p.batch}x{p.input_size}x{p.input_size}",
                     p.summary()])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
