"""Throughput of edgekd.perturb on CIFAR-10 images: every perturbation x severity 1..5.

    python benchmarks/perturb_throughput.py                       # 5000 images = the validation split
    python benchmarks/perturb_throughput.py --images 1000 --json perturb.json
    python benchmarks/perturb_throughput.py --perturbations common,occlusion --shared /path/to/shared

Images come from SHARED/data/cifar10-train-jpeg.tar.gz (read in place, nothing is extracted): the
validation files 4500.jpg .. 4999.jpg of each class, an equal share of each class in class order
(all 5000 when --images 5000). Each (perturbation, severity) cell is generated once on all images
after a warm-up on 64 images; the table shows images/s per severity, their median and the cell's
total seconds, with library versions and the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import PIL
import scipy
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd import perturb  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_validation(archive: Path, n: int) -> np.ndarray:
    """``n`` validation images (uint8, N x 32 x 32 x 3): per class the first files of 4500..4999."""
    per_class = [n // 10 + (1 if k < n % 10 else 0) for k in range(10)]
    wanted = {f"train/{c}/{i:04d}.jpg": (k, i) for k, c in enumerate(CLASSES)
              for i in range(4500, 4500 + per_class[k])}
    found: dict[tuple[int, int], np.ndarray] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            key = wanted.get(member.name.lstrip("./"))
            if key is not None:
                data = tar.extractfile(member).read()
                found[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if len(found) != len(wanted):
        raise SystemExit(f"{archive}: found {len(found)} of the {len(wanted)} validation images asked for")
    return np.stack([found[k] for k in sorted(found)])


def upscaled(x: np.ndarray, size: int) -> np.ndarray:
    """The images at ``size`` x ``size`` px (PIL BILINEAR, one image at a time): the larger images
    of the size benchmarks; ``x`` itself at its own size."""
    if size == x.shape[1] == x.shape[2]:
        return x
    return np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR)) for i in x])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000, help="number of validation images (max 5000)")
    ap.add_argument("--shared", type=Path,
                    default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")),
                    help="the shared folder holding data/cifar10-train-jpeg.tar.gz")
    ap.add_argument("--perturbations", default="all", help="comma-separated names or groups")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if not 1 <= args.images <= 5000:
        ap.error("--images must be in 1..5000")
    names = perturb.resolve(args.perturbations.split(","))

    t0 = time.perf_counter()
    x = load_validation(args.shared / "data" / "cifar10-train-jpeg.tar.gz", args.images)
    load_s = time.perf_counter() - t0
    env = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
           "pillow": PIL.__version__, "edgekd.perturb": perturb.VERSION, "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    print(f"# {len(x)} CIFAR-10 validation images {x.shape[1:]} loaded in {load_s:.1f} s; "
          f"table {perturb.table_for(x.shape[1])}")
    print("# " + ", ".join(f"{k} {v}" for k, v in env.items()))

    results, total = {}, 0.0
    head = f"{'perturbation':18s} {'family':7s}" + "".join(f"{'s' + str(s):>8s}" for s in range(1, 6))
    print(f"\n{head} {'median':>8s} {'seconds':>8s}   (images/s)")
    for name in names:
        perturb.apply(name, x[:64], 1, args.seed)  # warm-up: imports, caches, page faults
        rates, seconds = [], 0.0
        for severity in range(1, 6):
            t = time.perf_counter()
            perturb.apply(name, x, severity, args.seed)
            dt = time.perf_counter() - t
            rates.append(len(x) / dt)
            seconds += dt
        total += seconds
        fam = perturb.PERTURBATIONS.get(name).family
        results[name] = {"family": fam, "images_per_s": [round(r, 1) for r in rates],
                         "median_images_per_s": round(float(np.median(rates)), 1), "seconds": round(seconds, 3)}
        print(f"{name:18s} {fam:7s}" + "".join(f"{r:8.0f}" for r in rates)
              + f" {np.median(rates):8.0f} {seconds:8.2f}", flush=True)
    print(f"\ntotal generation: {total:.1f} s for {len(names)} x 5 cells of {len(x)} images "
          f"({len(names) * 5 * len(x) / total:.0f} images/s overall)")
    if args.json:
        args.json.write_text(json.dumps({"images": len(x), "image_shape": list(x.shape[1:]),
                                         "table": perturb.table_for(x.shape[1]), "seed": args.seed,
                                         "environment": env, "load_seconds": round(load_s, 2),
                                         "total_seconds": round(total, 2), "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
