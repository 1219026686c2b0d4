"""edgekd devices: list the device profiles (built-in and $EDGEKD_DEVICES), or show one."""

from __future__ import annotations

import argparse
import json

HELP = "list device profiles (runtime, threads, precision, input, budgets)"
DESCRIPTION = """\
List the device profiles that `edgekd bench --device`, `edgekd bundle --device` and
`edgekd gate --device` accept by name: the built-in ones (the repository's devices/*.toml,
shipped inside the package) and any in the folder named by $EDGEKD_DEVICES. Any .toml profile can
also be given by path.
docs/devices.md describes every key."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", nargs="?", help="show this profile (name or .toml path) in full")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..device_profiles import builtin_profiles, load_profile, profile_table

    profiles = [load_profile(args.profile)] if args.profile else builtin_profiles()
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
    elif args.profile:
        p = profiles[0]
        for key, value in p.to_dict().items():
            if key != "budgets":
                print(f"{key:20s} {value}")
        for key, value in p.to_dict()["budgets"].items():
            print(f"budgets.{key:12s} {value}")
    else:
        print(profile_table(profiles))
    return 0
