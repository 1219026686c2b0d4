"""edgekd bench: latency statistics, throughput and memory of ONNX / ORT models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "latency (min/mean/std/p50/p90/p95/p99/max), throughput and peak memory of ONNX/ORT models"
DESCRIPTION = """\
Measure MODEL (an .onnx or .ort file, or an artifact directory: then student.fp32.onnx,
student.int8.onnx and student.int8.ort) in onnxruntime. Each model and thread count runs in a
fresh Python process that imports only numpy and onnxruntime, so the memory figures are the
model's own: session creation time, first inference, warm-up, N timed runs (or a time budget),
latency statistics, throughput, peak resident memory (and its increase over the process before the
session), threads and CPU affinity.

With --device PROFILE the profile's threads, batch, runs, warm-up, execution provider and CPU
affinity are used (options given here win) and each model is compared with the profile's budgets.
This measures on *this* machine; for the device itself use `edgekd bundle`.
Exit codes: 0 measured, 2 usage or input error."""


def _ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts must be integers >= 1")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".onnx / .ort file, or an artifact directory")
    p.add_argument("--device", metavar="PROFILE", help="device profile (name from `edgekd devices` or .toml path)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--runs", type=int, help="timed runs (default 100, or the profile's)")
    g.add_argument("--seconds", type=float, help="time budget of the timed loop instead of --runs")
    p.add_argument("--warmup", type=int, help="untimed runs first (default 10, or the profile's)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--threads", type=int, help="intra-op threads (default 1, or the profile's)")
    t.add_argument("--thread-sweep", type=_ints, metavar="1,2,4", help="measure at each thread count")
    p.add_argument("--batch", type=int, help="images per call (default 1, or the profile's)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")


def run(args: argparse.Namespace) -> int:
    from ..bench import bench, format_bench, resolve_models
    from ..device_profiles import load_profile
    from ..errors import InputError

    profile = load_profile(args.device) if args.device else None
    models = resolve_models(args.model)
    for name, v in (("--runs", args.runs), ("--warmup", args.warmup), ("--threads", args.threads),
                    ("--batch", args.batch)):
        if v is not None and v < (0 if name == "--warmup" else 1):
            raise InputError(f"{name} must be >= {0 if name == '--warmup' else 1}, got {v}")
    if args.seconds is not None and not args.seconds > 0:
        raise InputError(f"--seconds must be positive, got {args.seconds}")
    def pick(given, key: str, default):  # this command's option, else the profile's, else ours
        return given if given is not None else (getattr(profile, key) if profile else default)

    threads = args.thread_sweep or [pick(args.threads, "threads", 1)]
    recs = bench(models, threads, runs=pick(args.runs, "latency_runs", 100),
                 warmup=pick(args.warmup, "warmup_runs", 10), seconds=args.seconds or 0.0,
                 batch=pick(args.batch, "batch", 1),
                 provider=profile.execution_provider if profile else "CPUExecutionProvider",
                 cpu_affinity=profile.cpu_affinity if profile else None)
    print(format_bench(recs))
    if profile:
        print()
        print(_budget_lines(profile, recs))
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": profile.to_dict() if profile else None,
                                               "measurements": recs}, indent=2) + "\n")
    return 0


def _budget_lines(profile, recs: list[dict]) -> str:
    b = profile.budgets
    lines = [f"budgets of {profile.name} ({profile.summary()}), measured on this machine:"]
    for r in recs:
        shape = next(iter(r["input_shapes"].values()))
        checks = [("p90", r["latency_ms"]["p90"], b.max_latency_p90_ms, "ms"),
                  ("size", r["size_bytes"], b.max_size_bytes, "B"),
                  ("peak RSS", r["memory"]["peak_rss_bytes"], b.max_peak_memory_bytes, "B")]
        parts = [f"{n} {v:,.3f} {u} {'<=' if v <= lim else '>'} {lim:,.3f}" if u == "ms" else
                 f"{n} {v:,.0f} {u} {'<=' if v <= lim else '>'} {lim:,.0f}"
                 for n, v, lim, u in checks if lim is not None and v is not None]
        ok = all(v <= lim for _, v, lim, _ in checks if lim is not None and v is not None)
        note = "" if len(shape) < 3 or shape[1] == profile.input_size else \
            f" (input {shape[1]} px, the profile says {profile.input_size})"
        lines.append(f"  {r['model']} @ {r['threads']} threads: {'within' if ok else 'OVER'} budget: "
                     + "; ".join(parts) + note)
    return "\n".join(lines)
