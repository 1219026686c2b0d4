"""Hostile and careless data (issue 16, classes 2, 3, 9 and 10): special files, small inputs that
would exhaust the machine, zero-size images and archive member names. Every case is refused with
one sentence naming the file or member (InputError, exit 2), or ignored as a plain folder would be;
none trains anything.

Cases that hang or exhaust memory when they regress (a FIFO, a device, a label of 10**9) run in a
child process with a timeout and a memory limit, so a regression fails instead of hanging."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgekd.data as data
import edgekd.imagefiles as imagefiles
from edgekd.config import load_config
from edgekd.data import load_dataset
from edgekd.errors import InputError

_CHILD = """
import resource, sys
from edgekd.config import load_config  # validating a config imports torch (the loss registry)
from edgekd.data import load_dataset
from edgekd.errors import InputError
cfg = load_config(None, sys.argv[1:])
# 3 GiB beyond what is mapped now: a runaway read or allocation by the loader dies here, not in
# the machine's OOM killer
mapped = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024
limit = mapped + (3 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    ds = load_dataset(cfg.data)
except InputError as e:
    print("InputError:", e)
else:
    print("loaded", len(ds.train) + len(ds.val) + len(ds.test), "images of", ds.classes)
"""


def load_elsewhere(*overrides: str, timeout: float = 60) -> str:
    """load_dataset in a child process (3 GiB address space, ``timeout`` seconds); its stdout.
    A load that blocks or reads forever raises subprocess.TimeoutExpired (the test fails)."""
    r = subprocess.run([sys.executable, "-c", _CHILD, "data.calib_samples=2", *overrides],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def png_bytes(k: int, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30 * k, 100, 200 - 30 * k)).save(buf, "PNG")
    return buf.getvalue()


def make_tree(root: Path, classes=("cat", "dog"), per_class: int = 4) -> Path:
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(png_bytes(k))
    return root


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A zip or tar(.gz) holding exactly ``members`` (names as given, however odd)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, raw in members.items():
                z.writestr(name, raw)
    else:
        with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as t:
            for name, raw in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(raw)
                t.addfile(info, io.BytesIO(raw))
    return path


def class_members(classes=("cat", "dog"), per_class: int = 4, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}.png": png_bytes(k) for k, c in enumerate(classes) for i in range(per_class)}


def folder_cfg(path: Path, *extra: str):
    return load_config(None, ['data.name="imagefolder"', f'data.path="{path}"', "data.calib_samples=2",
                              *extra]).data


def npz_cfg(path: Path, *extra: str):
    return load_config(None, ['data.name="npz"', f'data.path="{path}"', "data.calib_samples=2",
                              *extra]).data


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
needs_dev = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")


# --- 2. special files --------------------------------------------------------------------------

@needs_fifo
@needs_dev
@pytest.mark.parametrize("name, key, special", [
    ("imagefolder", "path", "fifo"),  # zipfile.is_zipfile would block on it forever
    ("imagefolder", "path", "/dev/zero"),  # ... and read this until memory runs out
    ("imagefolder", "path", "/dev/urandom"),
    ("npz", "path", "fifo"),
    ("npz", "path", "/dev/zero"),
    ("imagefolder", "test_path", "fifo"),
    ("npz", "test_path", "/dev/urandom"),
])
def test_special_files_as_data_paths_are_refused_before_opening(tmp_path, name, key, special):
    if special == "fifo":
        special = str(tmp_path / "pipe")
        os.mkfifo(special)
    paths = {"path": special}
    if key == "test_path":  # a good training set, a special test set
        if name == "npz":
            np.savez(tmp_path / "d.npz", x=np.zeros((8, 32, 32, 3), np.uint8), y=np.arange(8) % 2)
            paths = {"path": str(tmp_path / "d.npz"), "test_path": special}
        else:
            paths = {"path": str(make_tree(tmp_path / "imgs")), "test_path": special}
    out = load_elsewhere(f'data.name="{name}"', *(f'data.{k}="{v}"' for k, v in paths.items()))
    kind = "a FIFO (named pipe)" if "pipe" in special else "a character device"
    assert out.startswith(f"InputError: data.{key} = {special!r}: not a regular file")
    assert kind in out and "does not exist" not in out


@needs_fifo
@needs_dev
def test_special_entries_inside_an_image_folder_are_skipped_unopened(tmp_path):
    root = make_tree(tmp_path / "imgs")
    os.mkfifo(root / "cat" / "9.png")  # opening it would block
    (root / "dog" / "9.png").symlink_to("/dev/zero")  # reading it would never end
    (root / "dog" / "8.png").symlink_to(root / "cat" / "0.png")  # a link to an image is followed
    (root / "dog" / "7.png").symlink_to(tmp_path / "gone.png")  # a broken link is skipped
    out = load_elsewhere('data.name="imagefolder"', f'data.path="{root}"')
    assert out == "loaded 9 images of ['cat', 'dog']"


# --- 3. unbounded resources from small inputs ----------------------------------------------------

def test_a_huge_label_is_refused_without_allocating_classes(tmp_path):
    """One label of 10**9 made 10**9 class names (over 6 GB); now the labels are checked first."""
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 32, 32, 3), np.uint8), y=np.array([0, 1, 10**9]))
    out = load_elsewhere('data.name="npz"', f'data.path="{tmp_path / "d.npz"}"')
    assert out == (f"InputError: data.path = {str(tmp_path / 'd.npz')!r}: label 1000000000 is too "
                   "large; without a 'classes' array the labels must be 0 .. 9999 (at most 10,000 "
                   "classes)")


def test_an_npz_array_header_declaring_a_huge_shape_is_an_input_error(tmp_path):
    """x.npy claims 10**9 images of 32 x 32 x 3 (3 TB) and holds none: MemoryError was exit 3."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**9, 32, 32, 3)})
    y = io.BytesIO()
    np.save(y, np.zeros(3, int))
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.npy", header.getvalue())  # the header (with numpy's magic), no data
        z.writestr("y.npy", y.getvalue())
    out = load_elsewhere('data.name="npz"', f'data.path="{tmp_path / "d.npz"}"')
    assert out.startswith(f"InputError: data.path = {str(tmp_path / 'd.npz')!r}: "), out
    # streamed (3 TB is over data.memory_mb), the header alone is read: the labels do not match it
    assert ("too large to load into memory" in out or "not a readable .npz file (EOF" in out
            or "'y' must hold one non-negative integer label per image (1000000000)" in out), out


@pytest.mark.parametrize("extra, match", [
    ({}, r"label 18446744073709551615 is too large"),  # wrapped to -1 by astype(int64) before
    ({"classes": np.array(["a", "b", "c"])}, r"labels go up to 18446744073709551615 but 'classes' "
                                             r"names only 3"),
    ({"classes": np.array([["a", "b"], ["c", "d"]])}, r"'classes' must be a list of 1 to 10,000 names"),
])
def test_npz_labels_are_checked_in_their_own_dtype(tmp_path, extra, match):
    y = np.array([0, 1, 2**64 - 1], np.uint64)
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 32, 32, 3), np.uint8), y=y, **extra)
    with pytest.raises(InputError, match=match):
        load_dataset(npz_cfg(tmp_path / "d.npz"))


