"""What the single-stage commands (distill, export, quantize) share: the config a model was built
with, and writing one output file whole or not at all."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import InputError

T = TypeVar("T")


def add_config_arguments(p: argparse.ArgumentParser,
                         config_help: str = "TOML build config (default: built-in defaults)",
                         example: str = "distill.epochs=0") -> None:
    """-c CONFIG and --set SECTION.KEY=VALUE, as every command that reads a build config takes them."""
    p.add_argument("-c", "--config", help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one config value, e.g. --set {example} (repeatable)")


def stored_config(model: Path, ck: dict | None = None) -> dict:
    """The build config stored with a model: in a student.pt (``ck``), or in the manifest of the
    build an ONNX file sits in; {} when there is none."""
    from ..files import MANIFEST, build_manifest

    if ck is not None:
        stored = ck.get("config", {})
    else:
        manifest = build_manifest(model.resolve().parent) if (model.resolve().parent / MANIFEST).is_file() else None
        stored = (manifest or {}).get("config", {})
    return stored if isinstance(stored, dict) else {}


def config_for(model: Path, config: str | None, overrides: list[str], stored: dict):
    """``-c CONFIG`` when given, else the model's stored config (its [data], [export], [quantize]
    sections: the same split and calibration images as its build), else the defaults."""
    from ..config import from_dict, load_config

    if config:
        return load_config(config, overrides)
    cfg = load_config(None, overrides)
    if stored:
        base = from_dict({k: stored[k] for k in ("data", "export", "quantize") if k in stored},
                         f"{model} (stored config)")
        cfg.data, cfg.export, cfg.quantize = base.data, base.export, base.quantize
    return cfg


def check_output(target: str | Path, suffixes: tuple[str, ...]) -> Path:
    """Refuse, before any work, an output that is a folder, lies in a missing folder, has the wrong
    suffix, or is a file an edgekd build lists (replacing it would make that build contradict its
    manifest)."""
    from ..files import listed_in_build

    target = Path(target)
    if target.suffix not in suffixes:
        raise InputError(f"-o {target}: expected a {' or '.join(suffixes)} file name")
    if target.is_dir():
        raise InputError(f"-o {target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise InputError(f"-o {target}: the folder {target.parent} does not exist")
    if target.exists() and listed_in_build(target):
        raise InputError(f"-o {target} is a file of an edgekd build (its manifest.json lists it); "
                         "write elsewhere or rebuild with edgekd build")
    return target


def write_output(target: str | Path, suffixes: tuple[str, ...], produce: Callable[[Path], T]) -> T:
    """Run ``produce(tmp)`` to write a file beside ``target``, then rename it over ``target``: a
    failed or interrupted stage leaves ``target`` as it was (checked by :func:`check_output`)."""
    target = check_output(target, suffixes)
    tmp = target.parent / f".{target.stem}.partial-{os.getpid()}{target.suffix}"
    try:
        rec = produce(tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return rec
