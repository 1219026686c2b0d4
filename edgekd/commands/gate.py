"""edgekd gate: pass / fail a build against its teacher (and optionally an older build), for CI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "pass / fail a build's students against the teacher with paired statistics (exit 0 / 1)"
DESCRIPTION = """\
Check the gated models of REPORT (an artifact directory or its report.json, with predictions.npz
beside it) against the teacher on the same test images: clean accuracy, mCA, worst corruption,
an adversarial attack, agreement, and absolute budgets (size, latency, memory). With --baseline,
also check that each gated model did not regress against an older build.

The policy (thresholds, mode, budgets) comes from --policy (a TOML file with top-level keys or a
[gate] section, e.g. an edgekd.toml) and --set; docs/gate.md lists every key and default, and
gate.example.toml is a complete example.

Exit codes: 0 gate passed, 1 gate failed, 2 usage or input error.
Writes the verdict to --json FILE, or by default to gate.json next to the report, except in an
edgekd build whose manifest lists that gate.json (the build's own verdict is never rewritten: the
manifest hashes it); JUnit XML with --junit; appends a markdown summary to $GITHUB_STEP_SUMMARY
when that variable is set."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", help="artifact directory or report.json (predictions.npz must sit beside it)")
    p.add_argument("--policy", metavar="FILE", help="TOML policy: top-level keys or a [gate] section")
    p.add_argument("--baseline", metavar="OLD", help="older artifact directory or report.json: gated "
                   "models must not have regressed against it")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per check)")
    p.add_argument("--device", action="append", default=[], metavar="PROFILE",
                   help="check the report's device runs of this profile (name or .toml path) against "
                   "its budgets, instead of the budgets recorded with each run (repeatable)")
    p.add_argument("--json", metavar="FILE", help="where to write the verdict (default: gate.json "
                   "next to the report, unless that is a build's own gate.json)")
    p.add_argument("--mode", choices=("strict", "confident"), help="override the policy's mode")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one policy key, e.g. --set max_clean_drop=0.02, "
                   "--set budgets.student_int8.max_size_bytes=200000, --set max_mca_drop=false "
                   "(repeatable)")


def parse_set(text: str) -> tuple[str, object]:
    """``"max_clean_drop=0.02"`` -> ``("max_clean_drop", 0.02)``; the value is read as TOML,
    bare words are strings. A leading ``gate.`` is dropped, so build-style keys work too."""
    from ..errors import ConfigError

    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like key=value, e.g. max_clean_drop=0.02")
    key, raw = (s.strip() for s in text.split("=", 1))
    key = key.removeprefix("gate.")
    if not key:
        raise ConfigError(f"--set {text!r} has no key")
    from ..config import parse_value

    return key, parse_value(raw)


def run(args: argparse.Namespace) -> int:
    from .. import gate
    from ..errors import InputError
    from ..files import listed_in_build

    report = Path(args.report)
    folder = report if report.is_dir() else report.parent
    json_path = Path(args.json) if args.json else folder / "gate.json"
    # a build's own files are hashed in its manifest: re-gating never rewrites them
    for dest in [Path(p) for p in (args.json, args.junit) if p]:
        if listed_in_build(dest):
            raise InputError(f"{dest} is a file of the edgekd build in {dest.resolve().parent} (listed "
                             "in its manifest.json); write the verdict elsewhere")
    if not args.json and listed_in_build(json_path):
        json_path = None
    overrides = dict(parse_set(t) for t in args.overrides)
    if args.mode:
        overrides["mode"] = args.mode
    raw = gate.read_policy_table(args.policy) if args.policy else {}
    where = args.policy or "gate policy"
    if args.overrides:
        where += " with --set overrides"
    policy = gate.load_policy(gate.merge_overrides(raw, overrides), where)
    from ..device_profiles import load_profile

    devices = [load_profile(d) for d in args.device] or None
    result = gate.evaluate_gate(args.report, policy, args.baseline, devices=devices)
    print(gate.format_table(result))
    if json_path is None:
        print(f"edgekd: note: verdict not written: {folder / 'gate.json'} is the build's own verdict "
              "(listed in its manifest.json); pass --json FILE to keep this one", file=sys.stderr)
    else:
        gate.write_gate_json(result, json_path)
    if args.junit:
        gate.write_junit(result, args.junit)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(gate.markdown_summary(result) + "\n")
        except OSError as e:  # a CI nicety: keep the verdict's exit code
            print(f"edgekd: warning: cannot append to GITHUB_STEP_SUMMARY {summary}: "
                  f"{e.strerror or e}", file=sys.stderr)
    return result.exit_code
