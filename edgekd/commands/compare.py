"""edgekd compare: several builds side by side in one HTML page (for choosing between students)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import write_text

HELP = "put several builds side by side in compare.html (table + plots)"
DESCRIPTION = """\
Compare builds: each REPORT is an artifact directory or a report.json. Writes one self-contained
page with every build's models (accuracy, mCA, retention, agreement, size, latency, memory, gate
verdict), a latency-vs-mCA Pareto plot and latency distributions across all the builds'
artifacts, and each build's INT8 student's accuracy-vs-severity curves. Builds are labelled by
their directory names (made unique with the parent folder or a number). Plots need matplotlib:
pip install 'edgekd[plots]'."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="+", metavar="REPORT", help="artifact directory or report.json (two or more)")
    p.add_argument("-o", "--output", metavar="FILE", default="compare.html",
                   help="where to write the page (default: compare.html)")


def labels_for(paths: list[Path]) -> list[str]:
    """Build labels from report.json paths: the directory name, then parent/name, then name#i.

    >>> labels_for([Path("a/out/report.json"), Path("b/out/report.json")])
    ['a/out', 'b/out']
    """
    dirs = [p.resolve().parent for p in paths]
    labels = [d.name or str(d) for d in dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{d.parent.name}/{d.name}" for d in dirs]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..html_report import load_gate, load_report, render_compare_html

    if len(args.reports) < 2:
        raise InputError("edgekd compare needs at least two builds (artifact directories or report.json files)")
    loaded = [load_report(r) for r in args.reports]
    labels = labels_for([path for path, _ in loaded])
    gates = {label: load_gate(path.parent / "gate.json") for label, (path, _) in zip(labels, loaded)}
    page = render_compare_html([(label, rep) for label, (_, rep) in zip(labels, loaded)], gates)
    target = Path(args.output)
    write_text(target, page)
    print(f"wrote {target} ({', '.join(labels)})")
    return 0
