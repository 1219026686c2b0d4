"""Cost of the build's adversarial part against the forward/backward passes its attacks are made of
(issue 21): is anything beyond the attack steps themselves left to remove?

    python benchmarks/adversarial_cost.py --size 64 --images 153 --repeats 3

The models are the default build's at ``--size`` px: the digits_teacher and the digits_student in
torch (the two attack sources), the student exported to ONNX fp32 and quantised to INT8, random
weights (timing does not depend on them; nothing is trained). In each repeat, side by side:

1. adversarial part: ``robustness.adversarial_predictions`` as the build runs it (FGSM and PGD-10
   at epsilons 1, 2, 4, 8 on both sources, every model run on every example set);
2. attack steps: the forward/backward passes the attacks are defined by, alone — per source and
   epsilon one gradient for FGSM and ``--steps`` for PGD (4 x 11 = 44 per source), each
   ``attacks._grad`` on the same batches.

Reported: medians, ranges and the ratio of the medians (<= 1.0: the adversarial part costs no
more than its attack steps). Images: uniform random uint8 (the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=153)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnxruntime
    import torch

    from edgekd.attacks import ATTACKS, _grad
    from edgekd.config import QuantizeConfig
    from edgekd.data import Split
    from edgekd.export import export_onnx
    from edgekd.models import Preprocessed, build_model
    from edgekd.quantize import quantize_model
    from edgekd.robustness import adversarial_predictions
    from edgekd.runtimes import OrtRunner, TorchRunner

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.images)
    clean = Split(x, y, np.arange(len(x)))
    torch.manual_seed(0)
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    sources = {name: Preprocessed(build_model(arch, 10, image_size=args.size), *norm).eval()
               for name, arch in (("teacher", "digits_teacher"), ("student_torch", "digits_student"))}
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-adv-"))
    export_onnx(sources["student_torch"], x[:8], tmp / "s.onnx", 17)
    quantize_model(tmp / "s.onnx", tmp / "s.int8.onnx", x[:64], QuantizeConfig())
    runners = {"teacher": TorchRunner(sources["teacher"]), "student_torch": TorchRunner(sources["student_torch"]),
               "student_fp32": OrtRunner(tmp / "s.onnx"), "student_int8": OrtRunner(tmp / "s.int8.onnx")}
    epsilons = [1, 2, 4, 8]
    grads = len(epsilons) * (1 + args.steps)  # FGSM: 1 per epsilon, PGD: steps per epsilon
    adv_s, steps_s, detail = [], [], []
    for _ in range(args.repeats):
        seconds: dict = {}
        t0 = time.perf_counter()
        adversarial_predictions(runners, sources, clean, epsilons, args.steps, 0, args.batch, False,
                                seconds=seconds)
        adv_s.append(time.perf_counter() - t0)
        detail.append(seconds)
        t0 = time.perf_counter()
        for model in sources.values():
            for _ in range(grads):
                for i in range(0, len(x), args.batch):
                    _grad(model, torch.from_numpy(x[i:i + args.batch]).float(),
                          torch.from_numpy(y[i:i + args.batch]))
        steps_s.append(time.perf_counter() - t0)
    med = lambda v: float(np.median(v))  # noqa: E731
    res = {"size": args.size, "images": args.images, "attacks": list(ATTACKS), "epsilons": epsilons,
           "pgd_steps": args.steps, "grads_per_source": grads,
           "adversarial_s": adv_s, "attack_steps_s": steps_s, "detail_s": detail,
           "ratio_adversarial_over_steps": med(adv_s) / med(steps_s),
           "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                        "python": platform.python_version()}}
    print(f"{args.size} px, {args.images} images: adversarial part median {med(adv_s):.1f} s "
          f"[{min(adv_s):.1f}, {max(adv_s):.1f}], its {grads} attack steps per source alone {med(steps_s):.1f} s "
          f"[{min(steps_s):.1f}, {max(steps_s):.1f}]: ratio {med(adv_s) / med(steps_s):.2f}")
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
