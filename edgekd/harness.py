"""The measurement harness: one ``evaluate`` for every model (torch or ONNX), latency statistics.

    pred = evaluate(runner, images, batch_size=256)      # int16 predicted classes
    accuracy(pred, labels) -> 0.97
    measure_latency(runner, images[:1], runs=100, warmup=10, threads=1)
        -> {"batch": 1, "threads": 1, "p50": ..., "p90": ..., "p99": ..., ...}
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm import tqdm


def evaluate(runner, images: np.ndarray, batch_size: int = 256, progress: bool = False,
             desc: str = "evaluate") -> np.ndarray:
    """Predicted class of every image (uint8 NHWC), as int16, batched."""
    preds = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        preds.append(runner.predict(images[i:i + batch_size]).argmax(1).astype(np.int16))
    return np.concatenate(preds) if preds else np.zeros(0, np.int16)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean())


def agreement(pred: np.ndarray, reference: np.ndarray) -> float:
    return float((pred == reference).mean())


def measure_latency(runner, sample: np.ndarray, runs: int, warmup: int, threads: int) -> dict:
    """Wall-clock latency of ``runner.predict(sample)`` (batch = len(sample)) in milliseconds.

    ``warmup`` untimed runs, then ``runs`` timed ones; percentiles over the timed runs.
    """
    runner.set_threads(threads)
    sync = getattr(runner, "synchronize", lambda: None)
    for _ in range(warmup):
        runner.predict(sample)
    sync()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        runner.predict(sample)
        sync()
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {"batch": int(len(sample)), "threads": threads, "device": runner.device,
            "runs": runs, "warmup": warmup,
            "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min()),
            "max": float(ms.max()), "cpu_count": os.cpu_count(),
            "samples": [round(float(t), 4) for t in ms]}  # every timed run, for distributions
