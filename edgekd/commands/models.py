"""edgekd models: list architectures and distillation losses."""

from __future__ import annotations

import argparse

HELP = "list model architectures and distillation losses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from ..distill import LOSSES
    from ..models import MODELS

    print("architectures:")
    for name in MODELS:
        print(f"  {name:20s} {(MODELS.get(name).__doc__ or '').strip().splitlines()[0]}")
    print("distillation losses:")
    for name in LOSSES:
        print(f"  {name:20s} {(LOSSES.get(name).__doc__ or '').strip().splitlines()[0]}")
    return 0
