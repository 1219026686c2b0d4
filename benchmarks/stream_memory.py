"""Peak memory of a streamed ImageFolder build against the in-memory one (issue 20).

    python benchmarks/stream_memory.py gen /tmp/tree --images 88000 --size 64
    python benchmarks/stream_memory.py run /tmp/tree --name big --set data.stream=on \
        --set data.memory_mb=200 --json /tmp/stream.json

``gen`` writes a 10-class ImageFolder of JPEGs made from scikit-learn's bundled digits (each copy
upscaled to ``--size`` px, shifted by up to 1/8 of the image, tinted and noised with a seeded
generator), so the data set can be made as large as wanted without any download. ``run`` runs one
``edgekd build`` on it (the settings below plus ``--set``), samples the memory of the build's whole
process tree (the main process and its DataLoader workers) every 0.2 s and reports:

- ``peak_rss_main_mib``: the main process's peak resident set (``ru_maxrss``, what
  ``/usr/bin/time -v`` prints);
- ``peak_pss_tree_mib``: the largest sum over the tree of proportional set sizes
  (``/proc/<pid>/smaps_rollup`` Pss: pages shared between the main process and its forked workers
  counted once), so workers cannot hide memory;
- the decoded size of the data set, the build's wall time and the report's clean accuracies.

Fixed settings for every run: robustness off, 1 teacher and 1 student epoch, no cache, 50 latency
runs, 5 % test split with at most ``data.stream_test_images`` (2,000) test images held.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIXED = ["data.name=imagefolder", "robustness.enabled=false", "teacher.epochs=1", "teacher.min_steps=0",
         "distill.epochs=1", "distill.min_steps=0", "data.stream_test_images=2000",
         "data.test_fraction=0.05", "cache.dir=none", "measure.latency_runs=50"]


def gen(root: Path, images: int, size: int, seed: int) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from edgekd.pixels import upscale_gray

    if root.exists():
        raise SystemExit(f"{root} exists; remove it or pick another folder")
    d = load_digits()
    base = upscale_gray(d.images / 16.0, size).astype(np.float32)  # (1797, size, size, 3)
    rng = np.random.default_rng(seed)
    for k in range(10):
        (root / f"c{k}").mkdir(parents=True)
    counts = [0] * 10
    shift = max(1, size // 8)
    for start in range(0, images, 1000):
        n = min(1000, images - start)
        j = rng.integers(0, len(base), n)
        dx, dy = rng.integers(-shift, shift + 1, (2, n))
        tint = rng.uniform(0.6, 1.0, (n, 1, 1, 3)).astype(np.float32)
        x = np.stack([np.roll(base[a], (b, c), axis=(0, 1)) for a, b, c in zip(j, dy, dx)]) * tint
        x += rng.normal(0, 12, x.shape).astype(np.float32)
        x = np.clip(x, 0, 255).astype(np.uint8)
        for img, a in zip(x, j):
            k = int(d.target[a])
            Image.fromarray(img).save(root / f"c{k}" / f"{counts[k]:06d}.jpg", quality=90)
            counts[k] += 1
    mib = images * size * size * 3 / 2**20
    print(f"{root}: {images} JPEGs of {size}x{size}, {mib:,.0f} MiB decoded")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _by_stage(samples: list, timings: dict, wall: float) -> dict:
    """The main process's peak RSS in each stage's window: the stages' times laid end to end from
    the end of the run backwards (the start-up before the first stage goes to "startup"; the
    few writes after the last stage are counted in it). ``teacher_outputs`` is the start of ``distill``."""
    nested = {"teacher_outputs": "distill"}
    stages = [(k, v) for k, v in timings.items() if isinstance(v, (int, float)) and k != "total"
              and k not in nested]
    end, windows = wall, []
    for name, secs in reversed(stages):
        windows.append((name, end - secs, end))
        if name in nested.values():
            inner = [(k, timings[k]) for k, parent in nested.items() if parent == name and k in timings]
            for k, s in inner:
                windows.append((k, end - secs, end - secs + s))
        end -= secs
    windows.append(("startup", 0.0, end))
    return {name: round(max([r for t, r, _ in samples if a <= t < b] or [0]) / 1024, 1)
            for name, a, b in reversed(windows)}


def run(root: Path, name: str, sets: list[str], work: Path) -> dict:
    out = work / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "edgekd", "build", "-q", "-o", str(out)]
    for s in [*FIXED, f"data.path={root}", *sets]:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_pss, samples = 0, []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        pss = sum(_pss_kib(p) for p in _tree(proc.pid))
        peak_pss = max(peak_pss, pss)
        samples.append((time.perf_counter() - t0, _rss_kib(proc.pid), pss))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    log = proc.stdout.read()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"build failed ({code}): {' '.join(cmd)}\n{log[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    files = sum(1 for p in root.rglob("*.jpg"))
    import PIL.Image
    first = next(root.rglob("*.jpg"))
    w, h = PIL.Image.open(first).size
    rec = {"name": name, "sets": sets, "command": " ".join(cmd), "exit_code": code, "wall_s": round(wall, 1),
           "images": files, "decoded_mib": round(files * w * h * 3 / 2**20, 1),
           "streamed": (manifest.get("distributed") or {}).get("streamed"),
           "peak_rss_main_mib": round(usage.ru_maxrss / 1024, 1), "peak_pss_tree_mib": round(peak_pss / 1024, 1),
           "clean": {m: r["accuracy"]["clean"] for m, r in report["models"].items()},
           "peak_rss_main_mib_by_stage": _by_stage(samples, manifest.get("timings_s", {}), wall)}
    print(f"{name}: {files} images ({rec['decoded_mib']:,.0f} MiB decoded), streamed={rec['streamed']}, "
          f"peak RSS main {rec['peak_rss_main_mib']:,.0f} MiB, peak PSS tree {rec['peak_pss_tree_mib']:,.0f} MiB, "
          + ", ".join(f"{m} {100 * v:.1f}%" for m, v in rec["clean"].items()) + f" ({wall:.0f} s)", flush=True)
    print("  peak RSS (main) by stage, MiB: " + ", ".join(f"{k} {v:,.0f}" for k, v in
                                                         rec["peak_rss_main_mib_by_stage"].items()), flush=True)
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("root", type=Path)
    g.add_argument("--images", type=int, default=24000)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("root", type=Path)
    r.add_argument("--name", required=True)
    r.add_argument("--set", action="append", default=[])
    r.add_argument("--work", type=Path, default=Path("/tmp/stream-memory"))
    r.add_argument("--json", type=Path, help="append this run's record to a JSON list")
    a = p.parse_args()
    if a.cmd == "gen":
        gen(a.root, a.images, a.size, a.seed)
        return 0
    rec = run(a.root, a.name, a.set, a.work)
    if a.json:
        runs = json.loads(a.json.read_text()) if a.json.is_file() else []
        a.json.write_text(json.dumps([*runs, rec], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
