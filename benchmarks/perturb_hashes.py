"""The sha256 of every perturbation x severity on three image sets, to show that a change to the
kernels keeps their bytes (issue 21: "the byte-identical corruptions must stay byte-identical").

    python benchmarks/perturb_hashes.py --out /tmp/before.json          # on the commit before
    python benchmarks/perturb_hashes.py --compare /tmp/before.json      # after: lists what differs

Sets: 1,000 CIFAR-10 validation images (32 px, the CIFAR table), their first 100 resized to 64 px
(BILINEAR; still the CIFAR table) and the first 200 as grey (C = 1): 21 perturbations x 5
severities x 3 sets = 315 cells, made as the sweep makes them (``perturb.apply_severities``, seed 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation, upscaled  # noqa: E402


def cells(shared: Path) -> dict[str, str]:

    from edgekd import perturb

    x = load_validation(shared / "data" / "cifar10-train-jpeg.tar.gz", 1000)
    sets = {"cifar": x,
            "px64": upscaled(x[:100], 64),
            "grey": x[:200].mean(axis=3, keepdims=True).astype(np.uint8)}
    out = {}
    for tag, images in sets.items():
        for name in perturb.names():
            for sev, y in perturb.apply_severities(name, images, [1, 2, 3, 4, 5], 0).items():
                out[f"{tag}/{name}/{sev}"] = hashlib.sha256(y.tobytes()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKD_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--out", type=Path, help="write the hashes here (JSON)")
    ap.add_argument("--compare", type=Path, help="hashes written by --out on another commit")
    args = ap.parse_args()
    got = cells(args.shared)
    if args.out:
        args.out.write_text(json.dumps(got, indent=1) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        same = [k for k in got if before.get(k) == got[k]]
        differ = sorted({k.split("/")[1] for k in got if before.get(k) != got[k]})
        print(f"{len(same)} of {len(got)} cells equal; perturbations that differ: {', '.join(differ) or 'none'}")
    else:
        print(f"{len(got)} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
