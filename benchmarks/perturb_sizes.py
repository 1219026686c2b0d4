"""Generation time of the 19 corruptions x 5 severities at larger image sizes, per perturbation
(issue 21: "larger images expose more").

    python benchmarks/perturb_sizes.py                       # 153 images at 64 and 128 px
    python benchmarks/perturb_sizes.py --sizes 224 --images 50

Images: CIFAR-10 validation images (perturb_throughput.load_validation) upscaled with PIL BILINEAR;
sizes up to 64 px use the CIFAR-10-C table, larger ones ImageNet-C's. One thread (torch too), each
perturbation made as the sweep makes it (``perturb.apply_severities``), best of ``--passes`` passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation, upscaled  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--images", type=int, default=153)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")))
    args = ap.parse_args()

    import torch

    from edgekd import perturb

    torch.set_num_threads(1)
    x = load_validation(args.shared / "data" / "cifar10-train-jpeg.tar.gz", args.images)
    names = list(perturb.COMMON) + list(perturb.EXTRA)
    for size in args.sizes:
        xs = upscaled(x, size)
        for n in names:  # first calls (tables, photographs) out of the timing
            perturb.apply_severities(n, xs[:2], [1, 2, 3, 4, 5], 0)
        best = {n: float("inf") for n in names}
        for _ in range(args.passes):
            for n in names:
                t0 = time.perf_counter()
                perturb.apply_severities(n, xs, [1, 2, 3, 4, 5], 0)
                best[n] = min(best[n], time.perf_counter() - t0)
        print(f"{size} px, {len(xs)} images, table {perturb.table_for(size)}: {sum(best.values()):.2f} s")
        for n in sorted(names, key=best.get, reverse=True):
            print(f"  {n:18s} {best[n]:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
