"""``edgekd bench``: latency, throughput and memory of ONNX / ORT models, each in a fresh process.

    recs = bench(["out/student.int8.onnx"], threads=[1, 2], runs=200, warmup=20)
    print(format_bench(recs))
    memory_of(Path("out/student.int8.onnx"))   # -> {"peak_rss_bytes": ..., "baseline_rss_bytes": ...}

Every measurement runs ``edgekd/_ortbench.py`` (stdlib + numpy + onnxruntime only; the same file is
a bundle's run.py) with ``sys.executable`` in its own process, so the peak resident memory is that
model's process and not edgekd's (torch alone holds hundreds of MB).
"""

from __future__ import annotations

from pathlib import Path

from . import _ortbench
from .artifacts import model_files, model_suffixes
from .errors import InputError

SCRIPT = Path(_ortbench.__file__)  # what each measurement runs (and a bundle's run.py)
MODEL_SUFFIXES = model_suffixes()
# an artifact directory's models, in the order they are reported
ARTIFACT_FILES = tuple(a.file for a in model_files())


def resolve_models(target: str | Path) -> list[Path]:
    """MODEL: an .onnx / .ort file, or an artifact directory (then its fp32, int8 and .ort files)."""
    p = Path(target)
    if p.is_dir():
        found = [p / f for f in ARTIFACT_FILES if (p / f).is_file()]
        if not found:
            raise InputError(f"{p}: no models in this directory (looked for {', '.join(ARTIFACT_FILES)})")
        return found
    if not p.is_file():
        raise InputError(f"{p}: no such model file or artifact directory")
    if p.suffix not in MODEL_SUFFIXES:
        raise InputError(f"{p}: not a model file ({', '.join(MODEL_SUFFIXES)})")
    return [p]


def bench(models: list[Path], threads: list[int], runs: int = 100, warmup: int = 10, seconds: float = 0.0,
          batch: int = 1, provider: str = "CPUExecutionProvider", cpu_affinity: list[int] | None = None,
          timeout: float = 600.0) -> list[dict]:
    """One record per (model, thread count), each measured in a fresh subprocess."""
    out = []
    for m in models:
        for t in threads:
            try:
                out.append(_ortbench.measure_in_subprocess(str(m), t, runs, warmup, seconds, batch, provider,
                                                           cpu_affinity, timeout=timeout))
            except RuntimeError as e:
                raise InputError(str(e)) from None
            out[-1]["path"] = str(m)
    return out


def memory_of(model: Path, threads: int = 1, runs: int = 20) -> dict:
    """Peak / baseline / model resident memory of a process running ``model`` (a short benchmark)."""
    rec = bench([model], [threads], runs=runs, warmup=2)[0]
    runtime = rec.get("runtime", "onnxruntime")
    held = f"{runtime} (whose pybindings import torch)" if runtime == "executorch" else runtime
    return {**rec["memory"], "threads": threads, "runs": runs,
            "process": f"python + numpy + {held} only (edgekd/_ortbench.py, fresh process)"}


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.1f}"


def format_bench(recs: list[dict]) -> str:
    head = ["model", "thr", "session ms", "first ms", "runs", "min", "mean", "std", "p50", "p90", "p95",
            "p99", "max", "inf/s", "img/s", "peak MB", "model MB"]
    rows = [head]
    for r in recs:
        lat, mem = r["latency_ms"], r["memory"]
        rows.append([r["model"], str(r["threads"]), f"{r['session_create_ms']:.1f}",
                     f"{r['first_inference_ms']:.2f}", str(r["runs"])]
                    + [f"{lat[k]:.3f}" for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")]
                    + [f"{r['throughput']['inferences_per_s']:.0f}", f"{r['throughput']['images_per_s']:.0f}",
                       _mb(mem["peak_rss_bytes"]), _mb(mem["model_rss_bytes"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if recs:
        m = recs[0]["machine"]
        lines.append(f"latency in ms at batch {recs[0]['batch']}, warm-up {recs[0]['warmup']}; "
                     f"{m['machine']} {m['cpu_model']}, {m['cpu_count']} CPUs (affinity "
                     f"{recs[0]['affinity']}), onnxruntime {m['onnxruntime']}, {recs[0]['provider']}; "
                     "peak MB = peak RSS of the measuring process, model MB = peak minus its RSS "
                     "before the session")
        for r in recs:
            lines += [f"warning: {r['model']}: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)
