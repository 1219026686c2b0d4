"""report.json (versioned schema), report.md and the end-of-build summary table.

Schema (``schema_version`` 1) — documented in docs/report.md; later versions only add fields:

    {"schema_version": 1, "edgekd_version", "created", "dataset": {...}, "teacher_device",
     "corruption_table", "robustness": {...what was run...},
     "models": {MODEL_ID: {"kind", "format", "precision", "runtime", "device", "file", "params",
                           "size_bytes", "accuracy": {"clean", ...}, "agreement_with_teacher":
                           {"clean", ...}, "latency_ms": {"batch", "threads", "p50", "p90", "p99", ...},
                           ...}}}
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np

from . import __version__
from .config import BuildConfig
from .data import Dataset
from .perturb_registry import FROST_SOURCES
from .shift import describe as describe_shifts
from .shift import shift_rows

SCHEMA_VERSION = 1


def merge_records(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """``{id: record}`` tables merged key by key, nested tables too (later parts add fields; a
    field measured twice is a bug)."""
    def merge(into: dict, part: dict, where: str) -> None:
        for k, v in part.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v, f"{where}.{k}")
            elif k in into:
                raise ValueError(f"{where}.{k} measured twice")
            else:
                into[k] = copy.deepcopy(v)

    out: dict[str, dict] = {}
    for part in parts:
        for mid, rec in part.items():
            merge(out.setdefault(mid, {}), rec, mid)
    return out


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"


def build_report(cfg: BuildConfig, ds: Dataset, model_records: list[dict[str, dict]], robustness_meta: dict,
                 teacher_device: str, training: dict | None = None) -> dict:
    """report.json from the stages' records: ``model_records`` are ``{id: fields}`` tables (the
    description, clean metrics, perturbed metrics, latency and memory), merged per model."""
    models = merge_records(model_records)
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {"name": ds.name, "n_test": len(ds.test), "image_shape": list(ds.image_shape),
                    "classes": ds.classes, "test_sha256": ds.fingerprint()},
        "teacher_device": teacher_device,
        "corruption_table": robustness_meta.get("corruption_table"),
        "robustness": robustness_meta,
        "training": training,
        **({"shift_sets": describe_shifts(ds.shifts, cfg.robustness.shift_sets)} if ds.shifts else {}),
        "models": models,
    }


def frost_text(robustness: dict) -> str:
    """Which frost the sweep used, for report.md and the HTML page ("" when frost was not run)."""
    src = robustness.get("frost_source")
    return f"; frost from {FROST_SOURCES.get(src, src)}" if src else ""


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def summary_rows(report: dict) -> list[list[str]]:
    rows = [["model", "format", "params", "size", "clean acc", "mCA", "agree(T)", "p50 ms", "p90 ms"]]
    for mid, m in report["models"].items():
        lat = m.get("latency_ms", {})
        rows.append([mid, f"{m['format']}/{m['precision']}", f"{m['params']:,}", _size(m["size_bytes"]),
                     _pct(m["accuracy"]["clean"]), _pct(m["accuracy"].get("mca")),
                     _pct(m["agreement_with_teacher"]["clean"]),
                     f"{lat['p50']:.3f}" if lat else "—", f"{lat['p90']:.3f}" if lat else "—"])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def render_markdown(report: dict, gate_text: str = "") -> str:
    ds = report["dataset"]
    parts = ["# edgekd report", "",
             f"Dataset **{ds['name']}**, {ds['n_test']} test images of shape {ds['image_shape']}; "
             f"teacher ran on **{report['teacher_device']}**. Latency: batch "
             f"{_first_latency(report).get('batch', 1)}, {_first_latency(report).get('threads', '?')} "
             "thread(s), onnxruntime CPU / torch.", "", "## Models", "",
             markdown_table(summary_rows(report)), ""]
    if training_text(report):
        parts += ["## Training", "", training_text(report), ""]
    if quantization_rows(report):
        parts += ["## INT8 candidates", "", quantization_text(report), "", markdown_table(quantization_rows(report)), ""]
    parts += markdown_sections(report)
    if shift_rows(report):
        parts += ["## Shifted data sets", "", "The user's own held-out sets (robustness.shift_sets): accuracy, "
                  "agreement with the teacher's predictions and the drop against the teacher's accuracy on "
                  "each set.", "", markdown_table(shift_rows(report)), ""]
    if gate_text:
        parts += ["## Gate", "", "```", gate_text.rstrip(), "```", ""]
    return "\n".join(parts)


def quantization_rows(report: dict) -> list[list[str]]:
    """The INT8 candidates side by side (header first); [] for a report without them."""
    q = report.get("quantization") or {}
    if not q.get("candidates"):
        return []
    rows = [["preset", "stage", "vs fp32 clean / perturbed (val.)", "gate", "p50 ms", "clean", "mCA",
             "agree fp32", "size", "float nodes"]]
    for c in q["candidates"]:
        t = c["tolerance"]
        lat = c.get("latency_ms", {}).get("p50")
        nodes = c.get("quantize", {}).get("nodes_excluded") or []
        rows.append([("**" + c["preset"] + "**") if c["preset"] == q.get("chosen") else c["preset"], c["stage"],
                     f"{0.0 - 100 * t['clean_drop']:+.2f} / {0.0 - 100 * t['perturbed_drop']:+.2f}"
                     + ("" if t["passed"] else " (misses)"),
                     "pass" if not c["gate_failed"] else f"{len(c['gate_failed'])} failed",
                     "—" if lat is None else f"{lat:.3f}", _pct(c["accuracy"].get("clean")),
                     _pct(c["accuracy"].get("mca")), _pct(c.get("agreement_with_fp32")), _size(c["file_bytes"]),
                     str(len(nodes))])
    return rows


def quantization_text(report: dict) -> str:
    q = report.get("quantization") or {}
    where = f"for device profile `{q['device']}`" if q.get("device") else "from `quantize.preset`"
    return f"Candidates {where}; deployed: **{q.get('chosen')}** — {q.get('why')}."


def training_text(report: dict) -> str:
    """One paragraph: how the student was trained, which epoch's weights were kept and why, and the
    teacher's accuracy on the validation split against chance (report.md and report.html)."""
    tr = report.get("training")
    if not tr:
        return ""
    st = tr["student"]
    parts = []
    if st["epochs"]:
        parts.append(f"Student: {st['method']}, {st['optimizer']} {st['schedule']} (peak lr {st['lr']:g}), "
                     f"batch {st['batch_size']}, {st['epochs_run']} of {st['epochs']} epochs run"
                     + (f", weight EMA {st['ema_decay']:g}" if st["ema_decay"] else "")
                     + (f", label smoothing {st['label_smoothing']:g}" if st["label_smoothing"] else "") + ".")
        kept = st.get("kept") or {}
        if kept.get("selection", "last") != "last":
            parts.append(f"Kept the weights of epoch {kept['kept_epoch']}: the {kept['why']} on "
                         f"{st['val_images']} validation images held out of training (not the test split).")
        elif kept:
            parts.append(f"Kept the weights of the last epoch ({kept['kept_epoch']}): no selection.")
    chk = (tr.get("teacher") or {}).get("check")
    if chk:
        parts.append(f"Teacher ({tr['teacher']['source']}): {100 * chk['accuracy']:.1f}% on the "
                     f"{chk['n_images']} {chk['split']} images, chance {100 * chk['chance']:.1f}%"
                     + (" — **no better than chance**" if not chk["passed"] else "") + ".")
    return " ".join(parts)


