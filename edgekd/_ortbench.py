"""Latency, throughput and memory of ONNX / ORT-format models in onnxruntime and of ExecuTorch
programs (``.pte``); needs only numpy and the runtime of the models it runs (onnxruntime; for
``.pte`` the lightest ExecuTorch runtime installed, :class:`PteSession`), no edgekd, so the same
file runs on the build machine and on the device.

It is edgekd's one onnxruntime session and timing code: ``edgekd.runtimes.OrtRunner`` makes its
session with :func:`make_session`, ``edgekd.harness.measure_latency`` times any runner with
:func:`time_calls` and :func:`latency_record`, and ``edgekd bench`` runs this file per model:

    session, warning = make_session("student.int8.onnx", threads=1)
    ms, wall_s = time_calls(lambda: session.run(None, feeds), runs=100, warmup=10)
    latency_record(ms, wall_s, batch=1, threads=1, warmup=10)
        # -> {"batch": 1, "threads": 1, "runs": 100, "warmup": 10, "wall_s": ..., "min": ...,
        #     "mean": ..., "std": ..., "p50": ..., "p90": ..., "p95": ..., "p99": ..., "max": ...}

On a device, inside a bundle made by ``edgekd bundle`` (this file is its run.py):

    python run.py                          # every model of the bundle: latency, memory, accuracy
    python run.py --threads 2 --out results.json

One model, one measurement, JSON on stdout (what ``edgekd bench`` runs, in a fresh process per
model and thread count so the memory figures are that model's own):

    python run.py --measure model.onnx --threads 1 --runs 200 --warmup 20 [--seconds 5] [--batch 1]

What one measurement records (the fields of onnxruntime_perf_test, OpenVINO benchmark_app and
TFLite benchmark_model): session creation ms, first inference ms, warm-up runs, timed runs (a count
or a time budget), latency min / mean / std / p50 / p90 / p95 / p99 / max in ms (``latency_ms``:
the :func:`latency_record` a build's report.json holds too), throughput
(calls/s and images/s), resident memory of this process before the session (baseline) and at its
peak (Linux: VmHWM of /proc/self/status, else getrusage ru_maxrss), requested intra-op threads, the
process's OS thread count, CPU affinity, and the machine (platform, CPU, Python, onnxruntime
version and providers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

try:  # a bundle of ExecuTorch programs only runs without onnxruntime
    import onnxruntime as ort
except ImportError:  # pragma: no cover - the build machine always has it
    ort = None

try:  # inside edgekd; in a bundle, _ptesession.py lies beside run.py
    from ._ptesession import PTE_INSTALL, PTE_SUFFIX, ModelLoadError, PteSession, _pte_backend, pte_runtime_version
except ImportError:
    from _ptesession import PTE_INSTALL, PTE_SUFFIX, ModelLoadError, PteSession, _pte_backend, pte_runtime_version

FORMAT_VERSION = 1
RESULTS_FORMAT = "edgekd-device-results"
BUNDLE_FORMAT = "edgekd-bundle"


# ---------------------------------------------------------------------------------------------
# process and machine facts
# ---------------------------------------------------------------------------------------------

def _proc_status() -> dict:
    """Fields of /proc/self/status (Linux, Android); {} elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def _kib(text: str | None) -> int | None:
    return int(text.split()[0]) * 1024 if text else None


def memory_now() -> dict:
    """Current and peak resident set size of this process, in bytes, and how they were read."""
    st = _proc_status()
    rss, hwm = _kib(st.get("VmRSS")), _kib(st.get("VmHWM"))
    if hwm is not None:
        return {"rss_bytes": rss, "peak_rss_bytes": hwm, "source": "/proc/self/status VmRSS, VmHWM"}
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux and BSD
        return {"rss_bytes": None, "peak_rss_bytes": int(peak), "source": "getrusage ru_maxrss"}
    except (ImportError, OSError):
        return {"rss_bytes": None, "peak_rss_bytes": None, "source": "unavailable"}


def os_threads() -> int | None:
    n = _proc_status().get("Threads")
    return int(n) if n else None


def affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def set_affinity(cpus: list[int]) -> str | None:
    """Pin this process to ``cpus``; returns a warning instead of failing where it cannot."""
    if not cpus:
        return None
    if not hasattr(os, "sched_setaffinity"):
        return f"cpu_affinity {cpus} not applied: this OS has no sched_setaffinity"
    allowed = affinity() or []
    usable = [c for c in cpus if c in allowed]
    if not usable:
        return f"cpu_affinity {cpus} not applied: this machine offers CPUs {allowed}"
    try:
        os.sched_setaffinity(0, usable)
    except OSError as e:
        return f"cpu_affinity {cpus} not applied: {e}"
    return None if usable == cpus else f"cpu_affinity {cpus}: only {usable} exist here"


def _cpu_model() -> str:
    """x86: "model name"; arm64 Linux: "Hardware" / "Model" (e.g. "Raspberry Pi 4 Model B")."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = (t.strip() for t in line.split(":", 1))
                    info.setdefault(key.lower(), value)
    except OSError:
        pass
    for key in ("model name", "hardware", "model", "cpu model"):
        if info.get(key) and not info[key].isdigit():
            return info[key]
    return platform.processor()


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return _kib(line.split(":", 1)[1])
    except OSError:
        pass
    return None


def machine_facts() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "cpu_model": _cpu_model(),
            "platform": platform.platform(), "system": platform.system(), "node": platform.node(),
            "cpu_count": os.cpu_count(), "affinity": affinity(), "mem_total_bytes": _mem_total(),
            "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": ort.__version__ if ort else None,
            "providers": ort.get_available_providers() if ort else [],
            "executorch": pte_runtime_version()}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# sessions: every onnxruntime session of edgekd (OrtRunner's too) is made here
# ---------------------------------------------------------------------------------------------

CPU_PROVIDER = "CPUExecutionProvider"


def session_providers(providers: str | Sequence[str]) -> tuple[list[str], str | None]:
    """The execution providers to ask for: those of ``providers`` this onnxruntime has, then the
    CPU one as the fallback; and a warning naming those it lacks (None when it has them all)."""
    wanted = [providers] if isinstance(providers, str) else list(providers)
    have = ort.get_available_providers() if ort else []
    used = [p for p in wanted if p in have]
    used += [] if CPU_PROVIDER in used else [CPU_PROVIDER]
    missing = [p for p in wanted if p not in have]
    if not missing:
        return used, None
    return used, (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this onnxruntime "
                  f"({', '.join(have)}); used {used[0]}")


def make_session(model: str | os.PathLike, threads: int = 0, providers: str | Sequence[str] = CPU_PROVIDER,
                 spinning: bool = True) -> tuple:
    """An onnxruntime session of ``model`` (.onnx or .ort): ``threads`` intra-op threads (0: the
    onnxruntime default), one inter-op thread, errors-only logging, ``providers`` with the CPU
    fallback; ``spinning=False``: its intra-op threads sleep rather than spin while they wait for
    work (for runs that alternate with another runtime's, whose threads they would slow).
    Returns (session, warning or None); a file onnxruntime cannot load is a :class:`ModelLoadError`."""
    model = os.fspath(model)
    if ort is None:
        raise ModelLoadError(f"{model}: onnxruntime is not installed (pip install onnxruntime)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    used, warning = session_providers(providers)
    if not os.path.exists(model):
        raise ModelLoadError(f"{model}: model file does not exist")
    if not os.path.isfile(model):  # a folder, a FIFO, a device: onnxruntime would hang or fail obscurely
        raise ModelLoadError(f"{model}: not a regular file, so not a model onnxruntime can load")
    try:
        return ort.InferenceSession(model, so, providers=used), warning
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{model}: onnxruntime cannot load it ({first[:200]})") from None


class Model:
    """One model file in its runtime: ``predict(images) -> logits``, the input's shape and dtype,
    the provider / backend that runs it. Made by :func:`open_model`."""

    def __init__(self, path: str, threads: int, provider: str) -> None:
        self.path = path
        if path.endswith(PTE_SUFFIX):
            self.pte = PteSession(path, threads)
            self.session, self.warning = None, self.pte.warning
            self.provider = self.pte.provider
            self.input_shape, self.input_dtype = (None, *self.pte.input_shape[1:]), "uint8"
            self.runtime = self.pte.runtime
        else:
            self.pte = None
            self.session, self.warning = make_session(path, threads, provider)
            self.provider = self.session.get_providers()[0]
            inp = self.session.get_inputs()[0]
            self.input_name, self.input_shape, self.input_dtype = inp.name, tuple(inp.shape), inp.type
            self.runtime = "onnxruntime"

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.pte is not None:
            return self.pte.run(images)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images)})[0]

    def random_input(self, batch: int, seed: int = 0) -> np.ndarray:
        if self.pte is not None:
            if batch > self.pte.max_batch:
                raise ModelLoadError(f"{self.path}: batch {batch} is more than the program's "
                                     f"{self.pte.max_batch} images per call")
            rng = np.random.default_rng(seed)
            return rng.integers(0, 256, (batch, *self.pte.input_shape[1:]), dtype=np.uint8)
        return random_input(self.session, batch, seed)[self.input_name]


def open_model(path: str | os.PathLike, threads: int = 0, provider: str = "CPUExecutionProvider") -> Model:
    """``path`` (.onnx, .ort or .pte) ready to run; a file its runtime cannot load (or no runtime)
    is a :class:`ModelLoadError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: model file does not exist")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: not a regular file, so not a model a runtime can load")
    return Model(path, threads, provider)


def random_input(session, batch: int, seed: int = 0) -> dict:
    """Random data of each input's shape (symbolic first axis = ``batch``) and dtype."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = list(inp.shape)
        for i, d in enumerate(shape):
            if not isinstance(d, int) or d < 0:
                if i != 0:
                    raise SystemExit(f"{inp.name}: dynamic axis {i} ({d!r}); only the batch axis may be dynamic")
                shape[i] = batch
        if "uint8" in inp.type:
            feeds[inp.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif "int" in inp.type:
            feeds[inp.name] = rng.integers(0, 10, shape).astype(np.int64 if "64" in inp.type else np.int32)
        else:
            feeds[inp.name] = rng.random(shape, dtype=np.float32)
    return feeds


# ---------------------------------------------------------------------------------------------
# timing and statistics: the same for every runtime (onnxruntime here, torch through the harness)
# ---------------------------------------------------------------------------------------------

def time_calls(call: Callable[[], object], runs: int = 100, warmup: int = 10, seconds: float = 0.0,
               synchronize: Callable[[], object] | None = None) -> tuple[np.ndarray, float]:
    """``warmup`` untimed calls, then timed ones: ``runs`` of them, or with ``seconds`` > 0 as
    many as fit in that time (at least 10). ``synchronize`` (e.g. torch.cuda.synchronize) is
    called after the warm-up and inside each timed call, so queued device work is counted.
    Returns (milliseconds of each timed call, wall seconds of the timed loop)."""
    for _ in range(warmup):
        call()
    if synchronize is not None:
        synchronize()
    times: list[float] = []
    t_start = time.perf_counter()
    deadline = t_start + seconds

    def more() -> bool:  # a time budget still times at least 10 calls
        return (len(times) < 10 or time.perf_counter() < deadline) if seconds > 0 else len(times) < runs

    while more():
        t0 = time.perf_counter()
        call()
        if synchronize is not None:
            synchronize()
        times.append(time.perf_counter() - t0)
    wall_s = time.perf_counter() - t_start
    return np.asarray(times, dtype=np.float64) * 1e3, wall_s


def latency_stats(ms: np.ndarray) -> dict:
    """min, mean, std (sample, ddof 1; 0 for one run), p50, p90, p95, p99 (linear interpolation)
    and max of ``ms``."""
    ms = np.asarray(ms, dtype=np.float64)
    if ms.size == 0:
        raise ValueError("latency statistics need at least one timed run")
    pct = np.percentile(ms, [50, 90, 95, 99])
    return {"min": float(ms.min()), "mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            "p50": float(pct[0]), "p90": float(pct[1]), "p95": float(pct[2]), "p99": float(pct[3]),
            "max": float(ms.max())}


def latency_record(ms: np.ndarray, wall_s: float, batch: int, threads: int, warmup: int) -> dict:
    """The latency record every measurement writes (a device run's and a build's ``latency_ms``):
    how it was measured (batch, threads, timed runs, warm-up runs, wall seconds of the timed
    loop) and :func:`latency_stats` of the timed runs, in ms."""
    return {"batch": int(batch), "threads": int(threads), "runs": int(len(ms)), "warmup": int(warmup),
            "wall_s": float(wall_s), **latency_stats(ms)}


# ---------------------------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------------------------

def measure(model: str, threads: int = 1, runs: int = 100, warmup: int = 10, seconds: float = 0.0,
            batch: int = 1, provider: str = CPU_PROVIDER, cpu_affinity: list[int] | None = None,
            feeds: dict | None = None) -> dict:
    """Time ``model`` in this process. With ``seconds`` > 0 the timed loop runs for that long
    (at least 10 calls) instead of ``runs`` calls. Memory: baseline before the session, peak after."""
    warnings = [w for w in [set_affinity(cpu_affinity or [])] if w]
    t0 = time.perf_counter()
    if model.endswith(PTE_SUFFIX):  # the runtime's import is in the baseline (executorch's holds torch)
        _pte_backend()
    import_ms = (time.perf_counter() - t0) * 1e3
    mem0 = memory_now()
    t0 = time.perf_counter()
    m = open_model(model, threads, provider)
    session_ms = (time.perf_counter() - t0) * 1e3
    warnings += [m.warning] if m.warning else []
    x = m.random_input(batch) if feeds is None else next(iter(feeds.values()))
    batch = int(x.shape[0])
    t0 = time.perf_counter()
    m.predict(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    ms, wall_s = time_calls(lambda: m.predict(x), runs, warmup, seconds)
    latency = latency_record(ms, wall_s, batch, threads, warmup)
    mem1 = memory_now()
    peak, base = mem1["peak_rss_bytes"], mem0["rss_bytes"] or mem0["peak_rss_bytes"]
    return {
        "model": os.path.basename(model), "size_bytes": os.path.getsize(model),
        "runtime": m.runtime, "provider": m.provider, "batch": batch, "input_shapes": {"image": list(x.shape)},
        "threads": threads, "os_threads": os_threads(), "affinity": affinity(),
        "runtime_import_ms": import_ms, "session_create_ms": session_ms, "first_inference_ms": first_ms,
        "warmup": warmup, "runs": latency["runs"], "seconds": seconds if seconds > 0 else None,
        "wall_s": wall_s,
        "latency_ms": latency,
        "throughput": {"inferences_per_s": latency["runs"] / wall_s, "images_per_s": latency["runs"] * batch / wall_s},
        "memory": {"baseline_rss_bytes": base, "peak_rss_bytes": peak,
                   "model_rss_bytes": (peak - base) if peak is not None and base is not None else None,
                   "source": mem1["source"]},
        "machine": machine_facts(),
        "warnings": warnings,
    }


def measure_in_subprocess(model: str, threads: int = 1, runs: int = 100, warmup: int = 10,
                          seconds: float = 0.0, batch: int = 1, provider: str = CPU_PROVIDER,
                          cpu_affinity: list[int] | None = None, python: str | None = None,
                          timeout: float | None = None) -> dict:
    """:func:`measure` in a fresh interpreter running this file (so the memory is the model's own)."""
    cmd = [python or sys.executable, os.path.abspath(__file__), "--measure", model, "--threads", str(threads),
           "--runs", str(runs), "--warmup", str(warmup), "--seconds", str(seconds), "--batch", str(batch),
           "--provider", provider]
    if cpu_affinity:
        cmd += ["--cpu-affinity", ",".join(map(str, cpu_affinity))]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"measuring {model} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------------
# bundle mode: every model of the bundle, latency + memory + accuracy on the evaluation set
# ---------------------------------------------------------------------------------------------

def _predict(model: Model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [model.predict(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.int64)


def run_bundle(bundle_dir: str, threads: int | None, out: str | None, quiet: bool = False) -> dict:
    with open(os.path.join(bundle_dir, "bundle.json")) as f:
        bundle = json.load(f)
    if bundle.get("format") != BUNDLE_FORMAT:
        raise SystemExit(f"{bundle_dir}/bundle.json is not an edgekd bundle")
    prof = bundle["profile"]
    threads = threads or prof["threads"]
    say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    evalset = np.load(os.path.join(bundle_dir, bundle["eval"]["file"]), allow_pickle=False)
    results: dict = {"format": RESULTS_FORMAT, "version": FORMAT_VERSION,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "profile": prof, "bundle": {**bundle["build"], "bundle_created": bundle["created"]},
                     "threads": threads, "device": machine_facts(), "models": {}, "warnings": []}
    for m in bundle["models"]:
        path = os.path.join(bundle_dir, m["file"])
        if path.endswith(PTE_SUFFIX) and _pte_backend()[0] is None:
            results["warnings"].append(f"{m['id']}: not run, no ExecuTorch runtime here ({PTE_INSTALL})")
            say(results["warnings"][-1])
            continue
        if not path.endswith(PTE_SUFFIX) and ort is None:
            results["warnings"].append(f"{m['id']}: not run, onnxruntime is not installed here "
                                       "(pip install onnxruntime)")
            say(results["warnings"][-1])
            continue
        say(f"{m['id']}: measuring {m['file']} ({threads} threads, {prof['latency_runs']} runs)")
        rec = {k: m[k] for k in ("file", "format", "precision", "primary")}
        rec["sha256_ok"] = sha256_file(path) == m["sha256"]
        rec.update(measure_in_subprocess(path, threads, prof["latency_runs"], prof["warmup_runs"], 0.0,
                                         prof["batch"], prof["execution_provider"], prof["cpu_affinity"]))
        rec.pop("machine", None)
        results["warnings"] += [f"{m['id']}: {w}" for w in rec["warnings"]]
        model = open_model(path, threads, prof["execution_provider"])
        rec["accuracy"], rec["agreement_with_teacher"] = {}, {}
        for s in bundle["eval"]["sets"]:
            pred = _predict(model, evalset[f"images/{s}"])
            rec["accuracy"][s] = float((pred == evalset[f"labels/{s}"]).mean())
            rec["agreement_with_teacher"][s] = float((pred == evalset[f"teacher/{s}"]).mean())
        rec["build_accuracy"] = m.get("build_accuracy")  # the same images on the build machine
        results["models"][m["id"]] = rec
    results["n_images"] = {s: int(len(evalset[f"labels/{s}"])) for s in bundle["eval"]["sets"]}
    if not quiet:
        print(format_results(results))
    if out:
        tmp = f"{out}.partial"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        os.replace(tmp, out)
        say(f"wrote {out}")
    return results


def format_results(results: dict) -> str:
    d = results["device"]
    lines = [f"device: {d['machine']} {d['cpu_model']}, {d['cpu_count']} CPUs, python {d['python']}, "
             f"onnxruntime {d['onnxruntime']}, ExecuTorch {d.get('executorch')}; profile {results['profile']['name']}, "
             f"{results['threads']} threads"]
    sets = list(next(iter(results["models"].values()))["accuracy"]) if results["models"] else []
    head = ["model", "p50 ms", "p90 ms", "p99 ms", "img/s", "peak MB", "session ms"] + [f"acc {s}" for s in sets]
    rows = [head]
    for mid, r in results["models"].items():
        lat = r["latency_ms"]
        peak = r["memory"]["peak_rss_bytes"]
        rows.append([mid + (" *" if r.get("primary") else ""), f"{lat['p50']:.3f}", f"{lat['p90']:.3f}",
                     f"{lat['p99']:.3f}", f"{r['throughput']['images_per_s']:.0f}",
                     "-" if peak is None else f"{peak / 1e6:.1f}", f"{r['session_create_ms']:.1f}"]
                    + [f"{100 * r['accuracy'][s]:.1f}%" for s in sets])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    lines += ["* the profile's deployed model"] + [f"warning: {w}" for w in results.get("warnings", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--measure", metavar="MODEL", help="measure one model in this process; JSON on stdout")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (bundle: the profile's)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seconds", type=float, default=0.0, help="time budget instead of --runs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--provider", default=CPU_PROVIDER)
    p.add_argument("--cpu-affinity", default="", help="comma-separated CPU ids to pin to")
    p.add_argument("--out", default="results.json", help="bundle mode: where to write the results JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.measure:
            cpus = [int(c) for c in args.cpu_affinity.split(",") if c.strip()]
            rec = measure(args.measure, max(1, args.threads), args.runs, args.warmup, args.seconds, args.batch,
                          args.provider, cpus)
            print(json.dumps(rec))
            return 0
        run_bundle(os.path.dirname(os.path.abspath(__file__)), args.threads or None, args.out, args.quiet)
    except ModelLoadError as e:  # one line, the last of stderr (what measure_in_subprocess reports)
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
