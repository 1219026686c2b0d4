"""Results of a bundle's run.py on a device: validation, merge into report.json, gate checks.

    report = merge_device_results(Path("edgekd-out"), Path("results.json"))
    report["device_runs"][-1]["models"]["student_int8_ort"]["latency_ms"]["p90"]   # -> 3.2
    edgekd.gate.device_run_checks(report, "report.json", [load_profile("rpi4")])   # its budget checks

A results file is validated whole against :data:`RESULTS_SCHEMA` (types, ranges, finite numbers,
p50 <= p90 <= p99) before anything is used or written; an error names the file and the field
(``results.json: models.student_int8.latency_ms.p90 must be a finite number >= 0, got -1``).

``merge_device_results`` appends one entry to the report's top-level ``device_runs`` list (schema in
docs/report.md; an entry with the same profile, device and time replaces the old one, so merging
twice is harmless) and rewrites report.json and report.md (and, from ``edgekd report``,
report.html) through :func:`edgekd.files.replace_build_files`: each file atomically, then the build's
manifest.json, last, with the new files' sha256, so the build never contradicts its manifest.

The gate checks every device run against budgets (:func:`edgekd.gate.device_run_checks`, which
reads the ``device_runs`` entries this module writes): by default those of the profile recorded in
the run (the profile the bundle was made for); ``edgekd gate OUT --device PROFILE`` checks the runs
of that profile against the given profile's budgets instead (e.g. an edited copy of the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .artifacts import REPORT_JSON
from .device_profiles import PROFILE_NAME, profile_from_dict
from .errors import EdgekdError, InputError
from .fields import get_path, is_number, show_value
from .files import read_document, read_json, replace_build_files

RESULTS_FORMAT = "edgekd-device-results"
RESULTS_VERSION = 1
_STATS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")
_ORDERED = ("min", "p50", "p90", "p95", "p99", "max")  # each at most the next

# ---------------------------------------------------------------------------------------------
# the results schema
# ---------------------------------------------------------------------------------------------


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# leaf kinds: name -> (test, what a valid value is)
_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "count": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "int0": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    "num0": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "frac": (lambda v: is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
}

# A spec is a leaf kind (above), a dict (an object with these keys; "key?" may be missing or null,
# other keys must be present and not null; keys not listed are ignored and never copied), {"*": spec}
# (an object of any keys, each value a spec) or [spec] (a list, each item a spec). What run.py
# (edgekd/_ortbench.py) writes; the profile is checked by device_profiles.profile_from_dict.
_MODEL = {
    "file?": "str", "format?": "str", "precision?": "str", "primary?": "bool", "sha256_ok?": "bool",
    "model?": "str", "size_bytes": "count", "runtime?": "str", "provider?": "str", "batch?": "count",
    "threads?": "count", "os_threads?": "count", "affinity?": ["int0"], "runtime_import_ms?": "num0",
    "session_create_ms?": "num0",
    "first_inference_ms?": "num0", "warmup?": "int0", "runs?": "count", "seconds?": "num0",
    "wall_s?": "num0", "latency_ms": dict.fromkeys(_STATS, "num0"),
    "throughput?": {"inferences_per_s?": "num0", "images_per_s?": "num0"},
    "memory": {"baseline_rss_bytes?": "int0", "peak_rss_bytes?": "count", "model_rss_bytes?": "int0",
               "source?": "str"},
    "warnings?": ["str"], "accuracy": {"*": "frac"}, "agreement_with_teacher": {"*": "frac"},
    "build_accuracy?": {"*": "frac"},
}
RESULTS_SCHEMA = {
    "format": "str", "version": "count", "created": "str", "profile": {}, "threads": "count",
    "bundle": {"artifact_dir?": "str", "report_created?": "str", "dataset?": "str", "test_sha256?": "str",
               "report_sha256?": "str", "bundle_created?": "str"},
    "device": {"machine?": "str", "processor?": "str", "cpu_model?": "str", "platform?": "str",
               "system?": "str", "node?": "str", "cpu_count?": "count", "affinity?": ["int0"],
               "mem_total_bytes?": "int0", "python?": "str", "numpy?": "str", "onnxruntime?": "str",
               "providers?": ["str"], "executorch?": "str"},
    "models": {"*": _MODEL}, "warnings?": ["str"], "n_images?": {"*": "int0"},
}


def check_schema(value: Any, spec: Any, where: str, path: str = "") -> None:
    """Walk ``value`` against ``spec`` (see RESULTS_SCHEMA); the first mismatch is an InputError
    ``WHERE: PATH must be ..., got ...``."""
    def fail(what: str) -> None:
        raise InputError(f"{where}: {path or 'the document'} must be {what}, got {show_value(value)}")

    if isinstance(spec, dict):
        if not isinstance(value, dict):
            fail("an object")
        if "*" in spec:
            for key, item in value.items():
                check_schema(item, spec["*"], where, f"{path}.{key}" if path else key)
            return
        for key, sub in spec.items():
            name = key.removesuffix("?")
            sub_path = f"{path}.{name}" if path else name
            if value.get(name) is None:
                if key.endswith("?"):
                    continue
                raise InputError(f"{where}: {sub_path} is missing")
            check_schema(value[name], sub, where, sub_path)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            fail("a list")
        for i, item in enumerate(value):
            check_schema(item, spec[0], where, f"{path}[{i}]")
    else:
        test, what = _KINDS[spec]
        if not test(value):
            fail(what)


def validate_device_results(res: Any, where: str) -> None:
    """Check a whole results document before any of it is used: the marker and version, then every
    field against RESULTS_SCHEMA, then what one field says about another."""
    if not isinstance(res, dict) or res.get("format") != RESULTS_FORMAT:
        raise InputError(f"{where}: not an edgekd device results file (format is not {RESULTS_FORMAT!r}); "
                         "it is the results.json that run.py of an `edgekd bundle` writes")
    if res.get("version") != RESULTS_VERSION:
        raise InputError(f"{where}: results version {res.get('version')!r}; this edgekd reads version "
                         f"{RESULTS_VERSION}")
    check_schema(res, RESULTS_SCHEMA, where)
    try:
        profile_from_dict({k: v for k, v in res["profile"].items() if k != "source"}, f"{where}: profile")
    except EdgekdError as e:
        raise InputError(str(e)) from None
    if not res["models"]:
        raise InputError(f"{where}: models is empty")
    for mid, m in res["models"].items():
        if not PROFILE_NAME.fullmatch(mid):
            raise InputError(f"{where}: models.{mid!r} is not a model id (letters, digits, '.', '_', '-')")
        lat = m["latency_ms"]
        for lo, hi in zip(_ORDERED, _ORDERED[1:]):
            if lat[hi] < lat[lo]:
                raise InputError(f"{where}: models.{mid}.latency_ms.{hi} = {lat[hi]:g} is below "
                                 f"latency_ms.{lo} = {lat[lo]:g}, which cannot be (min <= p50 <= p90 "
                                 "<= p95 <= p99 <= max)")


def load_device_results(path: Path) -> dict:
    """Read and validate a results file written by a bundle's run.py."""
    path = Path(path)
    res = read_json(path, f"device results {path} do not exist")
    validate_device_results(res, str(path))
    return res


