"""The measurement harness: one ``evaluate`` for every model (torch or ONNX), latency statistics.

    pred = evaluate(runner, images, batch_size=256)      # int16 predicted classes
    accuracy(pred, labels) -> 0.97
    measure_latency(runner, images[:1], runs=100, warmup=10, threads=1)
        -> {"batch": 1, "threads": 1, "device": "cpu", "runs": 100, "warmup": 10, "wall_s": ...,
            "min": ..., "mean": ..., "std": ..., "p50": ..., "p90": ..., "p95": ..., "p99": ...,
            "max": ..., "cpu_count": ..., "samples": [...]}

Latency is timed and summarised by the device runner (``edgekd/_ortbench.py``, a bundle's run.py),
so a build's ``latency_ms`` and a device run's have the same statistics from the same code.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm


def evaluate(runner, images: np.ndarray, batch_size: int = 256, progress: bool = False,
             desc: str = "evaluate") -> np.ndarray:
    """Predicted class of every image (uint8 NHWC), as int16, batched; the batches are shared out
    over the runner's ``lanes(batches)`` where it has several (each takes the next batch not started)."""
    starts = range(0, len(images), batch_size)
    lanes = runner.lanes(len(starts)) if hasattr(runner, "lanes") else [runner.predict]
    preds: list = [None] * len(starts)
    bar = tqdm(total=len(starts), desc=desc, disable=not progress, leave=False)
    todo, lock, failed = iter(enumerate(starts)), threading.Lock(), threading.Event()

    def run(predict) -> None:
        while not failed.is_set():
            with lock:
                k, i = next(todo, (None, None))
            if k is None:
                return
            try:
                preds[k] = predict(images[i:i + batch_size]).argmax(1).astype(np.int16)
            except BaseException:
                failed.set()  # the other lanes stop at their next batch
                raise
            bar.update()

    with bar:
        if len(lanes) == 1:
            run(lanes[0])
        else:
            with ThreadPoolExecutor(len(lanes) - 1) as pool:
                others = [pool.submit(run, p) for p in lanes[1:]]
                try:
                    run(lanes[0])
                finally:
                    errors = [f.exception() for f in others]  # waits for them
                for e in errors:
                    if e is not None:
                        raise e
    return np.concatenate(preds) if preds else np.zeros(0, np.int16)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean())


def agreement(pred: np.ndarray, reference: np.ndarray) -> float:
    return float((pred == reference).mean())


def measure_set(runners: dict, images: np.ndarray, labels: np.ndarray, batch_size: int,
                progress: bool, group=None, key: tuple[str, ...] = ("clean",)
                ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Every model on one labelled set of images (the clean test images; a shift set with ``key =
    ("shift", NAME)``): ``({id: {"accuracy": {key: acc}, "agreement_with_teacher": {key: agr}}},
    {id: predicted classes})``, ``key`` a path of nested tables; agreement is with the teacher's
    predictions. Under torchrun (``group``) each process runs every model on its share of the
    images."""
    from .artifacts import TEACHER
    from .distributed import SINGLE

    group = group or SINGLE
    part = group.shard_range(len(images))
    mine = {mid: evaluate(r, images[part], batch_size, progress, f"evaluate {mid}") for mid, r in runners.items()}
    shards = group.gather(mine)
    preds = {mid: np.concatenate([sh[mid] for sh in shards]) for mid in runners}

    def nested(value: float) -> dict:
        for k in reversed(key):
            value = {k: value}
        return value

    metrics = {mid: {"accuracy": nested(accuracy(p, labels)),
                     "agreement_with_teacher": nested(agreement(p, preds[TEACHER]))}
               for mid, p in preds.items()}
    return metrics, preds


def measure_latency(runner, sample: np.ndarray, runs: int, warmup: int, threads: int) -> dict:
    """Wall-clock latency of ``runner.predict(sample)`` (batch = len(sample)) in milliseconds.

    ``warmup`` untimed runs, then ``runs`` timed ones (each followed by ``runner.synchronize()``,
    so CUDA work is counted); the record is the device runner's :func:`latency_record` (batch,
    threads, runs, warmup, wall_s, min, mean, std, p50, p90, p95, p99, max) plus the runner's
    device, this machine's CPU count and every timed run (``samples``).
    """
    from ._ortbench import latency_record, time_calls

    runner.set_threads(threads)
    ms, wall_s = time_calls(lambda: runner.predict(sample), runs, warmup,
                            synchronize=getattr(runner, "synchronize", None))
    rec = latency_record(ms, wall_s, len(sample), threads, warmup)
    return {"batch": rec.pop("batch"), "threads": rec.pop("threads"), "device": runner.device, **rec,
            "cpu_count": os.cpu_count(),
            "samples": [round(float(t), 4) for t in ms]}  # every timed run, for distributions
