"""Results of a bundle's run.py on a device: validation, merge into report.json, gate checks.

    report = merge_device_results(Path("edgekd-out"), Path("results.json"))
    report["device_runs"][-1]["models"]["student_int8_ort"]["latency_ms"]["p90"]   # -> 3.2
    checks = device_run_checks(report, "report.json", [load_profile("rpi4")])      # gate.Check list

``merge_device_results`` appends one entry to the report's top-level ``device_runs`` list (schema in
docs/report.md; an entry with the same profile, device and time replaces the old one, so merging
twice is harmless), rewrites report.json atomically, adds a "Device runs" section to report.md and
updates the two files' sha256 in manifest.json.

The gate checks every device run against budgets: by default those of the profile recorded in the
run (the profile the bundle was made for); ``edgekd gate OUT --device PROFILE`` checks the runs of
that profile against the given profile's budgets instead (e.g. an edited copy of the file).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .device_profiles import DeviceProfile, profile_from_dict
from .errors import InputError
from .files import read_json, sha256_file

RESULTS_FORMAT = "edgekd-device-results"
_STATS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise InputError(f"{where}: {what}")


def load_device_results(path: Path) -> dict:
    """Read and validate a results file written by a bundle's run.py."""
    path = Path(path)
    res = read_json(path, f"device results {path} do not exist")
    w = str(path)
    _need(isinstance(res, dict) and res.get("format") == RESULTS_FORMAT, w,
          f"not an edgekd device results file (format is not {RESULTS_FORMAT!r}); it is the "
          "results.json that run.py of an `edgekd bundle` writes")
    _need(res.get("version") == 1, w, f"results version {res.get('version')!r}; this edgekd reads version 1")
    for key, kind in (("profile", dict), ("bundle", dict), ("device", dict), ("models", dict),
                      ("created", str), ("threads", int)):
        _need(isinstance(res.get(key), kind), w, f"{key} is missing or not a {kind.__name__}")
    prof = {k: v for k, v in res["profile"].items() if k != "source"}
    profile_from_dict(prof, f"{w} profile")
    _need(bool(res["models"]), w, "models is empty")
    for mid, m in res["models"].items():
        mw = f"{w} models.{mid}"
        _need(isinstance(m, dict), mw, "not a table")
        lat = m.get("latency_ms")
        _need(isinstance(lat, dict) and all(_num(lat.get(s)) for s in _STATS), mw,
              f"latency_ms must hold numbers {', '.join(_STATS)}")
        _need(_num(m.get("size_bytes")), mw, "size_bytes is missing")
        _need(isinstance(m.get("memory"), dict) and "peak_rss_bytes" in m["memory"], mw,
              "memory.peak_rss_bytes is missing")
        for key in ("accuracy", "agreement_with_teacher"):
            acc = m.get(key)
            _need(isinstance(acc, dict) and all(_num(v) and 0 <= v <= 1 for v in acc.values()), mw,
                  f"{key} must map evaluation sets to fractions in [0, 1]")
    return res


def run_entry(res: dict, results_path: Path) -> dict:
    """The ``device_runs`` entry of one results file."""
    models = {}
    for mid, m in res["models"].items():
        models[mid] = {
            "file": m.get("file"), "format": m.get("format"), "precision": m.get("precision"),
            "primary": bool(m.get("primary")), "sha256_ok": m.get("sha256_ok"), "size_bytes": m["size_bytes"],
            "provider": m.get("provider"),
            "latency_ms": {**{s: m["latency_ms"][s] for s in _STATS}, "batch": m.get("batch"),
                           "threads": m.get("threads"), "runs": m.get("runs"), "warmup": m.get("warmup")},
            "session_create_ms": m.get("session_create_ms"), "first_inference_ms": m.get("first_inference_ms"),
            "throughput": m.get("throughput"), "memory": m["memory"], "os_threads": m.get("os_threads"),
            "affinity": m.get("affinity"), "accuracy": m["accuracy"],
            "agreement_with_teacher": m["agreement_with_teacher"], "build_accuracy": m.get("build_accuracy"),
        }
    prof = res["profile"]
    primary = next((mid for mid, m in models.items() if m["primary"]), next(iter(models)))
    return {"profile": prof["name"], "profile_budgets": prof.get("budgets", {}), "primary_model": primary,
            "created": res["created"], "threads": res["threads"], "device": res["device"],
            "n_images": res.get("n_images"), "bundle": res["bundle"], "warnings": res.get("warnings", []),
            "results_file": Path(results_path).name, "models": models}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def merge_device_results(out_dir: Path, results_path: Path) -> dict:
    """Validate ``results_path`` and add it to ``out_dir``'s report as a ``device_runs`` entry.

    Raises :class:`InputError` when the results are malformed or come from a bundle of another
    build (its test images differ). Returns the updated report.
    """
    out_dir = Path(out_dir)
    report_path = out_dir / "report.json"
    report = read_json(report_path, f"{out_dir}: no report.json (not an edgekd artifact directory)")
    res = load_device_results(results_path)
    want = (report.get("dataset") or {}).get("test_sha256")
    got = res["bundle"].get("test_sha256")
    if want and got != want:
        raise InputError(f"{results_path} comes from a bundle of another build (its test images differ "
                         f"from {report_path}'s dataset.test_sha256); make a bundle of this build")
    entry = run_entry(res, results_path)
    same = (entry["profile"], entry["created"], entry["device"].get("node"))
    runs = [r for r in report.get("device_runs", [])
            if (r.get("profile"), r.get("created"), (r.get("device") or {}).get("node")) != same]
    report["device_runs"] = runs + [entry]
    _atomic_write(report_path, json.dumps(report, indent=2) + "\n")
    md = out_dir / "report.md"
    if md.is_file():
        _atomic_write(md, _with_md_section(md.read_text(), device_runs_markdown(report["device_runs"])))
    _update_manifest(out_dir, [report_path, md])
    return report


