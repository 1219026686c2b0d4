"""Cost of the full corruption sweep on CIFAR-sized images against pure onnxruntime inference.

    python benchmarks/robustness_sweep.py                 # 5000 validation images, 19 x 5 cells
    python benchmarks/robustness_sweep.py --images 1000 --repeats 3 --json sweep.json
    python benchmarks/robustness_sweep.py --images 153 --size 64 --students digits_student  # larger images

1. cold sweep: the sweep as the build runs it for one model on an empty cache —
   `robustness.sweep_predictions` generates the 19 x 5 (corruption, severity) sets in background
   threads, ahead of the INT8 student run on each in turn (onnxruntime, argmax);
2. warm sweep: the same with every set already in the cache (what every later build pays);
3. pure inference: the same inference (``harness.evaluate``: the batches shared out over the runner's
   single-thread sessions, ``OrtRunner.lanes``) on arrays already in memory; and, for comparison
   with the passes before the tenth, every batch on one session's intra-op threads.

Steps 1, 2 and 3 run side by side `--repeats` times (each cold sweep on a new empty cache), so a
change of the machine's speed reaches all three; medians, ranges and the ratio of the medians are
reported, with each repeat's cold / pure. Each cold sweep's CPU-s (this process and its generating
workers; the kernels' own among them) give its floor, that work spread over every core, and the
generation CPU-s a cold / pure of 1.5 would allow, the rest of the work as measured. Each student of
`--students` (default: `digits_student`, 24k parameters, the default build's student, and
`resnet8`, the CIFAR recipe's student with its CIFAR stem) is measured in turn in the same run. The
INT8 students have random weights, exported and quantised as the build does: timing does not
depend on the weights, and nothing trained on the data is made.
Images: the CIFAR-10 validation split of SHARED/data (see perturb_throughput.py); `--size` upscales
them (PIL BILINEAR, as perturb_sizes.py; above 64 px the corruptions use ImageNet-C's table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation, upscaled  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    from edgekd.config import MeasureConfig

    ap.add_argument("--batch", type=int, default=MeasureConfig().eval_batch_size,
                    help="inference batch, of the sweep and of pure inference alike (default: the build's)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--students", nargs="+", default=["digits_student", "resnet8"],
                    help="student architectures, measured one after the other in this run")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (CIFAR's 32, or upscaled)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnxruntime
    import torch

    from edgekd import perturb
    from edgekd.config import QuantizeConfig
    from edgekd.data import Split
    from edgekd.export import export_onnx
    from edgekd.harness import evaluate
    from edgekd.models import Preprocessed, build_model
    from edgekd.quantize import quantize_model
    from edgekd.robustness import PerturbedSets, sweep_predictions
    from edgekd.runtimes import OrtRunner

    x = load_validation(args.shared / "data" / "cifar10-train-jpeg.tar.gz", args.images)
    x = upscaled(x, args.size)
    split = Split(x, np.zeros(len(x), np.int64), np.arange(len(x)))
    names = list(perturb.COMMON) + list(perturb.EXTRA)
    sevs = [1, 2, 3, 4, 5]
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-sweep-"))
    med = lambda v: float(np.median(v))  # noqa: E731
    res = {"images": len(x), "size_px": x.shape[1], "cells": len(names) * len(sevs), "batch": args.batch,
           "threads": args.threads, "students": {},
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
           "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                        "numpy": np.__version__, "python": platform.python_version()}}
    for arch in args.students:
        torch.manual_seed(0)
        net = build_model(arch, 10, image_size=x.shape[1])  # stem "auto": the CIFAR stem where there is one
        model = Preprocessed(net, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)).eval()
        export_onnx(model, x[:8], tmp / f"{arch}.onnx", 17)
        quantize_model(tmp / f"{arch}.onnx", tmp / f"{arch}.int8.onnx", x[:200], QuantizeConfig())
        runner = OrtRunner(tmp / f"{arch}.int8.onnx", threads=args.threads)
        cold_s, eval_s, pure_s, one_s, cold_cpu = [], [], [], [], []
        for k in range(args.repeats):  # cold, warm and pure side by side in every repeat
            cache = tmp / f"cache-{arch}-{k}"  # empty: every set is generated
            cpu0, t0 = _cpu_s(), time.perf_counter()
            sets = PerturbedSets(split, seed=0, cache_dir=cache)
            sweep_predictions({"int8": runner}, sets, names, sevs, args.batch, progress=False)
            cold_s.append(time.perf_counter() - t0)
            cold_cpu.append({k: v - cpu0[k] for k, v in _cpu_s().items()} | {"generate": sets.generate_cpu_s})
            t0 = time.perf_counter()
            sweep_predictions({"int8": runner}, PerturbedSets(split, 0, cache), names, sevs,
                              args.batch, progress=False)
            eval_s.append(time.perf_counter() - t0)
            arrays = [sets.get(n, s) for n in names for s in sevs]  # in memory for the pure-inference pass
            t0 = time.perf_counter()
            for a in arrays:
                evaluate(runner, a, args.batch)  # the sweep's inference: the batches over runner.lanes()
            pure_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for a in arrays:  # the passes before the tenth: every batch on the one session's intra-op threads
                for i in range(0, len(a), args.batch):
                    runner.predict(a[i:i + args.batch])
            one_s.append(time.perf_counter() - t0)
            del arrays
            shutil.rmtree(cache, ignore_errors=True)
        # the cold sweep can take no less than its CPU work spread over every core: its floor, and
        # the most generation may cost for cold / pure <= 1.5, the sweep's other CPU-s as measured
        cores = os.cpu_count() or 1
        floor_s = [(c["self"] + c["workers"]) / cores for c in cold_cpu]
        budget = [1.5 * cores * p - c["self"] - (c["workers"] - c["generate"]) for c, p in zip(cold_cpu, pure_s)]
        res["students"][arch] = {
            "inferences": len(names) * len(sevs) * len(x), "cold_sweep_s": cold_s, "cold_cpu_s": cold_cpu,
            "warm_sweep_s": eval_s, "pure_inference_s": pure_s,
            "cold_median_s": med(cold_s), "warm_sweep_median_s": med(eval_s), "pure_median_s": med(pure_s),
            "ratio_warm_over_pure": med(eval_s) / med(pure_s),
            "ratio_cold_over_pure": med(cold_s) / med(pure_s),
            "ratio_cold_over_pure_each": [c / p for c, p in zip(cold_s, pure_s)],
            "pure_one_session_s": one_s, "pure_one_session_median_s": med(one_s),
            "ratio_cold_over_pure_one_session": med(cold_s) / med(one_s),
            "cold_floor_s": floor_s, "ratio_floor_over_pure": med(floor_s) / med(pure_s),
            "generate_budget_cpu_s_for_1_5x": budget}
        each = ", ".join(f"{c / p:.2f}" for c, p in zip(cold_s, pure_s))
        cpu = ", ".join(f"{c['self']:.2f} + {c['workers']:.2f} (generating {c['generate']:.2f})" for c in cold_cpu)
        print(f"{arch}: cold median {med(cold_s):.1f} s [{min(cold_s):.1f}, {max(cold_s):.1f}], warm median "
              f"{med(eval_s):.1f} s, pure median {med(pure_s):.1f} s [{min(pure_s):.1f}, {max(pure_s):.1f}]: "
              f"cold / pure {med(cold_s) / med(pure_s):.2f}x (each repeat: {each}), warm / pure "
              f"{med(eval_s) / med(pure_s):.2f}x; pure on one session's intra-op threads (before the tenth "
              f"pass) median {med(one_s):.1f} s, cold / that {med(cold_s) / med(one_s):.2f}x; cold CPU-s, this "
              f"process + its workers: {cpu}; that CPU work over {cores} cores (the floor of a cold sweep) "
              f"median {med(floor_s):.2f} s, {med(floor_s) / med(pure_s):.2f}x pure; generation's CPU-s "
              f"allowed for 1.5x, the rest as measured: {', '.join(f'{b:.2f}' for b in budget)}", flush=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _cpu_s() -> dict[str, float]:
    """CPU seconds so far of this process (every thread) and of its finished child processes (the
    sweep's generating workers)."""
    import resource

    mine, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"self": mine.ru_utime + mine.ru_stime, "workers": children.ru_utime + children.ru_stime}


if __name__ == "__main__":
    raise SystemExit(main())
