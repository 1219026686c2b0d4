"""ExecuTorch programs (``.pte``) for the device runner (``edgekd/_ortbench.py``, a bundle's run.py,
which this file lies beside): the lightest ExecuTorch runtime installed, the process-wide thread
pool, and :class:`PteSession` -- the ``.pte`` counterpart of an onnxruntime session. numpy and an
ExecuTorch runtime only; no edgekd.

    s = PteSession("student.int8.pte", threads=1)
    s.run(uint8_nhwc_images)   # -> float32 logits (batches above the program's bound run in chunks)
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import weakref

import numpy as np


class ModelLoadError(Exception):
    """A runtime cannot load a model file; the message is one sentence naming the file."""


PTE_SUFFIX = ".pte"
PTE_INSTALL = ("pip install executorch-numpy-runtime (Python >= 3.12, no torch) or pip install "
               "executorch (with torch)")


@contextlib.contextmanager
def _quiet_stderr():
    """ExecuTorch's C++ logs (cpuinfo probing, thread-pool resets) go to file descriptor 2, past
    Python: hold them back while it loads and resets, so a failure's last line is edgekd's."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to hide
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@functools.lru_cache(maxsize=1)
def _pte_backend():
    """(name, module) of the lightest ExecuTorch runtime installed: ``executorch_numpy_runtime``
    (numpy in and out, no torch), else ``executorch.runtime`` (its pybindings import torch);
    (None, None) when neither is. Imported once, its C++ start-up logs held back."""
    import logging

    with _quiet_stderr():
        try:
            import executorch_numpy_runtime as etn

            return "executorch-numpy-runtime", etn
        except ImportError:
            pass
        log = logging.getLogger("torch.utils._pytree")  # torchao's import-time notice
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            from executorch import runtime as et
            from executorch.extension.pybindings import portable_lib

            portable_lib._threadpool_get_thread_count()  # cpuinfo probes the CPU (and logs) here
            return "executorch", et
        except ImportError:
            return None, None
        finally:
            log.setLevel(level)


# (distribution, module) of each ExecuTorch runtime, lightest first: the order _pte_backend tries them
_PTE_RUNTIMES = (("executorch-numpy-runtime", "executorch_numpy_runtime"), ("executorch", "executorch"))


def pte_runtime_version() -> str | None:
    """'executorch 1.5.1' / 'executorch-numpy-runtime 1.4.0' (the runtime a .pte runs in), or None.
    Unless this process has loaded it (``_pte_backend``), found without importing it: executorch's
    pybindings import torch and its export stack, 6 s of every ONNX model's measurement in a fresh
    process (``machine_facts``: two per build, benchmarks/RESULTS.md, issue 21, tenth pass)."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if _pte_backend.cache_info().currsize:
        name = _pte_backend()[0]
    else:
        name = next((dist for dist, module in _PTE_RUNTIMES if find_spec(module) is not None), None)
    if name is None:
        return None
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


_LIVE_PTE: weakref.WeakSet = weakref.WeakSet()  # every loaded program of this process


_NUMPY_POOL: dict = {"threads": None}  # executorch-numpy-runtime's pool size, once edgekd set it


def _pool_functions():
    """(get thread count, resize) of the installed runtime's thread pool, or None where it offers
    no way to resize it."""
    name, et = _pte_backend()
    if name == "executorch":
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )

        return _threadpool_get_thread_count, _unsafe_reset_threadpool
    try:  # executorch-numpy-runtime has no Python call for it: ExecuTorch's own C++ functions
        import ctypes

        from executorch_numpy_runtime import _core

        lib = ctypes.CDLL(_core.__file__)
        get = lib._ZN10executorch9extension10threadpool14get_threadpoolEv
        get.restype = ctypes.c_void_p
        reset = lib._ZN10executorch9extension10threadpool10ThreadPool24_unsafe_reset_threadpoolEj
        reset.argtypes, reset.restype = [ctypes.c_void_p, ctypes.c_uint], ctypes.c_bool

        def resize(n: int) -> None:  # no exported thread count: remember the size set here
            if reset(get(), n):
                _NUMPY_POOL["threads"] = n

        return (lambda: _NUMPY_POOL["threads"]), resize
    except (ImportError, OSError, AttributeError):
        return None


def set_pte_threads(threads: int) -> str | None:
    """Size ExecuTorch's thread pool (process-wide; XNNPACK's kernels run on it). XNNPACK's
    delegates keep the pool they were loaded with, so every loaded program is reloaded after a
    resize (a program left on the old pool would crash). 0 keeps the current size. Returns a
    warning where the runtime cannot be resized (its default pool is used)."""
    if threads <= 0 or _pte_backend()[0] is None:
        return None
    funcs = _pool_functions()
    if funcs is None:
        return f"{_pte_backend()[0]} offers no thread-pool size; its default pool was used"
    get_count, reset = funcs
    if get_count() == threads:
        return None
    with _quiet_stderr():
        reset(threads)
    for session in list(_LIVE_PTE):
        session._load()
    return None


class PteSession:
    """An ExecuTorch program's ``forward`` method in the lightest ExecuTorch runtime installed.

    ``run(images)``: uint8 NHWC in, float32 logits out. The program's batch axis has an upper bound
    (its input's planned size); longer batches run in chunks of that size. ``threads`` sets the
    size of ExecuTorch's thread pool (:func:`set_pte_threads`: process-wide)."""

    provider = "XnnpackBackend"

    def __init__(self, model: str, threads: int = 0) -> None:
        self.model = model
        self.runtime, self._et = _pte_backend()
        if self._et is None:
            raise ModelLoadError(f"{model}: no ExecuTorch runtime is installed to run it ({PTE_INSTALL})")
        self.warning = set_pte_threads(threads)  # before loading: a resize reloads every program
        self._load()
        _LIVE_PTE.add(self)
        self.max_batch = int(self.input_shape[0])
        self.threads = threads

    def _load(self) -> None:
        et = self._et
        try:
            with _quiet_stderr():
                if self.runtime == "executorch":
                    self._method = et.Runtime.get().load_program(self.model).load_method("forward")
                    self.input_shape = tuple(self._method.metadata.input_tensor_meta(0).sizes())
                else:  # executorch-numpy-runtime (Python >= 3.12): numpy in, numpy out
                    self._method = et.Runtime.get().load_program(self.model).load_method("forward")
                    self.input_shape = tuple(self._method.metadata["inputs"][0]["shape"])
        except Exception as e:  # the runtimes raise RuntimeError / ValueError with long texts
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelLoadError(f"{self.model}: ExecuTorch cannot load it ({first[:200]})") from None

    def set_threads(self, threads: int) -> None:
        self.warning = set_pte_threads(threads)
        self.threads = threads

    def _call(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "executorch":
            import torch

            return self._method.execute([torch.from_numpy(x)])[0].numpy()
        return np.asarray(self._method([x])[0])

    def run(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images)
        n = self.max_batch
        if len(images) <= n:
            return self._call(images)
        return np.concatenate([self._call(images[i:i + n]) for i in range(0, len(images), n)])
