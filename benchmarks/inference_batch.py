"""Evaluation speed by batch size: the INT8 students of robustness_sweep.py under onnxruntime on one
and on all threads, and the same students in torch fp32 (what `measure.eval_batch_size` chooses).

    python benchmarks/inference_batch.py                              # digits_student and resnet8
    python benchmarks/inference_batch.py --students resnet8 --batches 64 256

onnxruntime: 19,000 images (19 passes over 1,000 CIFAR-10 validation images), best of 2, scaled x5
to the sweep's 95,000. torch: 2,048 random images, best of 3, the build's torch threads. Weights
are random (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--students", nargs="+", default=["digits_student", "resnet8"])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")))
    args = ap.parse_args()

    import torch

    from edgekd.config import QuantizeConfig
    from edgekd.export import export_onnx
    from edgekd.models import Preprocessed, build_model
    from edgekd.quantize import quantize_model
    from edgekd.runtimes import OrtRunner

    x = load_validation(args.shared / "data" / "cifar10-train-jpeg.tar.gz", 1000)
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-batch-"))
    for arch in args.students:
        torch.manual_seed(0)
        model = Preprocessed(build_model(arch, 10, image_size=32), (0.4914, 0.4822, 0.4465),
                             (0.247, 0.2435, 0.2616)).eval()
        export_onnx(model, x[:8], tmp / f"{arch}.onnx", 17)
        quantize_model(tmp / f"{arch}.onnx", tmp / f"{arch}.int8.onnx", x[:200], QuantizeConfig())
        for threads in (1, 0):
            runner = OrtRunner(tmp / f"{arch}.int8.onnx", threads=threads)
            for b in args.batches:
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    for _ in range(19):
                        for i in range(0, len(x), b):
                            runner.predict(x[i:i + b])
                    best = min(best, time.perf_counter() - t0)
                print(f"{arch} onnxruntime INT8, {threads or 'all'} thread(s), batch {b}: "
                      f"{best * 5:.2f} s per 95,000 images", flush=True)
        imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2048, 32, 32, 3), np.uint8))
        for b in args.batches:
            best = float("inf")
            with torch.inference_mode():
                for i in range(0, 512, b):
                    model(imgs[i:i + b])
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(0, len(imgs), b):
                        model(imgs[i:i + b])
                    best = min(best, time.perf_counter() - t0)
            print(f"{arch} torch fp32, {torch.get_num_threads()} thread(s), batch {b}: {best:.3f} s per 2,048 images",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
