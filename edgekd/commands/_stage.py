"""What the single-stage commands (distill, export, quantize) share: the config a model was built
with, and writing one output file whole or not at all."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import EdgekdError, InputError, check_terminated

T = TypeVar("T")


def add_config_arguments(p: argparse.ArgumentParser,
                         config_help: str = "TOML build config (default: built-in defaults)",
                         example: str = "distill.epochs=0") -> None:
    """-c CONFIG and --set SECTION.KEY=VALUE, as every command that reads a build config takes them."""
    p.add_argument("-c", "--config", help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one config value, e.g. --set {example} (repeatable)")


CONFIG_METADATA_KEY = "edgekd.config"  # an ONNX file written by `edgekd export` carries its config here


def stored_config(model: Path, ck: dict | None = None) -> dict:
    """The build config stored with a model: in a student.pt (``ck``), in the metadata of an ONNX
    file from ``edgekd export``, or in the manifest of the build an ONNX file sits in; {} when
    there is none."""
    import json

    from ..files import MANIFEST, build_manifest

    if ck is not None:
        stored = ck.get("config", {})
    else:
        folder = model.resolve().parent
        manifest = build_manifest(folder) if (folder / MANIFEST).is_file() else None
        stored = (manifest or {}).get("config") or {}
        if not stored and model.suffix == ".onnx":
            try:
                import onnx

                meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
                stored = json.loads(meta.get(CONFIG_METADATA_KEY, "{}"))
            except Exception:  # not our file, or no metadata: no stored config
                stored = {}
    return stored if isinstance(stored, dict) else {}


def config_for(model: Path, user_cfg, overrides: list[str], stored: dict):
    """``user_cfg`` (from -c CONFIG, --set applied) when given; else the model's stored [data],
    [export] and [quantize] sections (the same split and calibration images as its build) with
    --set applied on top; else the defaults with --set."""
    from ..config import load_config

    if user_cfg is not None:
        return user_cfg
    from ..config import parse_override

    # a --set SECTION.preset asks for that preset's recipe: the stored section does not override it
    new_preset = {parse_override(o)[0] for o in overrides if parse_override(o)[1] == "preset"}
    base = {k: stored[k] for k in ("data", "export", "quantize")
            if isinstance(stored.get(k), dict) and k not in new_preset}
    return load_config(None, overrides, base=base, base_where=f"{model} (stored config)") if base \
        else load_config(None, overrides)


def store_config(onnx_path: Path, cfg) -> None:
    """Record the build config in an ONNX file's metadata (``edgekd quantize`` reads it back)."""
    import json

    import onnx

    m = onnx.load(str(onnx_path))
    m.metadata_props.add(key=CONFIG_METADATA_KEY, value=json.dumps(cfg.to_dict()))
    onnx.save(m, str(onnx_path))


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
        check_terminated()  # nothing made visible after a SIGTERM, even one dropped where it landed
        os.replace(tmp, target)
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None
    except EdgekdError as e:  # name the file the user asked for, not the temporary one
        raise type(e)(str(e).replace(str(tmp), str(target)).replace(tmp.name, target.name)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return rec
