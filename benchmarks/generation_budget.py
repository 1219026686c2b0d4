"""Where the perturbed sets' generation CPU goes: per corruption, and how much of it draws random numbers.

    python benchmarks/generation_budget.py --images 1000
    python benchmarks/generation_budget.py --images 153 --size 128 --json budget.json

Each corruption the sweep generates (perturb's common and extra families, as robustness_sweep.py)
makes its 5 severities of all the images on one thread, with the sweep's call
(``perturb.apply_severities``), ``--repeats`` times; the table shows each one's median process
CPU-s and, of it, the CPU-s spent in the random-number draws its kernel asks for (``Rng``:
uniforms, normals, integers, Poisson counts; timed at the outermost call). A corruption that draws
nothing is deterministic: these are the ones byte-identical to the reference, whose arithmetic is
fixed. The totals split the generation between the two, which with robustness_sweep.py's
"generation CPU-s allowed for 1.5x" tells how far each part would have to fall.
Images: as robustness_sweep.py (the CIFAR-10 validation split of SHARED/data; `--size` upscales).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation, upscaled  # noqa: E402

# the Rng methods the kernels call (the others are called by these)
DRAWS = ("uniform", "normal", "integers", "poisson_many")


def timed_draws(rng_class) -> dict[str, float]:
    """Wrap the drawing methods of ``rng_class`` so the process CPU-s of their outermost calls add
    up in the returned dict's "s" and their number in "calls" (a draw that calls another counts once)."""
    clock = {"s": 0.0, "calls": 0, "depth": 0}
    for name in DRAWS:
        def wrap(fn):
            @functools.wraps(fn)
            def timed(self, *a, **k):
                clock["depth"] += 1
                t0 = time.process_time()
                try:
                    return fn(self, *a, **k)
                finally:
                    clock["depth"] -= 1
                    if clock["depth"] == 0:
                        clock["s"] += time.process_time() - t0
                        clock["calls"] += 1
            return timed
        setattr(rng_class, name, wrap(getattr(rng_class, name)))
    return clock


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (CIFAR's 32, or upscaled)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from edgekd import _rng, perturb
    from edgekd.cores import one_blas_thread

    torch.set_num_threads(1)  # one thread, as in the sweep's generating process
    one_blas_thread()
    x = load_validation(args.shared / "data" / "cifar10-train-jpeg.tar.gz", args.images)
    x = upscaled(x, args.size)
    names = list(perturb.COMMON) + list(perturb.EXTRA)
    clock = timed_draws(_rng.Rng)
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    drawn: set[str] = set()  # the corruptions that draw random numbers
    for n in names:  # a first run each: imports, tables, the allocator
        perturb.apply_severities(n, x, [1, 2, 3, 4, 5], 0)
    for _ in range(args.repeats):
        for n in names:
            clock["s"], clock["calls"] = 0.0, 0
            t0 = time.process_time()
            perturb.apply_severities(n, x, [1, 2, 3, 4, 5], 0)
            runs[n].append((time.process_time() - t0, clock["s"]))
            if clock["calls"]:
                drawn.add(n)
    rows = {}
    for n in names:
        total = sorted(t for t, _ in runs[n])
        draws = sorted(d for _, d in runs[n])
        rows[n] = {"cpu_s": total[len(total) // 2], "draws_cpu_s": draws[len(draws) // 2],
                   "cpu_s_each": [t for t, _ in runs[n]]}
    random = [n for n in names if n in drawn]
    fixed = [n for n in names if n not in random]
    res = {"images": len(x), "size_px": x.shape[1], "repeats": args.repeats, "corruptions": rows,
           "deterministic_cpu_s": sum(rows[n]["cpu_s"] for n in fixed),
           "random_cpu_s": sum(rows[n]["cpu_s"] for n in random),
           "random_draws_cpu_s": sum(rows[n]["draws_cpu_s"] for n in random),
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
           "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}}
    print(f"{len(x)} images at {x.shape[1]} px, 5 severities, one thread, median of {args.repeats} (CPU-s):")
    for group, members in (("random", random), ("deterministic", fixed)):
        for n in sorted(members, key=lambda n: -rows[n]["cpu_s"]):
            r = rows[n]
            print(f"  {group:13s} {n:18s} {r['cpu_s']:6.3f}" + (f"  drawing {r['draws_cpu_s']:.3f}" if n in drawn else ""))
    print(f"total {res['deterministic_cpu_s'] + res['random_cpu_s']:.2f}: deterministic {res['deterministic_cpu_s']:.2f}"
          f" ({len(fixed)}), random {res['random_cpu_s']:.2f} ({len(random)}), of which drawing "
          f"{res['random_draws_cpu_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