def test_a_label_within_the_limit_still_loads(tmp_path):
    y = np.array([0, 1] * 5 + [9999])
    np.savez(tmp_path / "d.npz", x=np.zeros((11, 32, 32, 3), np.uint8), y=y)
    ds = load_dataset(npz_cfg(tmp_path / "d.npz"))
    assert len(ds.classes) == data.MAX_CLASSES


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_archive_members_the_loader_ignores_are_never_read(tmp_path, monkeypatch, suffix):
    """Only images in class folders are read; notes, hidden members and loose images are skipped
    by name (a 1 GB ignored member was decompressed whole)."""
    members = class_members(prefix="data/")
    members |= {"data/notes.txt": b"x" * 5000, "data/cat/readme.md": b"about cats",
                "data/cover.png": png_bytes(5), ".git/objects/ab.png": png_bytes(6),
                "data/dog/.thumb.png": png_bytes(7), "big.bin": bytes(100_000)}
    path = write_archive(tmp_path / f"d{suffix}", members)
    read: list[str] = []
    if suffix == ".zip":
        real = zipfile.ZipFile.open

        def spy(self, name, *args, **kwargs):
            read.append(getattr(name, "filename", name))
            return real(self, name, *args, **kwargs)

        monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    else:
        real = tarfile.TarFile.extractfile

        def spy(self, member):
            read.append(getattr(member, "name", member))
            return real(self, member)

        monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    ds = load_dataset(folder_cfg(path))
    assert ds.classes == ["cat", "dog"] and len(ds.train) + len(ds.val) + len(ds.test) == 8
    assert sorted(read) == sorted(class_members(prefix="data/"))


