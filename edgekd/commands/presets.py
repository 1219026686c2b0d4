"""edgekd presets: list the export presets (export/*.toml): how each artifact is exported or quantised."""

from __future__ import annotations

import argparse

HELP = "list export / quantisation presets (export/*.toml)"
DESCRIPTION = """\
List the presets that export.preset and quantize.preset accept by name: one TOML file each in the
repository's export/ folder (shipped inside the package). A preset can also be given by path.
docs/extending.md shows how to add one."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", nargs="?", help="show this preset's keys")


def run(args: argparse.Namespace) -> int:
    from ..presets import builtin_presets, load_preset

    if args.preset:
        p = load_preset(args.preset, None)
        print(f"{p.name}: {p.description} ({p.source})")
        for key, value in p.table.items():
            print(f"  {p.section}.{key} = {value!r}")
        return 0
    rows = [("name", "config key", "precision", "description")]
    rows += [(p.name, f"{p.section}.preset", p.precision, p.description) for p in builtin_presets()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0
