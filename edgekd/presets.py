"""Export presets: one TOML file each in ``export/`` -- how an artifact is exported or quantised.

    load_preset("int8-static", "quantize")      # -> Preset(name, precision "int8", table {...})
    load_preset("boards/my-int8.toml", "quantize")   # or your own file, by path
    [p.name for p in builtin_presets()]          # -> ["fp16", "fp32", "int8-dynamic", "int8-static-s8s8", ...]

A preset file has ``name``, ``description``, ``precision`` and one table named after the config
section it fills: ``[export]`` (precision fp32: opset, parity checks) or ``[quantize]`` (precision
int8 or fp16: method, calibration method and size, activation type, per-channel, reduce_range).
The build config picks one per section (``export.preset``, ``quantize.preset``); keys the config
sets itself win over the preset's. A device profile lists the INT8 presets its CPU runs best
(``presets = [...]``); ``edgekd build --device PROFILE`` builds each of them. Adding a preset is
adding a file: docs/extending.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._data import data_dir
from .errors import ConfigError
from .files import read_toml

# config section -> the precisions of the models a preset of that section makes
SECTIONS = {"export": ("fp32",), "quantize": ("int8", "fp16")}
_KEYS = ("name", "description", "precision")
# renamed presets, still found by their old name for one release (stored configs name them)
RENAMED = {"int8-static": "int8-static-s8s8"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    precision: str
    section: str
    table: dict
    source: str


def _read(path: Path) -> Preset:
    raw = read_toml(path, f"export preset {path} does not exist")
    where = str(path)
    unknown = [k for k in raw if k not in (*_KEYS, *SECTIONS)]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join((*_KEYS, *SECTIONS))}")
    for key in _KEYS:
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
    tables = [s for s in SECTIONS if s in raw]
    if len(tables) != 1 or not isinstance(raw[tables[0]], dict):
        raise ConfigError(f"{where}: a preset holds exactly one table, [export] or [quantize]")
    section = tables[0]
    if raw["precision"] not in SECTIONS[section]:
        raise ConfigError(f"{where}: precision = {raw['precision']!r}, but a [{section}] preset makes "
                          f"{' or '.join(SECTIONS[section])} models")
    method = raw[section].get("method", "static") if section == "quantize" else None
    if section == "quantize" and (raw["precision"] == "fp16") != (method == "fp16"):
        raise ConfigError(f"{where}: precision = {raw['precision']!r} does not go with method = {method!r} "
                          "(fp16 models come from method = \"fp16\", int8 ones from static or dynamic)")
    return Preset(raw["name"], raw["description"], raw["precision"], section, dict(raw[section]), where)


def builtin_presets() -> list[Preset]:
    d = data_dir("export")
    return sorted((_read(p) for p in sorted(d.glob("*.toml"))), key=lambda p: p.name) if d.is_dir() else []


def load_preset(name_or_path: str, section: str | None) -> Preset:
    """The preset ``name_or_path`` (a built-in name, or the path of a .toml file) for config
    section ``section`` (None: either); ConfigError listing the valid presets otherwise."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        preset = _read(Path(text))
    else:
        text = RENAMED.get(text, text)
        found = [p for p in builtin_presets() if p.name == text]
        if not found:
            valid = ", ".join(p.name for p in builtin_presets() if section in (None, p.section))
            raise ConfigError(f"unknown {section or 'export'} preset {text!r}; valid: {valid} (or the "
                              "path of a .toml preset)")
        preset = found[0]
    if section is not None and preset.section != section:
        raise ConfigError(f"{text!r} is an [{preset.section}] preset ({preset.precision} models); "
                          f"{section}.preset needs a [{section}] one")
    return preset
