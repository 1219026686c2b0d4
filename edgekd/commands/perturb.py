"""edgekd perturb list: the perturbation registry."""

from __future__ import annotations

import argparse

HELP = "list the perturbations (corruptions, missing data, adversarial attacks)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list"], help="list: print every perturbation by family")


def run(args: argparse.Namespace) -> int:
    from .. import perturb
    from ..attacks import ATTACKS

    for name in perturb.names():
        p = perturb.PERTURBATIONS.get(name)
        print(f"{name:20s} {p.family:8s} {p.description}")
    for name in ATTACKS:
        print(f"{name:20s} {'adversarial':8s} L-inf attack; white-box on torch models, transfer on ONNX")
    print("\ngroups: all (common + extra + missing), common (the 15 of mCA), extra, missing; "
          "severities 1..5")
    return 0
