"""Where edgekd's data folders are: the built-in device profiles and the export presets.

    data_dir("devices")    # -> Path(".../devices"): the built-in device profiles, *.toml
    data_dir("export")     # -> Path(".../export"): export presets

In the repository they are top-level folders (``devices/``, ``export/``); that is where a checkout
or an editable install (``pip install -e .``) reads them. A wheel ships them inside this package
(``edgekd/_data/devices/``: pyproject.toml maps the package ``edgekd._data.devices`` to the folder
``devices``), where an installed edgekd reads them. A name whose folder exists in neither place
gives the package path (a folder that does not exist: no files).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIRS = ("devices", "export")

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE.parents[1]  # the repository, when edgekd runs from its source tree


def data_dir(name: str) -> Path:
    """The folder of data set ``name`` (one of :data:`DATA_DIRS`): the source tree's first, then
    the installed package's."""
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data folder {name!r}; valid: {', '.join(DATA_DIRS)}")
    source = _SOURCE_ROOT / name
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and source.is_dir():
        return source
    return _PACKAGE / name
