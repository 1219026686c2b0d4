"""The on-disk cache: one root folder, one folder per kind of entry, one way to read and write.

    root = cache_root("")                          # ~/.cache/edgekd ($XDG_CACHE_HOME/edgekd); "none" -> None
    path = entry(root, "perturbed", "fog-s3-1a2b....npy")
    arr = load_array(path, lambda a: a.dtype == np.uint8)   # None: absent, damaged or rejected
    save_array(path, arr)                          # atomic; a read-only cache never fails a build

Kinds: ``perturbed`` (perturbed test sets, keyed by the clean images, perturbation, severity and
seed; in ``perturbed/predictions``, the teacher's predicted classes on each, keyed also by the
teacher: ``robustness.sweep_predictions``) and ``teacher-outputs`` (the teacher's logits on the
training images, keyed by what the teacher computes, ``teachers.model_key``, the images and the
view) and ``calibration`` (INT8 calibration ranges, JSON, keyed by the fp32 model, the calibration
images and the calibrator). Entries are content-addressed: a stale entry is never read, so the
cache can be deleted at any time. The ``[cache] dir`` config key sets the root.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

KINDS = ("perturbed", "teacher-outputs", "calibration")


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def cache_root(value: str) -> Path | None:
    """The cache root a config value names: "" = the default, "none" = no cache."""
    if value == "none":
        return None
    return Path(value) if value else default_root()


def folder(root: Path | None, kind: str) -> Path | None:
    if kind not in KINDS:
        raise ValueError(f"cache kind must be one of {KINDS}, got {kind!r}")
    return None if root is None else root / kind


def entry(root: Path | None, kind: str, name: str) -> Path | None:
    d = folder(root, kind)
    return None if d is None else d / name


def load_array(path: Path | None, accept: Callable[[np.ndarray], bool] = lambda a: True) -> np.ndarray | None:
    """The array at ``path`` when it exists, loads (no pickles) and ``accept`` says it fits; else
    None (a damaged or truncated entry is recomputed by the caller)."""
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return arr if accept(arr) else None


def save_array(path: Path | None, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` through a temporary file and a rename (readers never see half an
    entry); failures are ignored: the cache is an optimisation, a read-only home must not fail a build."""
    if path is None:
        return
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}.npy")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, arr)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


PAGE_BYTES = 4096  # the .npy header of ``save_aligned``'s files: the data starts on a page boundary


def npy_header(shape: tuple[int, ...], dtype) -> bytes:
    """A .npy (format 1.0) header of a C-order array, padded to PAGE_BYTES: ``np.load`` reads the
    file like one ``np.save`` wrote (whose header pads to 64 bytes)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(int(n) for n in shape)}).encode("latin1")
    magic = np.lib.format.magic(1, 0)
    length = PAGE_BYTES - len(magic) - 2
    return magic + struct.pack("<H", length) + text.ljust(length - 1) + b"\n"


def save_aligned(path: Path | None, buf: memoryview, nbytes: int) -> None:
    """Write a file whose bytes are the first ``nbytes`` of ``buf`` (page-aligned memory, a whole
    number of pages long; for a .npy file, ``npy_header`` then the data) like ``save_array``:
    through a temporary file and a rename, failures ignored. Written with O_DIRECT where the file
    system takes it (Linux; not tmpfs): the bytes go from ``buf`` to the disk without a copy into
    the page cache, whose fresh pages cost this VM about 2 ms per MB (benchmarks/RESULTS.md,
    issue 21, eighth pass); elsewhere an ordinary write."""
    if path is None:
        return
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}{path.suffix}")

    def write(direct: int) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | direct, 0o644)
        try:
            view = buf if direct else buf[:nbytes]
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
            if direct:
                os.ftruncate(fd, nbytes)  # the last page was written whole
        finally:
            os.close(fd)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(getattr(os, "O_DIRECT", 0))
        except OSError as e:  # EINVAL: no O_DIRECT on this file system (tmpfs), or not with this alignment
            if e.errno != errno.EINVAL:
                raise
            write(0)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
