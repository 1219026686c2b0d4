"""File helpers shared by the stages (no heavy imports: the device-results merge uses them too)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, missing: str) -> dict:
    """A JSON file's content; ``missing`` is the error when there is no such file, and a file that
    does not parse is an error naming it."""
    import json

    from .errors import InputError

    if not path.is_file():
        raise InputError(missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None


def write_text(target: Path, text: str) -> None:
    """Write a UTF-8 text file; failing to write it is an input error naming the file."""
    from .errors import InputError

    try:
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None


def move_into_place(tmp: Path, dest: Path) -> None:
    """Replace ``dest`` by the finished folder ``tmp`` (renames only); if the last rename fails,
    the previous ``dest`` is put back."""
    import os
    import shutil

    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)  # put the previous one back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
