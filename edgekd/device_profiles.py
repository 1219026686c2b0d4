"""Device profiles: where a student is deployed, how it runs there, and the budgets it must meet.

    profile = load_profile("rpi4")                 # a built-in profile (devices/rpi4.toml)
    profile = load_profile("my-board.toml")        # or your own file, by path
    profile.threads, profile.budgets.max_latency_p90_ms   # -> 4, 20.0
    profile.presets                                # -> ["int8-static-s8s8", ...]: INT8 candidates
    [p.name for p in builtin_profiles()]           # -> ["android-arm64", "jetson-orin-cpu", ...]
    host = load_profile("host")                    # this machine: ISA detected, presets chosen by it

A profile is a TOML file with the keys of :class:`DeviceProfile` at the top level and a
``[budgets]`` table (keys of :class:`edgekd.budgets.Budgets`); docs/devices.md shows one. Unknown
keys, wrong types, non-positive budgets and unsafe names raise :class:`ConfigError` naming the file
and the key (validated by :func:`edgekd.fields.check_table`; a name must match
:data:`PROFILE_NAME`: it becomes the default bundle folder name). The built-in profiles are the
repository's ``devices/`` folder (:func:`edgekd._data.data_dir`). Put your own profiles in any
folder and pass the path, or drop them into ``$EDGEKD_DEVICES`` (a folder; its profiles are listed
by ``edgekd devices`` and found by name like the built-in ones).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import artifacts
from ._data import data_dir
from .budgets import Budgets
from .errors import ConfigError
from .fields import check_table, spec
from .files import read_toml
from .runtimes import RUNTIMES

USER_DIR_ENV = "EDGEKD_DEVICES"

PRECISIONS = ("int8", "fp32")
MODEL_FORMATS = tuple(dict.fromkeys(a.format for a in artifacts.model_files()))  # onnx, ort, pte
HOST = "host"  # the profile name of the build machine itself (load_profile("host"))
# the CPU features that decide which INT8 kernels onnxruntime runs (and so which preset is fastest)
ISA_FEATURES = ("avx2", "avx512", "vnni", "neon", "dotprod")
# INT8 presets by CPU, best first (onnxruntime's guidance in quantize_static's docstring; measured on
# AVX2 in benchmarks/RESULTS.md): the host profile's candidates, by the first row its ISA matches
HOST_PRESETS = (
    (("x86_64", "vnni"), ["int8-static-u8s8-8bit", "int8-static-s8s8", "int8-static-u8s8"]),
    (("x86_64", ""), ["int8-static-u8s8", "int8-static-u8s8-percentile", "int8-static-s8s8"]),
    (("arm64", ""), ["int8-static-s8s8", "int8-static-u8s8-8bit"]),
    (("armv7", ""), ["int8-static-u8s8-8bit", "int8-static-s8s8"]),
)
# the runtimes a profile may name: those of edgekd.runtimes.RUNTIMES that run a deployable model
DEVICE_RUNTIMES = tuple(n for n in RUNTIMES.names() if n in {a.runtime for a in artifacts.model_files()})
# a profile's name names files (the default bundle folder bundle-NAME): a plain file name, no
# separators, no leading dot, nothing a shell or a file system treats specially
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def builtin_dir() -> Path:
    """The folder of the built-in profiles (the repository's devices/, or the installed copy)."""
    return data_dir("devices")


@dataclass(frozen=True)
class DeviceProfile:
    name: str = spec("", "profile name (default: the file name without .toml)")
    description: str = spec("", "one line: what class of device this is")
    arch: str = spec("arm64", "CPU architecture: arm64, x86_64, armv7", choices=("arm64", "x86_64", "armv7"))
    cpu: str = spec("", "the cores, e.g. '4x Cortex-A72 @ 1.5 GHz' (informative)")
    isa: list[str] = spec([], "CPU features that decide the INT8 kernels: avx2, avx512, vnni (AVX-512 VNNI "
                          "or AVX-VNNI), neon, dotprod (ARMv8.2 SDOT/UDOT)", choices=ISA_FEATURES,
                          normalize=lambda v: sorted(set(v)))
    presets: list[str] = spec([], "INT8 quantisation presets to build for this device, in order of "
                              "preference (`edgekd presets`); `edgekd build --device` builds each and "
                              "deploys the fastest that passes the gate; [] = quantize.preset")
    runtime: str = spec("onnxruntime", "inference runtime of the deployed model", choices=DEVICE_RUNTIMES)
    runtimes: list[str] = spec([], "every runtime the device may run (a build makes, measures and gates "
                               "artifacts for each; a bundle ships them): e.g. [\"onnxruntime\", "
                               "\"executorch\"]; [] = runtime alone", choices=DEVICE_RUNTIMES,
                               normalize=lambda v: list(dict.fromkeys(v)))
    execution_provider: str = spec("CPUExecutionProvider", "onnxruntime execution provider; the "
                                   "runner falls back to CPUExecutionProvider (and says so) where absent")
    threads: int = spec(1, "intra-op threads", min=1, max=256)
    cpu_affinity: list[int] = spec([], "CPU ids to pin the runner to (e.g. the big cores); [] = OS default",
                                   min=0, expect="a list of CPU ids (integers >= 0)",
                                   normalize=lambda ids: sorted(set(ids)))
    precision: str = spec("int8", "precision of the deployed model", choices=PRECISIONS)
    model_format: str = spec("onnx", "file format of the deployed model: onnx, ort (ORT format for a "
                             "reduced onnxruntime build; int8 only) or pte (ExecuTorch program, runtime = "
                             "\"executorch\")", choices=MODEL_FORMATS)
    input_size: int = spec(32, "side in pixels of the square uint8 image the model takes", min=8, max=4096)
    batch: int = spec(1, "images per call", min=1, max=4096)
    latency_runs: int = spec(200, "timed runs per model", min=10, max=1_000_000)
    warmup_runs: int = spec(20, "untimed runs before timing", min=0, max=100_000)
    budgets: Budgets = spec(Budgets, "[budgets] table: max_latency_p90_ms, max_size_bytes, "
                            "max_peak_memory_bytes")
    source: str = spec("", "file it was read from", internal=True, compare=False)

    @property
    def all_runtimes(self) -> tuple[str, ...]:
        """The runtimes the device runs: ``runtimes``, or ``runtime`` alone."""
        return tuple(self.runtimes) or (self.runtime,)

    @property
    def model_id(self) -> str:
        """The bundle / report model id of the deployed model: student_int8, student_int8_ort, ..."""
        return artifacts.deployed(self.precision, self.model_format).id

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        b = self.budgets
        parts = [f"p90 <= {b.max_latency_p90_ms:g} ms" if b.max_latency_p90_ms else "",
                 f"size <= {b.max_size_bytes / 1e6:g} MB" if b.max_size_bytes else "",
                 f"peak RSS <= {b.max_peak_memory_bytes / 1e6:g} MB" if b.max_peak_memory_bytes else ""]
        return ", ".join(p for p in parts if p) or "no budgets"


def profile_from_dict(raw: dict, where: str = "device profile", default_name: str = "") -> DeviceProfile:
    """Validate a profile table (as read from TOML). Errors name ``where`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a device profile must be a table of keys")
    values = check_table(raw, DeviceProfile, where)
    values.setdefault("name", default_name)
    if not values["name"]:
        raise ConfigError(f"{where}: name must not be empty")
    if not PROFILE_NAME.fullmatch(values["name"]):
        origin = "" if "name" in raw else " (taken from the file name; set name = \"...\" in the file)"
        raise ConfigError(f"{where}: name = {values['name']!r} is not a valid profile name{origin}: use "
                          "at most 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    profile = DeviceProfile(**values, source=where)
    _check_presets(profile, where)
    if profile.model_format == "ort" and profile.precision != "int8":
        raise ConfigError(f"{where}: model_format = \"ort\" needs precision = \"int8\" (edgekd converts "
                          "the INT8 model to the ORT format)")
    try:
        deployed_runtime = artifacts.deployed(profile.precision, profile.model_format).runtime
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if deployed_runtime != profile.runtime:
        raise ConfigError(f"{where}: model_format = {profile.model_format!r} runs in {deployed_runtime}, "
                          f"but runtime = {profile.runtime!r}")
    if profile.runtimes and profile.runtime not in profile.runtimes:
        raise ConfigError(f"{where}: runtimes = {profile.runtimes} does not hold runtime = "
                          f"{profile.runtime!r}, the deployed model's")
    return profile


def _check_presets(profile: DeviceProfile, where: str) -> None:
    from .presets import load_preset

    for name in profile.presets:
        try:
            preset = load_preset(name, "quantize")
        except ConfigError as e:
            raise ConfigError(f"{where}: presets: {e}") from None
        if preset.precision != "int8":
            raise ConfigError(f"{where}: presets: {name!r} makes {preset.precision} models; a device's "
                              "candidates are INT8 presets")
    if profile.presets and profile.precision != "int8":
        raise ConfigError(f"{where}: presets name INT8 candidates, but precision = {profile.precision!r}")


def host_isa() -> tuple[str, list[str]]:
    """(arch, ISA features of :data:`ISA_FEATURES`) of this machine, from /proc/cpuinfo's flags
    (Linux x86) or Features (Linux arm64); elsewhere the architecture's baseline."""
    arch = {"amd64": "x86_64", "x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), "armv7" if platform.machine().lower().startswith("arm") else "x86_64")
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    isa = {"avx2": "avx2" in flags, "avx512": "avx512f" in flags,
           "vnni": bool({"avx512_vnni", "avx_vnni"} & flags), "neon": arch == "arm64" or "neon" in flags
           or "asimd" in flags, "dotprod": "asimddp" in flags}
    return arch, [f for f in ISA_FEATURES if isa[f]]


def host_profile() -> DeviceProfile:
    """The build machine as a profile: its ISA detected, its INT8 candidates chosen by
    :data:`HOST_PRESETS`, onnxruntime on its cores (at most 4 threads), no budgets."""
    arch, isa = host_isa()
    presets = next(p for (a, feature), p in HOST_PRESETS if a == arch and (not feature or feature in isa))
    n = os.cpu_count() or 1
    return DeviceProfile(name=HOST, description=f"this machine ({arch}, {', '.join(isa) or 'baseline ISA'})",
                         arch=arch, cpu=platform.processor() or platform.machine(), isa=isa,
                         presets=list(presets), threads=min(n, 4), model_format="onnx", source="detected")


def same_cpu_class(profile: DeviceProfile) -> bool:
    """Whether latency measured on this machine speaks for ``profile``'s device: same architecture
    and the same answer for every ISA feature that picks onnxruntime's INT8 kernels. A profile that
    names no ISA features is taken at its architecture alone."""
    arch, isa = host_isa()
    if profile.arch != arch:
        return False
    return not profile.isa or set(profile.isa) == set(isa)


def read_profile_file(path: str | Path) -> DeviceProfile:
    """A profile from a .toml file (read with :func:`edgekd.files.read_toml`: regular files only,
    size-capped, no RecursionError)."""
    p = Path(path)
    missing = f"device profile {p} does not exist"
    raw = read_toml(p, missing)  # ConfigError: a profile is configuration
    return profile_from_dict(raw, str(p), default_name=p.stem)


def _profile_dirs() -> list[Path]:
    dirs = [builtin_dir()]
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
    if text == HOST:
        return host_profile()
    profiles = builtin_profiles()
    for prof in profiles:
        if prof.name == text:
            return prof
    raise ConfigError(f"unknown device profile {text!r}; valid: {', '.join(p.name for p in profiles)}, "
                      f"{HOST} (this machine), or the path of a .toml profile")


def device_budgets(raw: dict, profile: DeviceProfile, runtimes: tuple[str, ...] | None = None) -> dict:
    """A gate policy table with the device profile's budgets on the INT8 model of each runtime of
    the build (``runtimes``; default: the profile's), unless the table budgets that model itself:
    its size always, its latency and peak memory only where this machine speaks for the device
    (:func:`same_cpu_class`)."""
    budgets = raw.get("budgets", {})
    if not isinstance(budgets, dict):
        return raw
    b = profile.budgets
    here = same_cpu_class(profile)
    table = {"max_size_bytes": b.max_size_bytes, "max_latency_p90_ms": b.max_latency_p90_ms if here else None,
             "max_peak_memory_bytes": b.max_peak_memory_bytes if here else None}
    table = {k: v for k, v in table.items() if v is not None}
    added = {mid: table for mid in artifacts.gated_int8(runtimes or profile.all_runtimes) if mid not in budgets}
    return {**raw, "budgets": {**budgets, **added}} if table and added else raw


def build_runtimes(cfg) -> tuple[str, ...]:
    """The runtimes a build config makes artifacts for: ``export.runtimes`` and those of the
    ``deploy.device`` profile, in the registry's order."""
    profile = deploy_profile(cfg)
    wanted = set(cfg.export.runtimes) | set(profile.all_runtimes if profile else ())
    return tuple(r for r in artifacts.runtime_names() if r in wanted)


def deploy_profile(cfg) -> DeviceProfile | None:
    """The device profile a build config's ``deploy.device`` names (None: none)."""
    if not cfg.deploy.device:
        return None
    try:
        return load_profile(cfg.deploy.device)
    except ConfigError as e:
        raise ConfigError(f"deploy.device: {e}") from None


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
