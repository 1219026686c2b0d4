"""edgekd build: the whole pipeline; exits with the gate's code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._stage import add_config_arguments

HELP = "distil, export, quantise, measure and gate (the whole pipeline)"
DESCRIPTION = """\
Run every stage: teacher -> distilled student -> ONNX -> INT8 candidates -> clean and perturbed
evaluation of every model -> the INT8 candidate to deploy -> report -> gate.

With no arguments it runs on the embedded default (scikit-learn's digits). Options live in
one TOML file (-c); every key, its default and meaning: `edgekd config` or edgekd.example.toml
(docs: README.md, "Configuration"). Exit codes: 0 built and gate passed, 1 gate failed
(artifacts still written), 2 usage or input error, 3 internal error."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("-o", "--out", default="edgekd-out", help="artifact directory (default: edgekd-out)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or stage lines")
    p.add_argument("--device", metavar="PROFILE", help="build for this device profile (`edgekd devices`, a "
                   ".toml path, or host = this machine): each INT8 preset it lists is built and measured, "
                   "and the fastest that passes the gate is deployed (deploy.device)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..pipeline import build
    from ..report import format_table, summary_rows

    overrides = list(args.overrides) + ([f"deploy.device={args.device}"] if args.device else [])
    cfg = load_config(args.config, overrides)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    result = build(cfg, Path(args.out), progress=not args.quiet, say=say)
    print(format_table(summary_rows(result.report)))
    if result.gate_text:
        print()
        print(result.gate_text.rstrip())
    print(f"\nartifacts: {result.out_dir.resolve()}  ({time.perf_counter() - t0:.1f} s)")
    return result.exit_code
