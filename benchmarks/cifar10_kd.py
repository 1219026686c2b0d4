"""CIFAR-10 with the fixture teacher: the KD student vs the same student trained without the teacher.

    python benchmarks/cifar10_kd.py --seeds 0 --out /tmp/cifar10-bench

For each seed, two builds of recipes/cifar10-resnet8-kd.toml with the same training budget:
``kd`` (Hinton KD + corruption-augmented training, as the recipe says) and ``nokd`` (the same with
``distill.loss = "ce"``: labels only, no teacher). Each is a real ``edgekd build`` subprocess,
timed end to end. Afterwards the teacher is exported to ONNX and its batch-1 latency measured
side by side with the students' fp32 and INT8 artifacts (same process, same thread count,
interleaved rounds), so the speed-up is a same-runtime ratio. Prints a markdown table and the
goals of issue 5 (INT8 student within 3 points of the teacher, >= 95 % of its mCA, >= 10x
smaller, >= 5x faster, KD beats no-KD); --json writes everything.

Needs ../shared/data/cifar10-train-jpeg.tar.gz and ../shared/fixtures/teacher-resnet18-cifar10.pt
(the recipe's paths). Nothing is downloaded. The builds share one cache folder (--cache): the
perturbed test sets and the teacher's outputs on the training images are computed by the first
build and reused by the others, as they would be for a user.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cifar10-resnet8-kd.toml"


# the recipe as it is (kd), and what each comparison changes
VARIANTS = {
    "kd": [],
    "nokd": ["distill.loss=ce"],                 # labels only, same budget and augmentation
    "kdplain": ["distill.augment=[]"],           # plain KD: no corruption augmentation
    "kdcached": ["distill.teacher_view=cached"],  # soft targets of the uncropped image
}


def load_build(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    wall = out.parent / f"{out.name}.wall_s"
    return {"exit": 0 if manifest["gate"].get("verdict") == "pass" else 1,
            "wall_s": float(wall.read_text()) if wall.is_file() else None,
            "timings_s": manifest["timings_s"], "report": json.loads((out / "report.json").read_text()),
            "gate": manifest["gate"].get("verdict")}


def run_build(out: Path, overrides: list[str], cache: Path, log: Path) -> dict:
    cmd = [sys.executable, "-m", "edgekd", "build", "-c", str(RECIPE), "-o", str(out), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("GITHUB_STEP_SUMMARY", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    log.write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"build failed (exit {proc.returncode}); see {log}\n{proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"exit": proc.returncode, "wall_s": round(wall, 1), "timings_s": manifest["timings_s"],
            "report": json.loads((out / "report.json").read_text()),
            "gate": manifest["gate"]["verdict"] if "verdict" in manifest["gate"] else manifest["gate"]}


def side_by_side_latency(builds: dict[str, Path], rounds: int, runs: int, tmp: Path) -> dict:
    """Batch-1, 1-thread onnxruntime latency of the teacher (exported here) and of every build's
    fp32 / INT8 student, measured in interleaved rounds; medians and spread over the rounds."""
    import torch

    from edgekd.config import load_config
    from edgekd.data import load_dataset
    from edgekd.export import export_onnx
    from edgekd.harness import measure_latency
    from edgekd.runtimes import OrtRunner
    from edgekd.teachers import load_teacher

    cfg = load_config(RECIPE)
    ds = load_dataset(cfg.data)
    teacher, _ = load_teacher(cfg.teacher, ds, "cpu")
    t_onnx = tmp / "teacher.fp32.onnx"
    export_onnx(teacher, ds.calib.x, t_onnx, cfg.export.opset)
    files = {"teacher_fp32_onnx": t_onnx}
    for name, out in builds.items():
        files[f"{name}/student_fp32"] = out / "student.fp32.onnx"
        files[f"{name}/student_int8"] = out / "student.int8.onnx"
    runners = {k: OrtRunner(p) for k, p in files.items()}
    sample = ds.test.x[:1]
    p50s: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            p50s[k].append(measure_latency(r, sample, runs, 20, 1)["p50"])
    torch.set_num_threads(1)
    t_torch = [measure_latency(_TorchTeacher(teacher), sample, runs, 20, 1)["p50"] for _ in range(rounds)]
    res = {k: {"p50_median_ms": statistics.median(v), "p50_min_ms": min(v), "p50_max_ms": max(v),
               "size_bytes": files[k].stat().st_size} for k, v in p50s.items()}
    res["teacher_torch"] = {"p50_median_ms": statistics.median(t_torch), "p50_min_ms": min(t_torch),
                            "p50_max_ms": max(t_torch)}
    return res


class _TorchTeacher:
    device = "cpu"

    def __init__(self, model) -> None:
        self.model = model

    def set_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)

    def predict(self, x):
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["kd", "nokd"], choices=list(VARIANTS))
    ap.add_argument("--reuse", action="store_true", help="reuse builds already in --out")
    ap.add_argument("--out", type=Path, default=Path("/tmp/cifar10-bench"))
    ap.add_argument("--cache", type=Path, help="cache folder shared by the builds (default OUT/cache)")
    ap.add_argument("--set", action="append", default=[], dest="overrides",
                    help="extra --set for every build (e.g. distill.epochs=4)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per latency round")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "cache"
    t_all = time.perf_counter()
    builds: dict[str, dict] = {}
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}-s{seed}"
            out = args.out / name
            if args.reuse and (out / "manifest.json").is_file():
                builds[name] = load_build(out)
                print(f"# reusing {name} ({builds[name]['wall_s']} s when built)", flush=True)
                continue
            print(f"# building {name} ...", flush=True)
            builds[name] = run_build(out, [f"distill.seed={seed}", *args.overrides, *VARIANTS[variant]],
                                     cache, args.out / f"{name}.log")
            (out.parent / f"{name}.wall_s").write_text(str(builds[name]["wall_s"]))
            print(f"#   {builds[name]['wall_s']} s, exit {builds[name]['exit']}", flush=True)
    t_lat = time.perf_counter()
    lat = side_by_side_latency({n: args.out / n for n in builds}, args.rounds, args.runs, args.out)
    lat_s = time.perf_counter() - t_lat
    total_s = time.perf_counter() - t_all

    first = next(iter(builds.values()))["report"]["models"]["teacher"]
    t_acc, t_mca, t_params = first["accuracy"]["clean"], first["accuracy"]["mca"], first["params"]
    t_lat_ms = lat["teacher_fp32_onnx"]["p50_median_ms"]
    rows = [("teacher (resnet18)", "torch fp32", t_acc, t_mca, 1.0, 1.0, lat["teacher_torch"]["p50_median_ms"],
             first["size_bytes"], t_params, None),
            ("teacher (resnet18)", "onnx fp32", t_acc, t_mca, 1.0, 1.0, t_lat_ms,
             lat["teacher_fp32_onnx"]["size_bytes"], t_params, None)]
    for name, b in builds.items():
        for mid, label in (("student_fp32", "onnx fp32"), ("student_int8", "onnx int8")):
            m = b["report"]["models"][mid]
            rows.append((name, label, m["accuracy"]["clean"], m["accuracy"]["mca"],
                         m["robustness"]["retention"], m["agreement_with_teacher"]["clean"],
                         lat[f"{name}/{mid}"]["p50_median_ms"], m["size_bytes"], m["params"], b["wall_s"]))
    print()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    print("| model | artifact | clean acc | mCA | retention | agreement | p50 ms (b1, 1 thr) | size | params | build wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2%} | {r[3]:.2%} | {r[4]:.3f} | {r[5]:.2%} | {r[6]:.3f} | "
              f"{r[7] / 1e6:.2f} MB | {r[8]:,} | {'' if r[9] is None else r[9]} |")
    print()
    for name, b in builds.items():
        if not name.startswith("kd-") or name.replace("kd-", "nokd-", 1) not in builds:
            continue
        m = b["report"]["models"]["student_int8"]
        nokd = builds[name.replace("kd-", "nokd-", 1)]["report"]["models"]["student_int8"]
        lat8 = lat[f"{name}/student_int8"]["p50_median_ms"]
        print(f"goals ({name}, INT8): clean {100 * (m['accuracy']['clean'] - t_acc):+.2f} pt vs teacher "
              f"(goal >= -2); mCA {m['accuracy']['mca'] / t_mca:.1%} of teacher (goal >= 95%); "
              f"{t_params / m['params']:.0f}x fewer params, {first['size_bytes'] / m['size_bytes']:.0f}x "
              f"smaller file (goal >= 10x); {t_lat_ms / lat8:.1f}x faster than the ONNX teacher, "
              f"{lat['teacher_torch']['p50_median_ms'] / lat8:.1f}x than the torch teacher (goal >= 5x); "
              f"KD - noKD clean {100 * (m['accuracy']['clean'] - nokd['accuracy']['clean']):+.2f} pt, "
              f"mCA {100 * (m['accuracy']['mca'] - nokd['accuracy']['mca']):+.2f} pt")
    for name, b in builds.items():
        plain = name.replace("kd-", "kdplain-", 1)
        if name.startswith("kd-") and plain in builds:
            m, p = (x["report"]["models"]["student_int8"]["accuracy"] for x in (b, builds[plain]))
            print(f"robust KD ({name}) vs plain KD, INT8: mCA {100 * (m['mca'] - p['mca']):+.2f} pt "
                  f"(goal >= +3), clean {100 * (m['clean'] - p['clean']):+.2f} pt (goal >= -1)")
    print(f"\nwhole benchmark: {total_s / 60:.1f} min (latency side by side: {lat_s:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"builds": {k: {kk: vv for kk, vv in v.items() if kk != "report"}
                                                    | {"models": v["report"]["models"]}
                                                    for k, v in builds.items()},
                                         "latency": lat, "total_s": total_s}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
