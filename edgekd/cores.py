"""How the perturbed-input sweep shares the cores between inference and its generating processes
(``robustness.sweep_predictions``): one inference thread while sets are being made, every core
once they exist, and the BLAS on one thread meanwhile; and onnxruntime's threads asleep between
runs while another runtime's models alternate with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def cores_per_process(world: int) -> int:
    """The cores each of ``world`` processes sharing this machine may use (the sweep's generating
    workers beside its inference, an ONNX runner's lanes)."""
    return max(1, (os.cpu_count() or 1) // max(1, world))


class CoreSplit:
    """While sets are being generated, inference runs on ``threads`` intra-op threads: a parallel
    loop whose threads share their cores with the generating threads waits for the preempted ones
    (benchmarks/RESULTS.md, issue 21), one thread does not. So do torch's own loops (elastic
    transform's ``grid_sample``: the same time on 1 thread as on 2, at half the CPU) and numpy's
    BLAS (``one_blas_thread``) in the sets this thread makes. ``end`` (called once every set
    exists) gives the runners and torch their own settings back; ``close`` (after the sweep) the
    BLAS too: OpenBLAS starts its threads again when given them back, and they spin about 0.1 s
    each waiting for work, which took both cores from the first sets inferred on two threads.
    ``threads`` 0: no change."""

    def __init__(self, runners: dict, threads: int) -> None:
        self.runners, self.before, self.torch_threads, self.blas = runners, {}, 0, None
        if not threads:
            return
        import torch

        self.before = {mid: r.threads for mid, r in runners.items()}
        self.torch_threads = torch.get_num_threads()
        for r in runners.values():
            r.set_threads(threads)
        torch.set_num_threads(threads)
        self.blas = one_blas_thread()

    def end(self) -> None:
        before, self.before = self.before, {}
        for mid, t in before.items():
            self.runners[mid].set_threads(t)
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
            self.torch_threads = 0

    def close(self) -> None:
        self.end()
        if self.blas is not None:
            self.blas.restore_original_limits()
            self.blas = None


def one_blas_thread():
    """Limit the BLAS libraries this process has loaded (numpy's and scipy's OpenBLAS: elastic
    transform's displacement filters are matrix products) to one thread; returns the limiter, whose
    ``restore_original_limits()`` undoes it. OpenBLAS's threads spin while they wait for work, on
    the core inference runs on: at 128 px, the sweep's generating process spent 14.7-15.3 CPU-s
    with numpy's default two threads against 11.8-12.1 with one, and the cold sweep took 15.6-16.1
    against 12.9-13.3 s (benchmarks/RESULTS.md, issue 21). A product's values do not depend on
    the number of threads."""
    from threadpoolctl import ThreadpoolController

    # the BLAS libraries only: threadpool_limits(user_api="blas") would restore OpenMP's (torch's)
    # threads too, to what they were when it was called
    return ThreadpoolController().select(user_api="blas").limit(limits=1)


@contextmanager
def no_spinning_between(runners: dict) -> Iterator[None]:
    """While runners of more than one runtime take turns on each set (the build's sweep: the torch
    teacher and student, then the ONNX files), onnxruntime's intra-op threads sleep between runs
    instead of spinning (``OrtRunner.set_spinning``): spinning on both cores after each run, they
    took the torch student from 21-23 to 64-85 ms a set, and the two ONNX files ran faster
    without (30-31 against 36 ms a set). One runtime alone keeps its spinning, which makes
    back-to-back runs faster (11 against 16-17 ms a set; benchmarks/RESULTS.md, issue 21, eighth
    pass)."""
    mixed = len({getattr(r, "runtime", None) for r in runners.values()}) > 1
    changed = [r for r in runners.values() if mixed and getattr(r, "spinning", False)]
    for r in changed:
        r.set_spinning(False)
    try:
        yield
    finally:
        for r in changed:
            r.set_spinning(True)

