"""Reading images from a folder or an archive of class folders: listing (hidden files, links and
archive members checked), the per-file limits, decoding to RGB at the build's size, and the lazy
sources a streamed data set reads its images through (``streaming.LazyImages``).

    files = tree_files(Path("photos.zip"), "data.path", stack)   # relative path -> bytes loader
    image = decode_image(files["cat/1.jpg"](), 32, "photos.zip: cat/1.jpg")   # (32, 32, 3) uint8

Every limit is refused with one sentence naming the file: a small file (a zip of zeros, a PNG
header, one huge label) must not exhaust the machine.
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import check_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TEST_FOLDER_NAMES = ("val", "valid", "validation", "test")

# What one data set may make edgekd read or hold: a small file (a zip of zeros, a PNG header, one
# huge label) must not exhaust the machine. Each limit is refused with one sentence naming the file.
MAX_IMAGE_PIXELS = 50_000_000  # width x height of one image, checked from its header before decoding
MAX_IMAGE_FILE_BYTES = 64 << 20  # one image file, in a folder or (uncompressed) in an archive
MAX_ARCHIVE_BYTES = 8 << 30  # all the members of one archive together, uncompressed
MAX_ARCHIVE_MEMBERS = 1_000_000  # files and folders in one archive

# --- ImageFolder trees (folders or archives) ----------------------------------------------------

def _member_path(name: str, archive: Path) -> str | None:
    """The relative POSIX path of an archive member, or None for one the loader ignores: a hidden
    file or anything in a hidden folder (``.git/``, ``__MACOSX/._x.png``), as in a plain folder.
    A leading ``./`` and empty parts are dropped; an absolute name or one with a ``..`` part is
    refused (it names a file outside the tree)."""
    if name.startswith("/"):
        why = "is an absolute path"
    elif ".." in name.split("/"):
        why = "has a '..' part"
    else:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts or any(p.startswith(".") for p in parts):
            return None
        return "/".join(parts)
    raise InputError(f"{archive}: member {name!r} {why}; refused (the members of an archive of "
                     "class folders must be relative paths inside it)")


def _check_archive_size(archive: Path, members: int, total_bytes: int) -> None:
    if members > MAX_ARCHIVE_MEMBERS:
        raise InputError(f"{archive}: holds more than {MAX_ARCHIVE_MEMBERS:,} files and folders "
                         "(the most edgekd reads from one archive)")
    if total_bytes > MAX_ARCHIVE_BYTES:
        raise InputError(f"{archive}: its members add up to more than "
                         f"{MAX_ARCHIVE_BYTES / 2**30:g} GiB uncompressed (the most edgekd reads "
                         "from one archive)")


def _read_image_file(f, declared_bytes: int, where: str) -> bytes:
    """The bytes of one image file from the open file ``f``: refused before reading when its
    declared size (on disk, or in the archive's header) is over MAX_IMAGE_FILE_BYTES, and while
    reading when more than that comes (a header can lie)."""
    limit_mib = MAX_IMAGE_FILE_BYTES >> 20
    if declared_bytes > MAX_IMAGE_FILE_BYTES:
        raise InputError(f"{where}: {declared_bytes / 2**20:,.0f} MiB is too big for an image file "
                         f"(at most {limit_mib} MiB)")
    data = f.read(MAX_IMAGE_FILE_BYTES + 1)
    if len(data) > MAX_IMAGE_FILE_BYTES:
        raise InputError(f"{where}: more than {limit_mib} MiB is too big for an image file "
                         f"(at most {limit_mib} MiB)")
    return data


# errors of reading a tar (plain, gz, bz2, xz) or zip archive that mean the file is at fault
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError,
                   EOFError)


def _zip_files(path: Path, stack: ExitStack) -> dict[str, Callable[[], bytes]]:
    z = stack.enter_context(zipfile.ZipFile(path))
    infos = z.infolist()
    _check_archive_size(path, len(infos), sum(i.file_size for i in infos))

    def read(info: zipfile.ZipInfo) -> bytes:
        where = f"{path}: {info.filename}"
        try:
            with z.open(info) as f:
                return _read_image_file(f, info.file_size, where)
        except (*_ARCHIVE_ERRORS, RuntimeError, NotImplementedError) as e:  # encrypted, unknown method
            raise InputError(f"{where}: cannot be read from the archive ({e})") from None

    files: dict[str, Callable[[], bytes]] = {}
    for info in infos:
        rel = _member_path(info.filename, path)
        if rel is not None and not info.is_dir():
            files[rel] = lambda info=info: read(info)
    return files


def _tar_files(path: Path, stack: ExitStack) -> dict[str, Callable[[], bytes]]:
    tar = stack.enter_context(tarfile.open(path))

    def read(m: tarfile.TarInfo) -> bytes:
        where = f"{path}: {m.name}"
        try:
            return _read_image_file(tar.extractfile(m), m.size, where)  # type: ignore[arg-type]
        except _ARCHIVE_ERRORS as e:
            raise InputError(f"{where}: cannot be read from the archive ({e})") from None

    files: dict[str, Callable[[], bytes]] = {}
    members = total_bytes = 0
    for m in tar:  # the headers only; a compressed tar is decompressed (not kept) on the way
        members, total_bytes = members + 1, total_bytes + max(m.size, 0)
        _check_archive_size(path, members, total_bytes)
        rel = _member_path(m.name, path)
        if rel is not None and m.isfile():
            files[rel] = lambda m=m: read(m)
    return files


def _archive_reader(path: Path, stack: ExitStack) -> dict[str, Callable[[], bytes]]:
    """Relative POSIX path -> bytes loader, for every visible regular file of a tar or zip archive.
    Only the member names and sizes are read here; a member's bytes are read when its loader is
    called (the archive stays open until ``stack`` closes), so members the loader ignores by name
    are never decompressed (in a compressed tar they are passed over, not kept)."""
    try:
        if zipfile.is_zipfile(path):
            return _zip_files(path, stack)
        return _tar_files(path, stack)
    except _ARCHIVE_ERRORS as e:
        raise InputError(f"{path}: not a readable folder, tar or zip archive ({e})") from None


def _folder_files(root: Path) -> dict[str, Callable[[], bytes]]:
    """Relative POSIX path -> bytes loader, for every visible regular file under ``root``. Hidden
    files and folders are left out, symlinks to files followed (to folders not), and FIFOs,
    devices, sockets and broken links skipped without being opened."""

    def walk_error(e: OSError) -> None:
        raise InputError(f"{e.filename}: cannot be read ({e.strerror or e})")

    def read(p: Path) -> bytes:
        check_regular(p, "image file")  # it may have been replaced since it was listed
        try:
            with open(p, "rb") as f:
                return _read_image_file(f, os.fstat(f.fileno()).st_size, str(p))
        except OSError as e:
            raise InputError(f"{p}: cannot be read ({e.strerror or e})") from None

    files: dict[str, Callable[[], bytes]] = {}
    for folder, dirs, names in os.walk(root, onerror=walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            p = Path(folder) / name
            if not name.startswith(".") and p.is_file():  # is_file: a regular file, not opened
                files[p.relative_to(root).as_posix()] = lambda p=p: read(p)
    return files


def tree_files(path: Path, key: str, stack: ExitStack) -> dict[str, Callable[[], bytes]]:
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{key} = {str(path)!r}: no such folder or archive")
    check_regular(path, key, folder_ok=True)  # a FIFO would block, a device never end
    if path.is_dir():
        return _folder_files(path)
    return _archive_reader(path, stack)


def class_root(paths: list[tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """(prefix of the class folders, prefix of the separate test folders or None).

    Descends through single wrapping folders; a level holding ``train`` and one of ``val``,
    ``valid``, ``validation`` or ``test`` is a train/test layout."""
    prefix: tuple[str, ...] = ()
    while True:
        depth = len(prefix)
        below = [p for p in paths if p[:depth] == prefix]
        dirs = sorted({p[depth] for p in below if len(p) > depth + 1})
        loose = [p for p in below if len(p) == depth + 1 and p[-1].lower().endswith(IMAGE_SUFFIXES)]
        test_dirs = [d for d in dirs if d.lower() in TEST_FOLDER_NAMES]
        if "train" in dirs and test_dirs:
            return prefix + ("train",), prefix + (test_dirs[0],)
        if len(dirs) == 1 and not loose:
            prefix = prefix + (dirs[0],)
            continue
        return prefix, None


def decode_image(data: bytes, size: int, name: str) -> np.ndarray:
    """Image bytes -> (size, size, 3) uint8 RGB: shorter side resized to ``size``, centre crop."""
    from PIL import Image, UnidentifiedImageError

    unreadable = (UnidentifiedImageError, OSError, ValueError)
    too_large = f"too large an image (at most {MAX_IMAGE_PIXELS:,} pixels)"
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: our own, lower limit follows
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise InputError(f"{name}: {too_large}") from None
    except unreadable as e:
        raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:  # before decoding: the header alone says how big it would be
        raise InputError(f"{name}: {w} x {h} pixels is {too_large}")
    if w < 1 or h < 1:
        raise InputError(f"{name}: not a readable image ({w} x {h} pixels)")
    try:
        img = img.convert("RGB")
    except unreadable as e:
        raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)



# --- lazy sources: the images of a streamed data set, read when a batch needs them ---------------

class _ImageSource:
    """Images ``0 .. len - 1`` of one folder or archive, read and decoded on demand. A worker
    process opens its own archive handle (a handle shared across a fork shares its file offset)."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names = Path(path), list(names)
        self._handle, self._pid = None, None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def handle(self):
        if self._pid != os.getpid():
            self._handle, self._pid = self.open(), os.getpid()
        return self._handle

    def open(self):
        return None

    def describe(self) -> str:
        """What the images are, for cache keys: the tree, each name and its size on disk."""
        return f"{type(self).__name__}|{self.path.resolve()}|" + "|".join(self.names) + "|" + self.sizes()

    def sizes(self) -> str:
        return ""

    def images(self, rows: np.ndarray, size: int) -> np.ndarray:
        out = np.empty((len(rows), size, size, 3), np.uint8)
        for k, r in enumerate(rows):
            where = f"{self.path}: {self.names[r]}"
            out[k] = decode_image(self.read(int(r), where), size, where)
        return out


class FolderImages(_ImageSource):
    def read(self, r: int, where: str) -> bytes:
        p = self.path / self.names[r]
        check_regular(p, "image file")
        try:
            with open(p, "rb") as f:
                return _read_image_file(f, os.fstat(f.fileno()).st_size, where)
        except OSError as e:
            raise InputError(f"{where}: cannot be read ({e.strerror or e})") from None

    def sizes(self) -> str:
        return ",".join(str(os.stat(self.path / n).st_size) for n in self.names)


class ZipImages(_ImageSource):
    def __init__(self, path: Path, names: list[str], members: list[zipfile.ZipInfo]) -> None:
        super().__init__(path, names)
        self.members = [m.filename for m in members]
        self.member_sizes = [m.file_size for m in members]

    def open(self):
        return zipfile.ZipFile(self.path)

    def read(self, r: int, where: str) -> bytes:
        try:
            with self.handle().open(self.members[r]) as f:
                return _read_image_file(f, self.member_sizes[r], where)
        except (*_ARCHIVE_ERRORS, RuntimeError, NotImplementedError, KeyError) as e:
            raise InputError(f"{where}: cannot be read from the archive ({e})") from None

    def sizes(self) -> str:
        return ",".join(map(str, self.member_sizes))


class TarImages(_ImageSource):
    """An uncompressed tar: each member's bytes lie at a fixed offset, read with one pread."""

    def __init__(self, path: Path, names: list[str], offsets: list[int], member_sizes: list[int]) -> None:
        super().__init__(path, names)
        self.offsets, self.member_sizes = offsets, member_sizes

    def open(self):
        return os.open(self.path, os.O_RDONLY)

    def read(self, r: int, where: str) -> bytes:
        if self.member_sizes[r] > MAX_IMAGE_FILE_BYTES:
            return _read_image_file(io.BytesIO(), self.member_sizes[r], where)  # refuses it
        try:
            return os.pread(self.handle(), self.member_sizes[r], self.offsets[r])
        except OSError as e:
            raise InputError(f"{where}: cannot be read from the archive ({e.strerror or e})") from None

    def sizes(self) -> str:
        return ",".join(map(str, self.member_sizes))


_COMPRESSED_TAR = {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7": "xz"}


def lazy_source(path: Path, names: list[str]) -> _ImageSource:
    """The images ``names`` (relative paths as :func:`tree_files` lists them) of the folder or
    archive ``path``, to be read one by one later. A compressed tar cannot be: reaching one image
    means decompressing everything before it."""
    if path.is_dir():
        return FolderImages(path, names)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                by_name = {_member_path(i.filename, path): i for i in z.infolist() if not i.is_dir()}
            return ZipImages(path, names, [by_name[n] for n in names])
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic in _COMPRESSED_TAR:
            raise InputError(f"{path}: a {_COMPRESSED_TAR[magic]}-compressed tar cannot be streamed (each "
                             "image would need the archive decompressed up to it); extract it to a "
                             "folder, or repack it as an uncompressed .tar or a .zip")
        where = {}
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile():
                    where[_member_path(m.name, path)] = (m.offset_data, m.size)
        return TarImages(path, names, [where[n][0] for n in names], [where[n][1] for n in names])
    except _ARCHIVE_ERRORS as e:
        raise InputError(f"{path}: not a readable folder, tar or zip archive ({e})") from None
