"""Data sets larger than memory: images read lazily and decoded by torch DataLoader workers.

    x = LazyImages(source, size=64, workers=2)   # array-like, nothing decoded yet
    x.shape -> (81000, 64, 64, 3); x[[5, 9]] -> (2, 64, 64, 3) uint8, decoded now
    for batch in stream(x, batches): ...         # decoded in worker processes, in order

``data.stream = "auto"`` streams an ImageFolder tree or an ``.npz`` whose decoded images (``N x
image_size^2 x 3`` bytes) would take more than ``data.memory_mb``; ``"on"`` always streams,
``"off"`` never. A streamed data set keeps its **training** split lazy (``Split.x`` is a
``LazyImages``); the calibration, validation and test splits are decoded into memory, the test
split sampled down to ``data.stream_test_images`` when it is larger. The split rules, the uint8
NHWC contract and the augmentations are those of the in-memory path: a streamed build of a data
set that fits in memory trains on the same batches, bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import EdgekdError, InputError
from .pixels import batched_channel_stats, channel_stats, resize_batch

STATS_BATCH = 512  # rows per decoded batch of the channel statistics pass
TRIM_EVERY_BATCHES = 8  # streamed batches between returns of freed heap memory to the system


class LazyImages:
    """uint8 NHWC images ``source.images(rows, size)`` of which only the indexed rows are ever
    decoded. Indexing with an int, a slice or an index array returns a numpy array; ``take``
    returns a lazy view."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, source, size: int, workers: int, rows: np.ndarray | None = None) -> None:
        self.source, self.image_size, self.workers = source, size, workers
        self.rows = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), self.image_size, self.image_size, 3)

    @property
    def size(self) -> int:  # numpy's meaning: elements
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.source.images(self.rows[[key]], self.image_size)[0]
        return self.source.images(self.rows[key], self.image_size)

    def take(self, index) -> LazyImages:
        return LazyImages(self.source, self.image_size, self.workers, self.rows[index])

    def __array__(self, *args, **kwargs):
        raise TypeError("a streamed split is not held in memory; index it (x[rows]) or stream it "
                        "(edgekd.streaming.stream)")

    def fingerprint(self) -> str:
        """sha256 of what the images are (the tree, names, sizes, the rows and the image size)."""
        h = hashlib.sha256(self.source.describe().encode())
        h.update(f"|{self.image_size}|".encode())
        h.update(self.rows.tobytes())
        return h.hexdigest()


def is_lazy(x) -> bool:
    return isinstance(x, LazyImages)


class NpzRows:
    """The images of an ``.npz`` written with ``numpy.savez`` (``x`` stored, not compressed): each
    row read with one pread at its offset, resized to the build's size."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        where = f"{key} = {str(path)!r}"
        with zipfile.ZipFile(self.path) as z:
            info = z.getinfo("x.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise InputError(f"{where}: its images are compressed (numpy.savez_compressed), so "
                                 "they cannot be streamed row by row; write it with numpy.savez, "
                                 "or set data.stream = 'off'")
            with z.open(info) as f:
                shape, fortran, dtype = npy_header(f)
                header_bytes = f.tell()
        with open(self.path, "rb") as f:  # the member's data starts after its local file header
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        self.offset = info.header_offset + 30 + name_len + extra_len + header_bytes
        if fortran or np.dtype(dtype) != np.uint8 or len(shape) not in (3, 4):
            raise InputError(f"{where}: 'x' must be uint8 N x H x W x 3 in C order to be streamed; "
                             f"it is {np.dtype(dtype)} {tuple(shape)}")
        self.shape = tuple(shape) if len(shape) == 4 else (*shape, 1)
        self.row_bytes = int(np.prod(self.shape[1:]))
        if info.file_size < header_bytes + self.shape[0] * self.row_bytes:
            raise InputError(f"{where}: 'x' declares {self.shape[0]:,} images but the file holds "
                             f"fewer (a truncated .npz)")
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def describe(self) -> str:
        st = os.stat(self.path)
        return f"npz|{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.shape}"

    def images(self, rows: np.ndarray, size: int) -> np.ndarray:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        raw = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for k, r in enumerate(rows):
            buf = os.pread(self._fd, self.row_bytes, self.offset + int(r) * self.row_bytes)
            if len(buf) != self.row_bytes:
                raise InputError(f"{self.path}: ends inside image {int(r)} (a truncated file)")
            raw[k] = np.frombuffer(buf, np.uint8).reshape(self.shape[1:])
        x = resize_batch(raw, size)
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy array in the open file ``f``, which is left at
    the first byte of the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def should_stream(mode: str, n_images: int, size: int, memory_mb: int) -> bool:
    """``data.stream``: on, off, or auto (the decoded images would exceed ``data.memory_mb``)."""
    if mode in ("on", "off"):
        return mode == "on"
    return n_images * size * size * 3 > memory_mb * 2**20


class _Failure:
    def __init__(self, e: EdgekdError) -> None:
        self.message, self.cls = str(e), type(e)


class _Batches:
    """``torch.utils.data`` map-style data set whose items are whole batches (index arrays)."""

    def __init__(self, x: LazyImages, batches: list[np.ndarray]) -> None:
        self.x, self.batches = x, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        try:
            return self.x[self.batches[k]]
        except EdgekdError as e:  # one sentence back to the main process, not a worker traceback
            return _Failure(e)


def stream(x, batches: Iterable[np.ndarray], workers: int | None = None) -> Iterator[np.ndarray]:
    """``x[b]`` for each index array ``b``, in order. For a ``LazyImages``, decoded by a torch
    ``DataLoader`` with ``workers`` processes (default ``x.workers``), two batches ahead per
    worker; for an array, sliced in place."""
    batches = list(batches)
    if not is_lazy(x):
        for b in batches:
            yield x[b]
        return
    from torch.utils.data import DataLoader

    w = x.workers if workers is None else workers
    loader = DataLoader(_Batches(x, batches), batch_size=None, shuffle=False, num_workers=w,
                        prefetch_factor=2 if w else None, collate_fn=lambda b: b)
    for k, item in enumerate(loader, 1):
        if isinstance(item, _Failure):
            raise item.cls(item.message)
        yield item
        if k % TRIM_EVERY_BATCHES == 0:
            release_freed_memory()
    release_freed_memory()


def release_freed_memory() -> None:
    """Hand the heap memory freed so far back to the system (glibc ``malloc_trim``; nothing
    elsewhere). Each streamed batch arrives from a worker as a fresh allocation of a few MiB, and
    the model's transient activations come and go beside it; glibc keeps such freed chunks in the
    heap, fragmented, so without this a streamed build's resident memory grows with the number of
    batches (measured: benchmarks/RESULTS.md, "Streamed ImageFolder vs in-memory")."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def chunks(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def lazy_channel_stats(x: LazyImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``pixels.channel_stats`` of a lazy set: whole for a small set, else float64 sums over
    batches decoded by the workers (the in-memory path's arithmetic up to summation order)."""
    if x.size <= 1 << 24:
        return channel_stats(x[np.arange(len(x))])
    return batched_channel_stats(stream(x, chunks(len(x), STATS_BATCH)))
