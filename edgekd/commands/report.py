"""edgekd report: (re)write an artifact directory's report.html from its report.json and gate.json."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write report.html (gate verdict, model table, plots) for an artifact directory"
DESCRIPTION = """\
Render OUT_DIR/report.html from OUT_DIR/report.json and gate.json: the gate verdict and failing
checks, teacher vs every artifact (accuracy, mCA, retention, agreement, size, latency, memory),
accuracy-vs-severity curves per corruption family, a heat map of the accuracy drop vs the
teacher, latency distributions and a latency-vs-mCA Pareto plot. One self-contained file (plots
inlined); plots need matplotlib: pip install 'edgekd[plots]'. `edgekd build` writes it too.

With --device-results, first add each on-device results file (from a bundle's run.py) to
report.json's device_runs (and report.md's "Device runs" section); the page then shows them.
Every results file is validated whole before anything is written (a bad field is an error naming
the file and the field, and leaves OUT_DIR as it was). Files of OUT_DIR are replaced atomically
and OUT_DIR/manifest.json, written last, records their new sha256, so the build never
contradicts its manifest. -o may name report.html, a new file in OUT_DIR (then recorded in the
manifest too) or a file elsewhere; not another file of OUT_DIR or of another build."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="artifact directory of `edgekd build`")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: OUT_DIR/report.html)")
    p.add_argument("--device-results", action="append", default=[], metavar="RESULTS.json",
                   help="merge this on-device results file into report.json first (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..device_results import merged_files
    from ..errors import InputError
    from ..files import listed_in_build, replace_build_files, write_atomic
    from ..html_report import load_gate, load_report, render_html

    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such artifact directory (give the directory `edgekd build -o` wrote)")
    _, report = load_report(out_dir)
    files: dict[Path, str] = {}
    if args.device_results:  # everything validated and computed first; nothing written yet
        report, files = merged_files(out_dir, [Path(p) for p in args.device_results])
    target = Path(args.output) if args.output else out_dir / "report.html"
    in_build = target.resolve().parent == out_dir.resolve()
    if in_build and target.name != "report.html" and (target.exists() or target.name == "manifest.json"):
        raise InputError(f"{target} is a file of the build in {out_dir}; choose another -o")
    if not in_build and listed_in_build(target):
        raise InputError(f"{target} is a file of another edgekd build (its manifest.json lists it); "
                         "choose another -o")
    page = render_html(report, load_gate(out_dir / "gate.json"))
    if in_build:
        files[target] = page  # a file of the build: recorded in its manifest with the others
    replace_build_files(out_dir, files)
    if target not in files:
        write_atomic(target, page)
    print(f"wrote {target}")
    return 0
