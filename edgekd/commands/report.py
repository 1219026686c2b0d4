"""edgekd report: (re)write an artifact directory's report.html from its report.json and gate.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import write_text

HELP = "write report.html (gate verdict, model table, plots) for an artifact directory"
DESCRIPTION = """\
Render OUT_DIR/report.html from OUT_DIR/report.json and gate.json: the gate verdict and failing
checks, teacher vs every artifact (accuracy, mCA, retention, agreement, size, latency, memory),
accuracy-vs-severity curves per corruption family, a heat map of the accuracy drop vs the
teacher, latency distributions and a latency-vs-mCA Pareto plot. One self-contained file (plots
inlined); plots need matplotlib: pip install 'edgekd[plots]'. `edgekd build` writes it too.

With --device-results, first add each on-device results file (from a bundle's run.py) to
report.json's device_runs; the page then shows them."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="artifact directory of `edgekd build`")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: OUT_DIR/report.html)")
    p.add_argument("--device-results", action="append", default=[], metavar="RESULTS.json",
                   help="merge this on-device results file into report.json first (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..html_report import load_gate, load_report, render_html

    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such artifact directory (give the directory `edgekd build -o` wrote)")
    report_path, report = load_report(out_dir)
    if args.device_results:
        from ..device_results import merge_device_results

        for path in args.device_results:
            report = merge_device_results(out_dir, Path(path))
    target = Path(args.output) if args.output else out_dir / "report.html"
    page = render_html(report, load_gate(out_dir / "gate.json"))
    write_text(target, page)
    print(f"wrote {target}")
    return 0
