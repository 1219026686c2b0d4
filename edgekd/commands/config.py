"""edgekd config: print every build option with its default and meaning, or validate a file."""

from __future__ import annotations

import argparse

HELP = "print all build options (TOML with defaults), or validate a config file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="a config file to validate and print resolved")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    import json

    from ..config import describe, load_config

    if args.file or args.overrides:
        print(json.dumps(load_config(args.file, args.overrides).to_dict(), indent=2))
    else:
        print(describe())
    return 0