# ---------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------


def _known(value: dict, spec: dict) -> dict:
    """The fields of a validated object that ``spec`` names (nothing unchecked is copied)."""
    return {k.removesuffix("?"): value.get(k.removesuffix("?")) for k in spec}


def run_entry(res: dict, results_path: Path) -> dict:
    """The ``device_runs`` entry of one (validated) results file."""
    models = {}
    for mid, m in res["models"].items():
        models[mid] = {
            "file": m.get("file"), "format": m.get("format"), "precision": m.get("precision"),
            "primary": bool(m.get("primary")), "sha256_ok": m.get("sha256_ok"), "size_bytes": m["size_bytes"],
            "runtime": m.get("runtime"), "provider": m.get("provider"),
            "latency_ms": {**{s: m["latency_ms"][s] for s in _STATS}, "batch": m.get("batch"),
                           "threads": m.get("threads"), "runs": m.get("runs"), "warmup": m.get("warmup")},
            "session_create_ms": m.get("session_create_ms"), "first_inference_ms": m.get("first_inference_ms"),
            "throughput": m.get("throughput") and _known(m["throughput"], _MODEL["throughput?"]),
            "memory": _known(m["memory"], _MODEL["memory"]), "os_threads": m.get("os_threads"),
            "affinity": m.get("affinity"), "accuracy": m["accuracy"],
            "agreement_with_teacher": m["agreement_with_teacher"], "build_accuracy": m.get("build_accuracy"),
        }
    prof = res["profile"]
    primary = next((mid for mid, m in models.items() if m["primary"]), next(iter(models)))
    return {"profile": prof["name"], "profile_budgets": prof.get("budgets", {}), "primary_model": primary,
            "created": res["created"], "threads": res["threads"],
            "device": _known(res["device"], RESULTS_SCHEMA["device"]), "n_images": res.get("n_images"),
            "bundle": _known(res["bundle"], RESULTS_SCHEMA["bundle"]), "warnings": res.get("warnings") or [],
            "results_file": Path(results_path).name, "models": models}