def _update_manifest(out_dir: Path, paths: list[Path]) -> None:

    man_path = out_dir / "manifest.json"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return  # the manifest is not ours to repair
    files = manifest.get("files")
    if not isinstance(files, dict):
        return
    for p in paths:
        if p.is_file():
            files[p.name] = {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
    _atomic_write(man_path, json.dumps(manifest, indent=2) + "\n")


MD_HEADING = "## Device runs"


def _with_md_section(text: str, section: str) -> str:
    """Replace report.md's device-runs section (or put it before the gate section, or at the end)."""
    if MD_HEADING in text:
        head, rest = text.split(MD_HEADING, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        return head + section + ("\n" + tail if tail else "")
    if "\n## Gate" in text:
        head, tail = text.split("\n## Gate", 1)
        return head + "\n" + section + "\n## Gate" + tail
    return text.rstrip("\n") + "\n\n" + section


def device_runs_markdown(runs: list[dict]) -> str:
    lines = [MD_HEADING, "", "Measured on the device by a bundle's run.py (latency in ms at the profile's "
             "batch; peak RSS of the process running the model).", "",
             "| profile | device | model | threads | p50 | p90 | p99 | img/s | peak MB | clean acc | "
             "mean acc perturbed | agree(T) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        dev = r["device"]
        for mid, m in r["models"].items():
            acc = m["accuracy"]
            pert = [v for k, v in acc.items() if k != "clean"]
            peak = m["memory"].get("peak_rss_bytes")
            lines.append(
                f"| {r['profile']} | {dev.get('machine')} {dev.get('cpu_model', '')} | {mid}"
                f"{' (deployed)' if m['primary'] else ''} | {m['latency_ms'].get('threads')} | "
                f"{m['latency_ms']['p50']:.3f} | {m['latency_ms']['p90']:.3f} | {m['latency_ms']['p99']:.3f} | "
                f"{(m.get('throughput') or {}).get('images_per_s', float('nan')):.0f} | "
                f"{'—' if peak is None else f'{peak / 1e6:.1f}'} | {100 * acc.get('clean', float('nan')):.1f}% | "
                f"{f'{100 * sum(pert) / len(pert):.1f}%' if pert else '—'} | "
                f"{100 * m['agreement_with_teacher'].get('clean', float('nan')):.1f}% |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# gate
# ---------------------------------------------------------------------------------------------

_BUDGETS = {  # budget key -> (path in a device run's model, unit, check name)
    "max_latency_p90_ms": ("latency_ms.p90", "ms", "on-device latency p90"),
    "max_size_bytes": ("size_bytes", "bytes", "model file size"),
    "max_peak_memory_bytes": ("memory.peak_rss_bytes", "bytes", "on-device peak memory (RSS)"),
}


def _get(node: Any, path: str) -> Any:
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def device_run_checks(report: dict, label: str, profiles: list[DeviceProfile] | None = None) -> list:
    """Budget checks of the report's device runs (``gate.Check`` objects).

    ``profiles`` None: every run against the budgets recorded with it. Otherwise each profile's
    runs against that profile's budgets; a profile without a run is an input error.
    """
    from .gate import Check

    runs = report.get("device_runs") or []
    if profiles is None:
        jobs = [(r, r.get("profile_budgets") or {}, r.get("primary_model")) for r in runs]
    else:
        jobs = []
        for p in profiles:
            mine = [r for r in runs if r.get("profile") == p.name]
            if not mine:
                have = sorted({str(r.get("profile")) for r in runs}) or ["none"]
                raise InputError(f"{label}: no device run of profile {p.name!r} (device runs: "
                                 f"{', '.join(have)}); run `edgekd bundle --device {p.name}` on the device "
                                 "and merge its results with `edgekd report OUT --device-results`")
            budgets = {k: getattr(p.budgets, k) for k in _BUDGETS}
            jobs += [(r, budgets, p.model_id) for r in mine]
    checks = []
    for run, budgets, model in jobs:
        name = run.get("profile")
        m = (run.get("models") or {}).get(model)
        if m is None:
            raise InputError(f"{label}: the device run of {name} has no model {model} (it has "
                             f"{', '.join(run.get('models') or [])}); make the bundle with that profile")
        for key, (path, unit, what) in _BUDGETS.items():
            limit = budgets.get(key)
            if limit is None or limit is False:
                continue
            value = _get(m, path)
            if not _num(value):
                raise InputError(f"{label}: device run {name} model {model} has no {path}, which the "
                                 f"budget {key} needs")
            dev = run.get("device") or {}
            checks.append(Check(f"device.{name}.{model}.{key.removeprefix('max_')}", what, f"{model}@{name}",
                                path, float(value), None, float(limit), "<=", value <= limit,
                                f"measured on {dev.get('machine')} {dev.get('cpu_model', '')} "
                                f"({run.get('created')}, {run.get('threads')} threads): {path} = {value:g}, "
                                f"budget {key} = {limit:g}", unit=unit))
    return checks
