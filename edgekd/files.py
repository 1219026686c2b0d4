"""File helpers shared by the stages (no heavy imports: the device-results merge uses them too).

Every file edgekd reads from a user goes through :func:`check_regular` first (a FIFO or a device
would block or never end), every JSON / TOML document through :func:`read_json` /
:func:`read_toml` (size cap, no RecursionError), and every file it writes or replaces through
:func:`write_atomic` (temp file in the same folder, then one rename: a reader sees the old file or
the new one, never half of one).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from .errors import check_terminated

# JSON / TOML documents edgekd reads (configs, policies, profiles, manifests, device results) are
# small; a bigger one is refused before it is read
MAX_DOCUMENT_BYTES = 64 << 20


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "a special file"


def check_regular(path: str | Path, key: str, folder_ok: bool = False) -> Path:
    """``path`` if it is a regular file (or, with ``folder_ok``, a folder), following symlinks;
    otherwise an InputError that says what it is: missing, a device, a FIFO, a socket, a folder.
    Call it before opening anything a user names: opening a FIFO blocks, reading a device never
    ends."""
    from .errors import InputError

    p = Path(path)
    what = "file or folder" if folder_ok else "file"
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise InputError(f"{key} = {str(p)!r}: {what} does not exist") from None
    except OSError as e:
        raise InputError(f"{key} = {str(p)!r}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
        return p
    if stat.S_ISDIR(mode):
        raise InputError(f"{key} = {str(p)!r}: is a folder, not a file")
    raise InputError(f"{key} = {str(p)!r}: not a regular {what} ({_kind(mode)})")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_document(path: Path, missing: str, kind: str, error: type | None = None) -> str:
    """The text of a small document (JSON / TOML) edgekd reads from a user: ``missing`` is the
    error when there is no such file; a special file, one over MAX_DOCUMENT_BYTES or one that is
    not UTF-8 is an error naming it (``error``: the exception class, InputError by default)."""
    from .errors import InputError

    error = error or InputError
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise error(missing)
    try:
        check_regular(path, kind)
    except InputError as e:
        raise error(str(e)) from None
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise error(f"{path}: {size / 2**20:.0f} MiB is too big for a {kind} "
                         f"(at most {MAX_DOCUMENT_BYTES >> 20} MiB)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None


def read_json(path: Path, missing: str) -> dict:
    """A JSON object from a file; ``missing`` is the error when there is no such file, and a file
    that does not parse (or nests too deep to parse) is an error naming it."""
    import json

    from .errors import InputError

    text = read_document(path, missing, "JSON file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object ({{...}}), found {type(doc).__name__}")
    return doc


def parse_toml(text: str, where: str) -> dict:
    """Parse TOML text; a syntax error or a document nested too deeply is a ConfigError naming
    ``where`` (TOML files are configs, policies and device profiles)."""
    import tomllib

    from .errors import ConfigError

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where} is not valid TOML: nested too deeply") from None


def read_toml(path: Path, missing: str) -> dict:
    """A TOML document from a file (see :func:`read_document` and :func:`parse_toml`); every error
    is a ConfigError."""
    from .errors import ConfigError

    return parse_toml(read_document(path, missing, "TOML file", ConfigError), str(path))


def write_atomic(target: str | Path, data: str | bytes) -> None:
    """Write ``target`` whole or not at all: the bytes go to a temporary file beside it, are
    flushed to disk, then renamed over it. On failure (a full disk, a read-only folder) the
    temporary file is removed, ``target`` is as it was, and the error names the file. Not after a
    SIGTERM (``errors.check_terminated``)."""
    from .errors import InputError

    check_terminated()
    target = Path(target)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None


def write_text(target: Path, text: str) -> None:
    """Write a UTF-8 text file atomically; failing to write it is an input error naming the file."""
    write_atomic(target, text)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


def move_into_place(tmp: Path, dest: Path) -> None:
    """Replace ``dest`` by the finished folder ``tmp``. Where the system can, the two are swapped
    in one atomic rename, so ``dest`` is always either the old or the new folder, even if the
    process is killed; elsewhere two renames (and :func:`recover_interrupted` puts the old one back
    if the process died between them). Not after a SIGTERM (``errors.check_terminated``: raises
    Terminated, ``dest`` untouched)."""
    import shutil

    check_terminated()
    if not dest.exists():
        tmp.rename(dest)
        return
    if _rename_exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous folder
        return
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        old.rename(dest)  # put the previous one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(dest: Path) -> list[str]:
    """Clean up after edgekd processes that died while writing ``dest``: remove their
    ``.NAME.partial-PID`` and ``.NAME.tmp-PID`` leftovers, and put back a ``.NAME.old-PID`` folder
    if ``dest`` itself is missing (killed between the two renames of a move). Leftovers of live
    processes are left alone. Returns what was done, for the log."""
    import shutil

    done: list[str] = []
    parent = dest.parent
    if not parent.is_dir():
        return done
    for p in sorted(parent.glob(f".{dest.name}.*-*")):
        kind, _, pid = p.name[len(dest.name) + 2:].rpartition("-")
        if kind not in ("partial", "old", "tmp") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not dest.exists() and not dest.is_symlink():
            p.rename(dest)
            done.append(f"restored {dest} from {p.name}")
        else:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            done.append(f"removed {p.name}")
    return done


# --- build folders -------------------------------------------------------------------------------

MANIFEST = "manifest.json"
# the marker that makes a manifest.json an edgekd build's (a browser extension has one too)
BUILD_FORMAT = "edgekd-build"


def build_manifest(folder: Path) -> dict | None:
    """The manifest of the edgekd build in ``folder``, or None when ``folder`` is not one: its
    manifest.json must be a regular file holding a JSON object with ``format = "edgekd-build"``
    (or, written before the marker existed, ``schema_version``, ``edgekd_version`` and ``config``)
    and a ``files`` table."""
    import json

    path = Path(folder) / MANIFEST
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) or path.stat().st_size > MAX_DOCUMENT_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        return None
    legacy = doc.get("schema_version") == 1 and "edgekd_version" in doc and "config" in doc
    return doc if doc.get("format") == BUILD_FORMAT or legacy else None


def unlisted_entries(folder: Path, manifest: dict) -> list[str]:
    """Names in ``folder`` that its build manifest does not list (what edgekd did not write)."""
    listed = set(manifest.get("files", {})) | {MANIFEST}
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in listed or not p.is_file()
                  or p.is_symlink())


def listed_in_build(path: Path) -> bool:
    """True when ``path`` is a file of an edgekd build (its folder's manifest lists it, or it is
    the manifest): replacing it would make the build contradict its manifest."""
    path = Path(path).resolve()
    manifest = build_manifest(path.parent)
    return manifest is not None and (path.name == MANIFEST or path.name in manifest["files"])


def replace_build_files(out_dir: Path, files: dict[Path, str]) -> None:
    """Replace files of the build in ``out_dir`` (``files``: paths inside it -> new text; each
    written with :func:`write_atomic`), then its manifest.json, last and atomically,
    with their new sha256 and size: the build never contradicts its manifest. A folder without an
    edgekd manifest just gets the files."""
    import json

    out_dir = Path(out_dir)
    manifest = build_manifest(out_dir)
    written = []
    try:
        for path, text in files.items():
            write_atomic(path, text)
            written.append(Path(path))
    finally:  # even after a failed write: the files already replaced are recorded
        if manifest is not None and written:
            for p in written:
                manifest["files"][p.name] = {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
            write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


# --- messages about files that would not load ---------------------------------------------------

# sentences of torch / numpy load errors that advise loading unsafely: never shown to a user
_UNSAFE_ADVICE = ("weights_only", "allow_pickle", "safe_globals", "trust", "warnings above",
                  "If you are seeing", "internal miniz error", "Please")


def load_error_reason(e: BaseException) -> str:
    """Why torch / numpy could not load a file, in a few words, without their advice to load it
    unsafely (``weights_only=False``, ``allow_pickle=True``) or to allowlist the pickled classes.
    Every load error a user sees goes through this."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch bolds part of its advice
    if "Object arrays cannot be loaded" in text:  # numpy's allow_pickle refusal
        return "it holds Python objects (object arrays), which edgekd does not load"
    prefix = type(e).__name__
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True) refused a pickled object
        prefix, text = "it holds more than tensors", text.split("WeightsUnpickler error:", 1)[1]
    sentences = [t.strip() for t in re.split(r"(?<=[.!?])\s+|\n", text) if t.strip()]
    kept = [t for t in sentences if not any(word in t for word in _UNSAFE_ADVICE)]
    return f"{prefix}: {kept[0].rstrip('.')[:200]}" if kept else prefix