def training_augment_text(rob: dict) -> str:
    """', on 25 % of each batch, appended (soft target: the teacher on the clean image)', or ''."""
    aug = rob.get("training_augment")
    if not aug:
        return ""
    how = "appended to the clean batch" if aug["mode"] == "append" else "in place of the clean images"
    return (f", on {100 * aug['prob']:g} % of each batch, {how} (soft target: the teacher on the "
            f"{aug['target']} image)")


def _first_latency(report: dict) -> dict:
    for m in report["models"].values():
        if "latency_ms" in m:
            return m["latency_ms"]
    return {}


def _f(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def markdown_sections(report: dict) -> list[str]:
    """Per-corruption table (teacher vs each artifact) and headline robustness figures."""
    models = report["models"]
    if not any("corruptions" in m["accuracy"] for m in models.values()):
        return []
    ids = list(models)
    rows = ["| model | clean | mCA | mCE | rel. mCE | retention | mean flip rate |", "|---|---|---|---|---|---|---|"]
    for mid in ids:
        m = models[mid]
        rb = m.get("robustness", {})
        mce = rb.get("mce")
        rel = rb.get("relative_mce")
        rows.append(f"| {mid} | {_f(m['accuracy']['clean'])} | {_f(m['accuracy'].get('mca'))} | "
                    f"{'—' if mce is None else f'{100 * mce:.1f}'} | "
                    f"{'—' if rel is None else f'{100 * rel:.1f}'} | {_f(rb.get('retention'))} | "
                    f"{_f(rb.get('mean_flip_rate'))} |")
    out = ["## Robustness", "",
           f"Corruption table: **{report.get('corruption_table')}**{frost_text(report['robustness'])}; "
           "accuracies in %, mean over the severities run. mCE and relative mCE use the teacher as reference (100 = as good as the "
           "teacher); retention = model mCA / teacher mCA.", "",
           (f"Student distilled with `{report['robustness']['training_method']}`, trained with "
            if report["robustness"].get("training_method") else "Student trained with ")
           + "perturbations: "
           + (", ".join(report["robustness"].get("training_perturbations") or []) or "none")
           + training_augment_text(report["robustness"])
           + (" — **overlaps the evaluated corruptions "
              + ", ".join(report["robustness"]["training_overlaps_evaluation"])
              + ": robustness figures are inflated**"
              if report["robustness"].get("training_overlaps_evaluation") else
              " (disjoint from the 15 evaluated common corruptions)") + ".", "", *rows, ""]
    head = "| perturbation | " + " | ".join(ids) + " |"
    table = [head, "|---|" + "---|" * len(ids)]
    first = models[ids[0]]["accuracy"]
    for group in ("corruptions", "missing"):
        for name in first.get(group, {}):
            cells = []
            for mid in ids:
                vals = [v for v in models[mid]["accuracy"][group][name] if v is not None]
                cells.append(_f(float(np.mean(vals)) if vals else None))
            table.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["### Accuracy per perturbation (mean over severities)", "", *table, ""]
    if "adversarial" in first:
        t = ["| attack | eps (/255) | " + " | ".join(ids) + " |", "|---|---|" + "---|" * len(ids)]
        for attack, by_eps in first["adversarial"].items():
            for eps in by_eps:
                t.append(f"| {attack} | {eps} | " + " | ".join(
                    _f(models[mid]["accuracy"]["adversarial"][attack][eps]) for mid in ids) + " |")
        src = ", ".join(f"{mid}: {models[mid].get('adversarial_source')}" for mid in ids)
        adv = report["robustness"].get("training_adversarial")
        trained = (f" Student trained adversarially ({adv['method']}: PGD on the student, eps "
                   f"{adv['epsilon_255']:g}/255, {adv['steps']} steps)." if adv else "")
        out += ["### Adversarial accuracy", "", f"Sources: {src}.{trained}", "", *t, ""]
    return out
