"""1 process against N torchrun processes (gloo on the CPU, NCCL on GPUs): is the student the same?

    python benchmarks/distributed.py --seeds 0 1 2 --procs 1 2 [-c CONFIG] [--set k=v ...] \
        --work /tmp/ddp-bench --json out.json

For each seed (``distill.seed``, and ``teacher.seed`` when the build trains its teacher) and each
process count, one full ``edgekd build`` with the same config, global batch and epochs: ``edgekd
build`` for 1, ``torchrun --standalone --nproc_per_node=N -m edgekd build`` for N. Each build gets
its own empty cache (``cache.dir``), so every teacher output and perturbed set is computed by the
processes of that build. Prints, per process count, the clean accuracy and mCA of the teacher and
the students over the seeds (mean, min-max spread), and whether the N-process mean lies inside the
1-process seed-to-seed range; with ``--json``, every build's figures, wall time and per-rank stage
timings (from the manifest). Builds run one after another; their wall times mean something only on
otherwise idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("teacher", "student_torch", "student_fp32", "student_int8")


def run_build(procs: int, seed: int, args, work: Path) -> dict:
    out = work / f"p{procs}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"distill.seed={seed}", f"teacher.seed={seed}", f"cache.dir={work / f'cache-p{procs}-s{seed}'}",
            *args.set]
    edgekd = ["-m", "edgekd", "build", "-q", "-o", str(out)] + (["-c", args.config] if args.config else [])
    edgekd += [a for s in sets for a in ("--set", s)]
    if procs == 1:
        cmd = [sys.executable, *edgekd]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *edgekd]
    shutil.rmtree(work / f"cache-p{procs}-s{seed}", ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(
        max(1, (os.cpu_count() or 1) // procs))})
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"build failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    rec = {"procs": procs, "seed": seed, "wall_s": round(wall, 1), "exit_code": proc.returncode,
           "command": " ".join(cmd), "distributed": manifest.get("distributed")}
    for m in MODELS:
        acc = report["models"][m]["accuracy"]
        rec[m] = {"clean": acc["clean"], "mca": acc.get("mca")}
    print(f"procs {procs} seed {seed}: " + ", ".join(f"{m} {100 * rec[m]['clean']:.2f}%" for m in MODELS)
          + f" ({wall:.0f} s)", flush=True)
    return rec


def summary(runs: list[dict], procs: list[int]) -> str:
    lines = ["| model | metric | " + " | ".join(f"{p} proc: mean [min, max]" for p in procs)
             + f" | {procs[-1]}-proc mean inside 1-proc range |", "|---" * (len(procs) + 3) + "|"]
    for m in MODELS:
        for metric in ("clean", "mca"):
            cells, ranges = [], {}
            for p in procs:
                v = [100 * r[m][metric] for r in runs if r["procs"] == p and r[m][metric] is not None]
                ranges[p] = v
                cells.append(f"{sum(v) / len(v):.2f} [{min(v):.2f}, {max(v):.2f}]" if v else "-")
            base, last = ranges.get(procs[0]), ranges.get(procs[-1])
            inside = "-" if not base or not last else (
                "yes" if min(base) <= sum(last) / len(last) <= max(base) else "no")
            lines.append(f"| {m} | {metric} | " + " | ".join(cells) + f" | {inside} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--work", default="/tmp/edgekd-ddp-bench")
    p.add_argument("--json")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for procs in args.procs:  # interleaved: a slow spell of the machine hits both
            runs.append(run_build(procs, seed, args, work))
            if args.json:
                Path(args.json).write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(summary(runs, args.procs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
