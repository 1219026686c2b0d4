"""report.html and compare.html: self-contained pages (plots inlined as PNG data: URIs, no network).

    from edgekd.html_report import render_html, load_report
    path, report = load_report("edgekd-out")
    Path("edgekd-out/report.html").write_text(render_html(report, gate_dict))

Plots need matplotlib (``pip install edgekd[plots]``); without it the pages hold the tables and
say how to get the plots. Every figure in a table carries ``data-model`` / ``data-metric`` (a
dotted path into the model object of report.json) / ``data-value`` (the raw number), and every
plot a stable ``data-plot`` id, so tools and the browser test can read the page back exactly.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from .artifacts import REPORT_JSON, STUDENT_INT8, TEACHER, all_artifacts, plotted_formats
from .errors import InputError
from .files import read_json
from .perturb_registry import CATEGORIES
from .report import frost_text, quantization_rows, quantization_text, training_augment_text, training_text

FAMILIES = CATEGORIES  # the 15 common corruptions by category, as in ImageNet-C
PLOTS_HINT = "install edgekd[plots] (pip install matplotlib) for plots"
COLORS = {a.id: a.color for a in all_artifacts()}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")

# (header, metric path in the model object, formatter kind)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("clean acc", "accuracy.clean", "pct"), ("mCA", "accuracy.mca", "pct"),
    ("retention", "robustness.retention", "pct"), ("agreement", "agreement_with_teacher.clean", "pct"),
    ("size", "size_bytes", "size"), ("p50 ms", "latency_ms.p50", "ms"), ("p90 ms", "latency_ms.p90", "ms"),
    ("memory", "memory.peak_rss_bytes", "mem"),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{margin-bottom:4px} .meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 20px} th,td{padding:4px 10px;border-bottom:1px solid #ddd}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:12px 16px;border-radius:6px;font-size:1.2em;margin:12px 0}
.verdict.pass{background:#e6f4ea;border:1px solid #34a853} .verdict.fail{background:#fce8e6;border:1px solid #d93025}
.verdict.none{background:#f1f3f4;border:1px solid #999} tr.fail td{color:#b3261e;font-weight:600}
figure{margin:12px 0 28px} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555}
.note{background:#fff8e1;border:1px solid #f0c36d;padding:8px 12px;border-radius:4px}
code{background:#f4f4f4;padding:1px 4px}
"""


# ------------------------------------------------------------------------------------------
# Reading and formatting
# ------------------------------------------------------------------------------------------

def load_report(source: str | Path) -> tuple[Path, dict]:
    """``source``: an artifact directory or a report.json; returns (report.json path, report)."""
    p = Path(source)
    path = p / REPORT_JSON if p.is_dir() else p
    where = f"{p}: no report.json in this directory" if p.is_dir() else f"{p}: no such file or directory"
    report = read_json(path, f"{where} (give an edgekd artifact directory or its report.json)")
    if not isinstance(report.get("models"), dict) or not report["models"]:
        raise InputError(f"{path}: not an edgekd report.json (no 'models' object)")
    return path, report


def load_gate(path: Path) -> dict | None:
    """gate.json as a dict, or None when it is missing or unreadable (the page then says so)."""
    try:
        gate = read_json(path, f"{path} is missing")
    except InputError:
        return None
    return gate if "verdict" in gate else None


def metric(model: dict, path: str) -> Any:
    """``metric(m, "latency_ms.p50")``; None where any step is missing. Memory falls back to
    ``peak_memory_bytes`` (an older / alternative field name)."""
    v: Any = model
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    if v is None and path == "memory.peak_rss_bytes":
        v = model.get("peak_memory_bytes")
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fmt(kind: str, v: float | None) -> str:
    """The visible text of a number: pct 0.981 -> 98.1%, size -> KiB/MiB, ms -> 3 decimals, mem -> MB."""
    if v is None or not math.isfinite(v):
        return "—"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "size":
        return f"{v / 1024:.1f} KiB" if v < 1 << 20 else f"{v / (1 << 20):.2f} MiB"
    if kind == "ms":
        return f"{v:.3f}"
    if kind == "mem":
        return f"{v / 1e6:.1f} MB"
    return f"{v:g}"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _mean(vals) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------------------------
# Plots (matplotlib, optional)
# ------------------------------------------------------------------------------------------