def test_an_image_member_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    """A 65 MiB member (65 KiB compressed): refused from the size its header declares."""
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in class_members().items():
            z.writestr(name, raw)
        with z.open("cat/big.png", "w") as f:
            for _ in range(65):
                f.write(bytes(1 << 20))
    with pytest.raises(InputError, match=re.escape(f"{path}: cat/big.png: 65 MiB is too big for an "
                                                   "image file (at most 64 MiB)")):
        load_dataset(folder_cfg(path))


def test_a_tar_image_member_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefiles, "MAX_IMAGE_FILE_BYTES", 2 << 20)
    path = write_archive(tmp_path / "d.tar.gz", class_members() | {"dog/big.png": bytes(3 << 20)})
    with pytest.raises(InputError, match=re.escape("dog/big.png: 3 MiB is too big for an image file "
                                                   "(at most 2 MiB)")):
        load_dataset(folder_cfg(path))


def test_a_zip_header_that_understates_a_member_is_caught_while_reading(tmp_path, monkeypatch):
    """The central directory says 100 bytes; the member inflates to 5,000: reading stops at the
    declared size and the archive is refused, naming the member (never more than declared)."""
    monkeypatch.setattr(imagefiles, "MAX_IMAGE_FILE_BYTES", 1000)
    path = write_archive(tmp_path / "d.zip", class_members() | {"cat/lie.png": bytes(5000)})
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the central directory's entries
    while raw[entry + 46:entry + 46 + 11] != b"cat/lie.png":
        entry = raw.index(b"PK\x01\x02", entry + 4)
    assert struct.unpack_from("<I", raw, entry + 24)[0] == 5000  # uncompressed size
    struct.pack_into("<I", raw, entry + 24, 100)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"cat/lie\.png: cannot be read from the archive"):
        load_dataset(folder_cfg(path))


@pytest.mark.parametrize("limit, value, match", [
    ("MAX_ARCHIVE_BYTES", 20_000, "its members add up to more than"),
    ("MAX_ARCHIVE_MEMBERS", 5, "holds more than 5 files and folders"),
])
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_totals_are_capped(tmp_path, monkeypatch, limit, value, match, suffix):
    monkeypatch.setattr(imagefiles, limit, value)
    path = write_archive(tmp_path / f"d{suffix}", class_members() | {"junk.bin": bytes(30_000)})
    with pytest.raises(InputError, match=match):
        load_dataset(folder_cfg(path))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height 1-bit pixels but holds data for its first row only:
    decoding it would fail (and allocate width x height bytes first); its header alone is valid."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(bytes((width + 7) // 8 + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 12000, 20000])  # under, over, twice over Pillow's limit
@pytest.mark.parametrize("where", ["folder", ".zip"])
def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path, side, where):
    """The refusal comes before decoding: decoding this file would fail as 'not a readable image'."""
    if where == "folder":
        path = make_tree(tmp_path / "imgs")
        (path / "dog" / "huge.png").write_bytes(png_header_only(side, side))
    else:
        path = write_archive(tmp_path / "d.zip", class_members() | {"dog/huge.png": png_header_only(side, side)})
    # over twice Pillow's own limit, Pillow refuses to say the size
    size = f"{side} x {side} pixels is " if side < 15000 else ""
    sentence = f"dog/huge.png: {size}too large an image (at most 50,000,000 pixels)"
    with pytest.raises(InputError, match=re.escape(sentence)):
        load_dataset(folder_cfg(path))


