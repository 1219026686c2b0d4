"""Generation time of each corruption (5 severities, one `perturb.apply_severities`) at several chunk sizes (issue 21).

    python benchmarks/perturb_chunks.py 15,16,17,18,20,22            # chunk = 2^k elements
    python benchmarks/perturb_chunks.py 18 zoom_blur,snow             # some perturbations only
    python benchmarks/perturb_chunks.py                               # 2^15, 2^16, 2^17, 2^18, 2^20

The last column, "reg", is each kernel's registered chunk size (`chunk_elements`, else perturb's
default): what the sweep runs. Images: 1,000 CIFAR-10 validation images
(perturb_throughput.load_validation). Each cell is the best of 2 passes; outputs do not depend on the
chunk size (tests/test_perturb.py). One thread, torch too (zoom blur's matrix products, elastic's
grid_sample), as in the sweep's generating workers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perturb_throughput import load_validation  # noqa: E402

from edgekd import perturb  # noqa: E402
from edgekd.errors import ConfigError  # noqa: E402


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    try:
        chunks = [int(c) for c in (argv[0] if argv else "15,16,17,18,20").split(",")] + [None]  # None: as registered
        names = perturb.resolve(argv[1].split(",")) if len(argv) > 1 else list(perturb.COMMON) + list(perturb.EXTRA)
    except (ValueError, ConfigError) as e:
        print(f"perturb_chunks.py: {e} (usage: perturb_chunks.py [k,k,... [name,name,...]])", file=sys.stderr)
        return 2
    x = load_validation(ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz", 1000)
    seconds: dict[str, dict[int, list[float]]] = {n: {c: [] for c in chunks} for n in names}
    for _ in range(2):
        for n in names:
            for c in chunks:
                t0 = time.perf_counter()  # the 5 severities together, as the sweep generates them
                perturb.apply_severities(n, x, [1, 2, 3, 4, 5], 0, chunk_elements=None if c is None else 1 << c)
                seconds[n][c].append(time.perf_counter() - t0)
    print("name".ljust(18) + "".join((f"2^{c}" if c else "reg").rjust(7) for c in chunks))
    for n in names:
        print(n.ljust(18) + "".join(f"{min(seconds[n][c]):7.2f}" for c in chunks))
    print("total".ljust(18) + "".join(f"{sum(min(seconds[n][c]) for n in names):7.2f}" for c in chunks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