def _figure_cls():
    """matplotlib's Figure (no pyplot state, Agg output), or None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_html(plot_id: str, uri: str, caption: str) -> str:
    return (f'<figure data-plot="{_e(plot_id)}"><img id="plot-{_e(plot_id)}" class="plot" '
            f'src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _log_x(ax) -> None:
    """Log-scale x with plain numbers (0.2, 1, 5), minor labels too when the range is narrow."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    ax.xaxis.set_minor_formatter(plain if hi / lo < 20 else NullFormatter())


def _severity_curves(Figure, series: list[tuple[str, dict, str]]) -> str | None:
    """series: (label, model object, colour). One panel per family: mean accuracy over the family's
    corruptions at severity 1..5, with clean accuracy at severity 0."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharey=True).ravel()
    drawn = False
    for ax, (family, names) in zip(axes, FAMILIES.items()):
        for label, m, color in series:
            corr = m.get("accuracy", {}).get("corruptions", {})
            rows = [corr[n] for n in names if n in corr]
            if not rows:
                continue
            ys = [m["accuracy"].get("clean")] + [_mean(r[s] for r in rows) for s in range(len(rows[0]))]
            xs = [x for x, y in enumerate(ys) if y is not None]
            ax.plot(xs, [100 * ys[x] for x in xs], marker="o", label=label, color=color)
            drawn = True
        ax.set_title(f"{family}\n{', '.join(names)}", fontsize=9)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    axes[0].legend(fontsize=8)
    return _png(fig)


def _drop_heatmap(Figure, models: dict, ids: list[str]) -> str | None:
    """Teacher accuracy minus model accuracy (points) per corruption x severity, one panel per model."""
    teacher = models.get(TEACHER, {}).get("accuracy", {})
    names = [(g, n) for g in ("corruptions", "missing") for n in teacher.get(g, {})]
    if not names or not ids:
        return None
    grids = []
    for mid in ids:
        acc = models[mid]["accuracy"]
        grid = []
        for g, n in names:
            t, s = teacher[g][n], acc.get(g, {}).get(n, [None] * len(teacher[g][n]))
            grid.append([math.nan if a is None or b is None else 100 * (a - b) for a, b in zip(t, s)])
        grids.append(grid)
    vmax = max([abs(v) for grid in grids for row in grid for v in row if not math.isnan(v)] or [1.0]) or 1.0
    fig = Figure(figsize=(4.2 * len(ids) + 1.5, 0.32 * len(names) + 1.6))
    axes = fig.subplots(1, len(ids), squeeze=False)[0]
    for ax, mid, grid in zip(axes, ids, grids):
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_title(f"teacher − {mid} (points)", fontsize=10)
        ax.set_xticks(range(len(grid[0])), [str(s + 1) for s in range(len(grid[0]))])
        ax.set_xlabel("severity")
        ax.set_yticks(range(len(names)), [n for _, n in names] if ax is axes[0] else [])
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * vmax else "black")
    fig.colorbar(im, ax=list(axes), shrink=0.6, label="accuracy drop vs teacher (points)")
    return _png(fig)


def _latency_plot(Figure, series: list[tuple[str, dict, str]]) -> str | None:
    """Box plots of the timed runs (``latency_ms.samples``); from min/p50/p90/p99/max without them."""
    rows = [(label, m["latency_ms"], c) for label, m, c in series if isinstance(m.get("latency_ms"), dict)]
    if not rows:
        return None
    fig = Figure(figsize=(9, 0.6 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    for i, (_, lat, color) in enumerate(rows):
        samples = lat.get("samples")
        if samples:
            ax.boxplot([samples], positions=[i], orientation="horizontal", widths=0.5, showfliers=True,
                       flierprops={"markersize": 3, "markeredgecolor": color},
                       boxprops={"color": color}, medianprops={"color": color})
        else:  # summary only: a min-max line with p50 / p90 / p99 marks
            ax.hlines(i, lat.get("min", lat["p50"]), lat.get("max", lat["p90"]), color=color)
            for key, mk in (("p50", "o"), ("p90", "s"), ("p99", "^")):
                if key in lat:
                    ax.plot(lat[key], i, mk, color=color, label=key if i == 0 else None)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    _log_x(ax)
    ax.set_xlabel("latency per call, ms (log scale)")
    ax.grid(alpha=0.3, axis="x")
    if not any(r[1].get("samples") for r in rows):
        ax.legend(fontsize=8)
    return _png(fig)


def _pareto_plot(Figure, points: list[tuple[str, dict, str]]) -> str | None:
    """Latency p50 vs mCA, marker area ~ size; the Pareto front (faster and more robust) as a step line."""
    pts = [(label, metric(m, "latency_ms.p50"), metric(m, "accuracy.mca"), metric(m, "size_bytes") or 0, c)
           for label, m, c in points]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    if not pts:
        return None
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    biggest = max(p[3] for p in pts) or 1
    for label, x, y, size, color in pts:
        ax.scatter([x], [100 * y], s=60 + 1500 * size / biggest, color=color, alpha=0.6, edgecolors="black")
        ax.annotate(f"{label}\n{fmt('size', size)}", (x, 100 * y), textcoords="offset points", xytext=(8, 6),
                    fontsize=8)
    front, best = [], -1.0
    for _, x, y, _, _ in sorted(pts, key=lambda p: (p[1], -p[2])):
        if y > best:
            front.append((x, 100 * y))
            best = y
    if len(front) > 1:
        ax.step([f[0] for f in front], [f[1] for f in front], where="post", ls="--", color="grey",
                label="Pareto front")
        ax.legend(fontsize=8)
    ax.margins(0.2)
    _log_x(ax)
    ax.set_xlabel("latency p50, ms (log scale)")
    ax.set_ylabel("mCA %")
    ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------------------------------
# Page parts
# ------------------------------------------------------------------------------------------

def _gate_html(gate: dict | None) -> str:
    if not gate:
        return ('<section id="verdict" class="verdict none" data-verdict="none">Gate: not run '
                '(no gate.json beside report.json)</section>')
    from .gate import format_check as fmt_check

    verdict = str(gate.get("verdict", "?"))
    checks = [c for c in gate.get("checks", []) if isinstance(c, dict)]
    failed = [c for c in checks if not c.get("passed")]
    head = (f'<section id="verdict" class="verdict {_e(verdict)}" data-verdict="{_e(verdict)}">'
            f"<strong>Gate: {_e(verdict.upper())}</strong> — {len(checks) - len(failed)} of {len(checks)} "
            f"checks passed (mode {_e(gate.get('mode', '?'))})")
    if failed:
        head += '<ul id="failed-checks">' + "".join(
            f'<li data-check="{_e(c.get("id"))}"><code>{_e(c.get("id"))}</code>: {_e(c.get("name", ""))} '
            f"{_e(fmt_check(c.get('unit', 'pp'), c['value']))} vs {_e(c.get('comparison', ''))} "
            f"{_e(fmt_check(c.get('unit', 'pp'), c['threshold']))}; {_e(c.get('detail', ''))}</li>"
            for c in failed) + "</ul>"
    rows = "".join(
        f'<tr class="{"pass" if c.get("passed") else "fail"}" data-check="{_e(c.get("id"))}"><td>{_e(c.get("id"))}</td>'
        f'<td class="num">{_e(fmt_check(c.get("unit", "pp"), c["value"]))}</td>'
        f'<td class="num">{_e(c.get("comparison", ""))} {_e(fmt_check(c.get("unit", "pp"), c["threshold"]))}</td>'
        f'<td>{"PASS" if c.get("passed") else "FAIL"}</td></tr>' for c in checks)
    return (head + "</section><details><summary>All gate checks</summary><table id=\"gate-checks\">"
            "<tr><th>check</th><th>value</th><th>threshold</th><th>result</th></tr>" + rows + "</table></details>")


def _model_cells(m: dict, attrs: str) -> str:
    cells = []
    for _, path, kind in COLUMNS:
        v = metric(m, path)
        raw = "" if v is None else repr(v)
        cells.append(f'<td class="num" {attrs} data-metric="{path}" data-value="{_e(raw)}">{_e(fmt(kind, v))}</td>')
    return "".join(cells)


def _model_table(models: dict) -> str:
    head = "<tr><th>model</th><th>format</th><th>params</th>" + "".join(f"<th>{_e(h)}</th>" for h, _, _ in COLUMNS)
    rows = "".join(
        f'<tr data-model="{_e(mid)}"><td>{_e(mid)}</td><td>{_e(m.get("format"))}/{_e(m.get("precision"))}</td>'
        f'<td class="num">{_e(format(m["params"], ",") if isinstance(m.get("params"), int) else "—")}</td>'
        + _model_cells(m, f'data-model="{_e(mid)}"') + "</tr>" for mid, m in models.items())
    return f'<table id="models">{head}</tr>{rows}</table>'


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flat(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), d)]


def _device_runs_html(runs: Any) -> str:
    """Whatever the device runs recorded, as key / value tables (their schema is their own)."""
    if not isinstance(runs, list) or not runs:
        return ""
    out = ["<h2>Device runs</h2>"]
    for i, run in enumerate(runs):
        items = _flat(run) if isinstance(run, dict) else [("value", run)]
        rows = "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(v if not isinstance(v, (list, tuple)) else json.dumps(v)[:300])}</td></tr>"
            for k, v in items)
        out.append(f'<table class="device-run" data-run="{i}"><tr><th>field</th><th>value</th></tr>{rows}</table>')
    return "".join(out)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _no_plots_note() -> str:
    return f'<p class="note" id="no-plots">Plots are not shown: {_e(PLOTS_HINT)}.</p>'


def _frost_html(rob: dict | None) -> str:
    text = frost_text(rob or {})
    return f'<p class="note" id="frost-source">Frost: {_e(text.removeprefix("; frost from "))}.</p>' if text else ""


def _training_html(rob: dict | None) -> str:
    """How the student was trained: method, perturbations (flagged if they overlap the evaluated
    corruptions, which inflates the robustness figures) and adversarial training."""
    if not rob or "training_perturbations" not in rob:
        return ""
    method = rob.get("training_method")
    seen = rob.get("training_perturbations") or []
    overlap = rob.get("training_overlaps_evaluation") or []
    text = (f"Student distilled with <code>{_e(method)}</code>; " if method else "Student ")
    text += "trained with perturbations: " + (_e(", ".join(seen)) if seen else "none")
    text += _e(training_augment_text(rob))
    if overlap:
        text += (f' — <strong class="inflated">overlaps the evaluated corruptions {_e(", ".join(overlap))}: '
                 "robustness figures are inflated</strong>")
    elif seen:
        text += " (disjoint from the evaluated common corruptions)"
    adv = rob.get("training_adversarial")
    if adv:
        eps = f"{adv['epsilon_255']:g}"
        text += (f"; trained adversarially ({_e(adv['method'])}: PGD on the student, eps {_e(eps)}/255, "
                 f"{_e(adv['steps'])} steps)")
    return f'<p id="training" data-method="{_e(method or "")}">{text}.</p>'


def _quantization_html(report: dict) -> str:
    """The INT8 candidates table and why the deployed one won (report.quantization_rows)."""
    rows = quantization_rows(report)
    if not rows:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(c).replace('**', '')}</td>" for c in r) + "</tr>" for r in rows[1:])
    return (f'<h2>INT8 candidates</h2><p id="quantization">{_e(quantization_text(report)).replace("**", "")}</p>'
            f'<table id="candidates"><tr>{head}</tr>{body}</table>')


def _shift_html(report: dict) -> str:
    """The user's shift sets: accuracy, agreement and drop vs the teacher per set and model
    (shift.shift_rows)."""
    from .shift import shift_rows

    rows = shift_rows(report)
    if not rows:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f'<h2>Shifted data sets</h2><table id="shift-sets"><tr>{head}</tr>{body}</table>'


def _selection_html(report: dict) -> str:
    """The recipe, the kept epoch and why, the teacher against chance (report.training_text)."""
    text = training_text(report)
    return f'<p id="selection">{_e(text).replace("**", "")}</p>' if text else ""


def render_html(report: dict, gate: dict | None = None) -> str:
    """The page of one build: gate verdict (failing checks first), model table, plots, device runs."""
    models = report["models"]
    ds = report.get("dataset", {})
    artifacts = [mid for mid, m in models.items() if m.get("format") in plotted_formats()] or \
        [mid for mid in models if mid != TEACHER]
    body = ["<h1>edgekd report</h1>",
            f'<p class="meta">{_e(ds.get("name", "?"))}, {_e(ds.get("n_test", "?"))} test images of shape '
            f'{_e(ds.get("image_shape", "?"))}; created {_e(report.get("created", "?"))} by edgekd '
            f'{_e(report.get("edgekd_version", "?"))}; teacher on {_e(report.get("teacher_device", "?"))}.</p>',
            _gate_html(gate), "<h2>Models</h2>", _model_table(models), _training_html(report.get("robustness")),
            _frost_html(report.get("robustness")),
            _selection_html(report), _quantization_html(report), _shift_html(report),
            "<p>Retention = model mCA / teacher mCA; agreement = share of test images where the model "
            "predicts the teacher's class; latency per call at batch 1; memory = peak resident memory "
            "of a fresh process running the artifact.</p>"]
    Figure = _figure_cls()
    if Figure is None:
        body.append(_no_plots_note())
    else:
        curve_ids = [mid for mid in (TEACHER, *artifacts) if mid in models]
        series = [(mid, models[mid], COLORS.get(mid, PALETTE[i % len(PALETTE)])) for i, mid in enumerate(curve_ids)]
        everything = [(mid, m, COLORS.get(mid, PALETTE[i % len(PALETTE)])) for i, (mid, m) in enumerate(models.items())]
        plots = [
            ("severity-curves", "Accuracy vs severity per corruption family",
             _severity_curves(Figure, series), "mean over the family's corruptions; severity 0 = clean"),
            ("drop-heatmap", "Accuracy drop vs the teacher", _drop_heatmap(Figure, models, artifacts),
             "teacher accuracy minus the artifact's, in points, per perturbation and severity (red = worse)"),
            ("latency", "Latency distributions", _latency_plot(Figure, everything),
             "wall-clock time per call at batch 1 after warm-up"),
            ("pareto", "Latency vs robustness", _pareto_plot(Figure, everything),
             "marker area ~ file size; the dashed line is the Pareto front"),
        ]
        for pid, title, uri, caption in plots:
            if uri:
                body += [f"<h2>{_e(title)}</h2>", _plot_html(pid, uri, caption)]
    body.append(_device_runs_html(report.get("device_runs")))
    return _page("edgekd report", body)


def render_compare_html(reports: list[tuple[str, dict]], gates: dict[str, dict | None] | None = None) -> str:
    """Several builds side by side: one table of every build x model, a Pareto plot and latency
    distributions across all the builds' artifacts, each build's INT8 (else last) artifact's severity
    curves. ``gates``: label -> gate.json dict, for the verdict column."""
    gates = gates or {}
    head = ("<tr><th>build</th><th>gate</th><th>model</th><th>format</th>"
            + "".join(f"<th>{_e(h)}</th>" for h, _, _ in COLUMNS) + "</tr>")
    rows = []
    for label, rep in reports:
        verdict = (gates.get(label) or {}).get("verdict", "—")
        for mid, m in rep["models"].items():
            attrs = f'data-build="{_e(label)}" data-model="{_e(mid)}"'
            rows.append(f"<tr {attrs}><td>{_e(label)}</td><td>{_e(verdict)}</td><td>{_e(mid)}</td>"
                        f"<td>{_e(m.get('format'))}/{_e(m.get('precision'))}</td>{_model_cells(m, attrs)}</tr>")
    body = ["<h1>edgekd compare</h1>",
            '<p class="meta">Builds: ' + ", ".join(f"<code>{_e(label)}</code>" for label, _ in reports) + "</p>",
            f'<table id="compare">{head}{"".join(rows)}</table>']
    Figure = _figure_cls()
    if Figure is None:
        body.append(_no_plots_note())
        return _page("edgekd compare", body)
    points, curves = [], []
    for i, (label, rep) in enumerate(reports):
        color = PALETTE[i % len(PALETTE)]
        ms = rep["models"]
        arts = [mid for mid, m in ms.items() if m.get("kind") != "teacher" and m.get("format") in plotted_formats()] or \
            [mid for mid in ms if mid != TEACHER]
        points += [(f"{label}:{mid}", ms[mid], color) for mid in arts]
        if arts:
            pick = STUDENT_INT8 if STUDENT_INT8 in arts else arts[-1]
            curves.append((f"{label}:{pick}", ms[pick], color))
    for pid, title, uri, caption in (
            ("compare-pareto", "Latency vs robustness across builds", _pareto_plot(Figure, points),
             "each build's artifacts; marker area ~ file size"),
            ("compare-latency", "Latency distributions across builds", _latency_plot(Figure, points),
             "wall-clock time per call at batch 1 after warm-up"),
            ("compare-severity", "Accuracy vs severity per corruption family", _severity_curves(Figure, curves),
             "each build's INT8 student (else its last artifact)")):
        if uri:
            body += [f"<h2>{_e(title)}</h2>", _plot_html(pid, uri, caption)]
    return _page("edgekd compare", body)