def test_npz_images_over_the_pixel_cap_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefiles, "MAX_IMAGE_PIXELS", 100)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 11, 10, 3), np.uint8), y=np.arange(2))
    with pytest.raises(InputError, match=r"its images are 11 x 10 pixels, too large \(at most 100 pixels"):
        load_dataset(npz_cfg(tmp_path / "d.npz"))


# --- 9. zero-size images and other files that are not what they claim --------------------------

@pytest.mark.parametrize("shape", [(3, 0, 0, 3), (3, 0, 5, 3), (3, 5, 0, 3), (3, 0, 5), (3, 4, 0, 1)])
def test_zero_size_npz_images_are_an_input_error(tmp_path, shape):
    """They crashed with ZeroDivisionError in resize_batch (exit 3)."""
    np.savez(tmp_path / "d.npz", x=np.zeros(shape, np.uint8), y=np.zeros(3, int))
    h, w = shape[1:3]
    with pytest.raises(InputError, match=re.escape(f"d.npz': its images are {h} x {w} pixels; "
                                                   "each needs at least 1 x 1")):
        load_dataset(npz_cfg(tmp_path / "d.npz"))
    np.savez(tmp_path / "e.npz", x=np.zeros((0,) + shape[1:], np.uint8), y=np.zeros(0, int))
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(npz_cfg(tmp_path / "e.npz"))


def test_npz_that_is_not_an_archive_of_arrays(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"not an \.npz archive of arrays"):
        load_dataset(npz_cfg(tmp_path / "x.npy"))
    np.savez(tmp_path / "o.npz", x=np.array([1, "a"], dtype=object), y=np.zeros(2, int))
    (tmp_path / "p.npz").write_bytes(b"\x80\x04K\x01.")  # a pickle
    for name in ("o.npz", "p.npz"):
        with pytest.raises(InputError, match="edgekd never loads pickled data") as e:
            load_dataset(npz_cfg(tmp_path / name))
        assert "allow_pickle" not in str(e.value)  # numpy's advice to load it unsafely is not quoted


def test_npz_arrays_other_than_x_y_classes_are_not_loaded(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 32, 32, 3), np.uint8), y=np.arange(8) % 2,
             extra=np.zeros(10))
    loaded: list[str] = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__",
                        lambda self, k: loaded.append(k) or real(self, k))
    load_dataset(npz_cfg(tmp_path / "d.npz"))
    assert sorted(loaded) == ["x", "y"]


# --- 10. archive member names ------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../cat/9.png", "/etc/x.png", "cat/../../x.png", "../notes.txt"])
@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_members_outside_the_tree_are_refused_naming_them(tmp_path, bad, suffix):
    """lstrip('./') turned '../cat/9.png' into 'cat/9.png'."""
    path = write_archive(tmp_path / f"d{suffix}", class_members() | {bad: png_bytes(3)})
    why = "is an absolute path" if bad.startswith("/") else "has a '..' part"
    with pytest.raises(InputError, match=re.escape(f"{path}: member {bad!r} {why}; refused")):
        load_dataset(folder_cfg(path))


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", "folder"])
def test_hidden_entries_are_ignored_alike_in_folders_and_archives(tmp_path, suffix):
    """'.git/...' and '.secret/...' became class folders in an archive; in a folder, a hidden
    folder beside the one wrapping folder stopped the descent into it."""
    members = class_members(prefix="./imgs/") | {
        ".git/objects/0.png": png_bytes(4), "./.secret/a/0.png": png_bytes(4),
        "imgs/.cache/0.png": png_bytes(4), "imgs/cat/.1.png": b"not an image",
        "imgs/__MACOSX/dog/._0.png": b"resource fork"}
    if suffix == "folder":
        path = tmp_path / "tree"
        for name, raw in members.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(raw)
    else:
        path = write_archive(tmp_path / f"d{suffix}", members)
    ds = load_dataset(folder_cfg(path))
    assert ds.classes == ["cat", "dog"] and len(ds.train) + len(ds.val) + len(ds.test) == 8
