"""Packaging: the data folders at the top of the repository (devices/, export/) are found from the
source tree and shipped in a wheel; pyproject.toml lists every package.

(A real wheel and an editable install were checked by hand in throwaway venvs; these tests keep the
configuration that makes them work in line with the source tree.)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edgekd._data import DATA_DIRS, data_dir

ROOT = Path(__file__).resolve().parents[1]


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_data_dirs_resolve_to_the_source_tree():
    assert data_dir("devices") == ROOT / "devices"
    assert sorted(p.name for p in data_dir("devices").glob("*.toml")) == [
        "android-arm64.toml", "jetson-orin-cpu.toml", "rpi4.toml", "x86-edge.toml"]
    with pytest.raises(ValueError, match="unknown data folder 'presets'; valid: devices, export"):
        data_dir("presets")


def test_every_package_is_listed():
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgekd").rglob("__init__.py"))
    listed = setuptools_config()["packages"]
    assert sorted(p for p in listed if not p.startswith("edgekd._data.")) == found


@pytest.mark.parametrize("name", DATA_DIRS)
def test_every_data_folder_ships_in_the_wheel(name):
    """A data folder that exists in the repository is mapped into edgekd._data and its files are
    package data (add its three lines to pyproject.toml when you add the folder)."""
    if not (ROOT / name).is_dir():
        pytest.skip(f"no {name}/ folder in this repository yet")
    cfg, package = setuptools_config(), f"edgekd._data.{name}"
    assert package in cfg["packages"]
    assert cfg["package-dir"][package] == name
    patterns = cfg["package-data"][package]
    files = {p for pattern in patterns for p in (ROOT / name).glob(pattern)}
    assert files == {p for p in (ROOT / name).iterdir() if p.is_file()}, "files that would not ship"