def merged_files(out_dir: Path, results_paths: list[Path]) -> tuple[dict, dict[Path, str]]:
    """Validate every results file and ``out_dir``'s report, and compute the merged report.

    Returns (the merged report, {file: new text}) for report.json and (when present) report.md;
    nothing is written. Raises :class:`InputError` when a file is malformed or comes from a bundle
    of another build (its test images differ).
    """
    out_dir = Path(out_dir)
    report_path = out_dir / REPORT_JSON
    report = read_json(report_path, f"{out_dir}: no report.json (not an edgekd artifact directory)")
    runs = report.get("device_runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise InputError(f"{report_path}: device_runs must be a list of objects")
    dataset = report.get("dataset")
    want = dataset.get("test_sha256") if isinstance(dataset, dict) else None
    entries = []
    for path in results_paths:
        res = load_device_results(path)
        if want and res["bundle"].get("test_sha256") != want:
            raise InputError(f"{path} comes from a bundle of another build (its test images differ "
                             f"from {report_path}'s dataset.test_sha256); make a bundle of this build")
        entries.append(run_entry(res, path))
    for entry in entries:
        same = (entry["profile"], entry["created"], entry["device"].get("node"))
        runs = [r for r in runs
                if (r.get("profile"), r.get("created"), get_path(r, "device.node")) != same] + [entry]
    report = {**report, "device_runs": runs}
    files = {report_path: json.dumps(report, indent=2) + "\n"}
    md = out_dir / "report.md"
    if md.exists() or md.is_symlink():
        text = read_document(md, f"{md} is missing", "Markdown report")
        files[md] = _with_md_section(text, device_runs_markdown(runs))
    return report, files


def merge_device_results(out_dir: Path, results_path: Path) -> dict:
    """Validate ``results_path`` and add it to ``out_dir``'s report as a ``device_runs`` entry
    (report.json, report.md and the manifest; see :func:`merged_files`). Returns the new report."""
    report, files = merged_files(out_dir, [Path(results_path)])
    replace_build_files(out_dir, files)
    return report


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


def __getattr__(name: str) -> Any:
    # device_run_checks is the gate's (edgekd.gate.device_run_checks); found here too for callers
    # of this module, imported only when asked for (the gate loads scipy)
    if name == "device_run_checks":
        from .gate import device_run_checks

        return device_run_checks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
