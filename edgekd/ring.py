"""Shared memory through which the perturbed-input sweep's forked generating processes hand it
their sets, and in which it reads cached sets (``robustness.PerturbedSets._iter_ahead``).

    ring = Ring.sized(images.shape, sets=95, group_bytes=GROUP_BYTES)   # before the fork
    [slot] = ring.take(1); ring.array(slot)[:] = made; ring.save(slot, path)  # a generating process
    images = ring.hand_over(slot)              # the sweep: freed once no view of it is left
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .cache import PAGE_BYTES, npy_header, save_aligned


class Ring:
    """Page-aligned slots of memory shared with the forked generating processes (an anonymous
    shared mapping made before the fork), through which they hand the sweep its sets: a process
    takes free slots (``take``), generates a group's sets straight into them and writes each to
    the cache from there (``save``: a page of .npy header, then the images; O_DIRECT, in a thread of
    that process, while it goes on to the next group); the sweep reads the images in place
    (``hand_over``), and the slot is free again once no view of them is left and it is written.
    The sweep reads cached sets into slots too (``load``, O_DIRECT). Slots are used over and over,
    so their pages stay mapped: a set handed over through the page cache (np.save, then np.load)
    cost fresh pages on both sides, about 12 ms of the generating process's CPU per 7.2 MB set at
    128 px (benchmarks/RESULTS.md, issue 21, eighth pass). A set that finds no free slot (inference
    two groups behind) goes through the cache as before."""

    def __init__(self, shape: tuple[int, ...], slots: int) -> None:
        self.shape = shape
        self.nbytes = int(np.prod(shape))
        self.stride = self.slot_bytes(shape)
        self.mem = mmap.mmap(-1, slots * self.stride)  # anonymous, MAP_SHARED: forked processes share it
        self.free = mmap.mmap(-1, slots)  # 1: free; taken under the lock, freed by the sweep alone
        self.free.write(b"\x01" * slots)
        self.writing = mmap.mmap(-1, slots)  # 1: being written to the cache (cleared by the writer)
        self.lock = multiprocessing.get_context("fork").Lock()
        self._writer: tuple[int, ThreadPoolExecutor] | None = None  # (process id, its writing thread)

    @classmethod
    def sized(cls, shape: tuple[int, ...], sets: int, group_bytes: int) -> Ring | None:
        """A ring for ``sets`` sets of uint8 ``shape``, two groups of ``group_bytes`` at most (one
        being made while the sweep runs its models on the other; at 32 px, 1,000 images: 85 sets of
        3 MB, where inference falls up to about 20 behind; the first free slots are taken first,
        so only as many pages are touched as are in use at once); None when not one fits."""
        slots = min(sets, 2 * group_bytes // cls.slot_bytes(shape))
        return cls(shape, slots) if slots > 0 else None

    @staticmethod
    def slot_bytes(shape: tuple[int, ...]) -> int:
        """A slot's size: a page of .npy header, then the uint8 images in whole pages."""
        return PAGE_BYTES + -(-int(np.prod(shape)) // PAGE_BYTES) * PAGE_BYTES

    def take(self, k: int) -> list[int]:
        """Up to ``k`` free slots, now taken (fewer, or none, when the sweep has not freed them)."""
        got = []
        with self.lock:
            for i in range(len(self.free)):
                if len(got) == k:
                    break
                if self.free[i] and not self.writing[i]:
                    self.free[i] = 0
                    got.append(i)
        return got

    def release(self, slot: int) -> None:
        """Give a taken slot back (only its taker does: no lock)."""
        self.free[slot] = 1

    def array(self, slot: int) -> np.ndarray:
        """Slot ``slot``'s images, a writable view."""
        return np.frombuffer(self.mem, np.uint8, self.nbytes, slot * self.stride + PAGE_BYTES).reshape(self.shape)

    def save(self, slot: int, path: Path | None) -> None:
        """Write slot ``slot`` to ``path`` as a .npy file, straight from the shared pages, in this
        process's writing thread (the slot is not taken again before it is written; the process
        joins the thread before it exits: ``flush``)."""
        if path is None:
            return
        at = slot * self.stride
        self.mem[at:at + PAGE_BYTES] = npy_header(self.shape, np.uint8)
        self.writing[slot] = 1
        if self._writer is None or self._writer[0] != os.getpid():  # none yet in this (forked) process
            self._writer = (os.getpid(), ThreadPoolExecutor(max_workers=1))
        self._writer[1].submit(self._write, slot, path)

    def _write(self, slot: int, path: Path) -> None:
        at = slot * self.stride
        try:
            with memoryview(self.mem) as view:
                save_aligned(path, view[at:at + self.stride], PAGE_BYTES + self.nbytes)
        finally:
            self.writing[slot] = 0

    def load(self, slot: int, path: Path | None) -> bool:
        """Read ``path`` into slot ``slot`` when it is a file ``save`` wrote for these sets (its
        header page and size); False (the slot's contents undefined) when not."""
        if path is None:
            return False
        at = slot * self.stride
        try:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_DIRECT", 0))
            except OSError:  # EINVAL: no O_DIRECT on this file system (a missing file: again, and fails)
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                if os.fstat(fd).st_size != PAGE_BYTES + self.nbytes:
                    return False
                with memoryview(self.mem) as view:
                    got, want = 0, PAGE_BYTES + self.nbytes
                    while got < want:
                        n = os.readv(fd, [view[at + got:at + self.stride]])
                        if n <= 0:
                            return False
                        got += n
            finally:
                os.close(fd)
        except OSError:
            return False
        return self.mem[at:at + PAGE_BYTES] == npy_header(self.shape, np.uint8)

    def flush(self) -> None:
        """Wait for this process's writes."""
        if self._writer is not None and self._writer[0] == os.getpid():
            self._writer[1].shutdown(wait=True)
            self._writer = None

    def hand_over(self, slot: int) -> np.ndarray:
        """Slot ``slot``'s images for the sweep; the slot is freed when the last view of them goes
        (every view's base is the array the finalizer watches)."""
        images = self.array(slot)
        weakref.finalize(images.base, self.release, slot)
        return images
