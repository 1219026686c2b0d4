"""One interface to run a model: ``runner.predict(uint8 NHWC images) -> float32 logits``.

    r = RUNTIMES.get("onnxruntime")(Path("student.int8.onnx"), threads=1)
    r.predict(images)  # (N, classes)

Runtimes: ``torch`` (cpu / cuda), ``onnxruntime`` (CPU execution provider) and ``executorch``
(ExecuTorch programs, XNNPACK-delegated); the onnxruntime session and the ExecuTorch method are made
by ``edgekd/_ortbench.py``, the dependency-light device runner, so the build and a device run the
same code. Latency of any runner: ``edgekd.harness.measure_latency``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import InputError
from .files import check_regular
from .registry import Registry


class Runner(Protocol):
    runtime: str
    device: str
    threads: int  # intra-op threads as last set (0: the runtime's default)

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def set_threads(self, threads: int) -> None: ...

    def synchronize(self) -> None: ...


RUNTIMES: Registry = Registry("runtime")


@RUNTIMES.register("torch")
class TorchRunner:
    runtime = "torch"

    def __init__(self, model, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.model = model.to(device).eval()
        self.device = device

    @property
    def threads(self) -> int:
        return self._torch.get_num_threads()  # torch's setting is per process

    def predict(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
            return out.float().cpu().numpy()

    def set_threads(self, threads: int) -> None:
        self._torch.set_num_threads(threads)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()


LANES_MAX = 4  # OrtRunner.lanes(): sessions of one file running at once (each holds the weights)


def _ort_predict(session, input_name: str, images: np.ndarray) -> np.ndarray:
    """One batch through an onnxruntime session: OrtRunner.predict and each of its lanes."""
    return session.run(None, {input_name: np.ascontiguousarray(images)})[0]


@RUNTIMES.register("onnxruntime")
class OrtRunner:
    """A model file (.onnx or .ort) in onnxruntime; the session is made by the device runner's
    :func:`edgekd._ortbench.make_session` (the code a bundle's run.py uses on the device)."""

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, path: str | Path, threads: int = 0,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        self.path = Path(path)
        self.providers = providers
        self.spinning = True  # onnxruntime's default: its threads spin while they wait for work
        self._lanes: list = []  # lanes(): (intra-op threads, session) of the same file
        self._make(threads)

    def _make(self, threads: int) -> None:
        from ._ortbench import ModelLoadError, make_session

        if not self.path.exists():
            raise InputError(f"{self.path}: ONNX file does not exist")
        check_regular(self.path, "model")
        try:
            self.session, self.warning = make_session(str(self.path), threads, self.providers, self.spinning)
        except ModelLoadError as e:
            raise InputError(str(e)) from None
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads

    def predict(self, images: np.ndarray) -> np.ndarray:
        return _ort_predict(self.session, self.input_name, images)

    def lanes(self, batches: int) -> list:
        """``predict`` functions that may run at the same time on ``batches`` batches
        (``harness.evaluate``): with more than one thread to use (``threads``; 0: this process's
        share of the cores under torchrun, ``cores.cores_per_process``), the CPU provider and
        at least two batches a lane, up to LANES_MAX sessions of the same file, the threads divided
        among them (one each on up to LANES_MAX cores), made on first use; else ``[predict]``.
        Batches split over single-thread sessions keep every core busy, where one session's
        intra-op threads wait on each other at every operator: on 2 cores, the INT8 digits
        student's 95 sets of 1,000 images took 2.4 s against 3.3 s on two intra-op threads,
        resnet8's 6.3 against 7.2 s. With fewer batches, a lane would sit idle while another runs
        the last one: 153 images at 64 px (batches of 64, 64, 25) ran slower in two lanes
        (benchmarks/RESULTS.md, issue 21, tenth pass). Each session holds its own copy of the
        weights, hence the bound."""
        from .cores import cores_per_process
        from .distributed import world_size

        n = self.threads or cores_per_process(world_size())
        count = min(n, LANES_MAX, batches // 2)
        if count < 2 or tuple(self.providers) != ("CPUExecutionProvider",):
            return [self.predict]
        from ._ortbench import ModelLoadError, make_session

        each = n // min(n, LANES_MAX)  # whatever the batches: the sessions are made once
        if self._lanes and self._lanes[0][0] != each:
            self._lanes = []
        try:
            while len(self._lanes) < count:
                self._lanes.append((each, make_session(str(self.path), each, self.providers)[0]))
        except ModelLoadError:  # the file went since predict's session was made: that session alone
            return [self.predict]
        return [functools.partial(_ort_predict, s, self.input_name) for _, s in self._lanes[:count]]

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self._make(threads)

    def set_spinning(self, spinning: bool) -> None:
        """Whether its intra-op threads spin while they wait (``make_session``)."""
        if spinning != self.spinning:
            self.spinning = spinning
            self._make(self.threads)

    def synchronize(self) -> None:
        pass


@RUNTIMES.register("executorch")
class PteRunner:
    """An ExecuTorch program (.pte) through the device runner's :class:`edgekd._ortbench.PteSession`
    (the ExecuTorch runtime installed; XNNPACK runs the delegated graph on the CPU)."""

    runtime = "executorch"
    device = "cpu"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        from ._ortbench import ModelLoadError, PteSession

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: ExecuTorch program does not exist")
        check_regular(self.path, "model")
        try:
            self.session = PteSession(str(self.path), threads)
        except ModelLoadError as e:
            raise InputError(str(e)) from None

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(images)

    @property
    def threads(self) -> int:
        return self.session.threads

    def set_threads(self, threads: int) -> None:
        self.session.set_threads(threads)

    def synchronize(self) -> None:
        pass
