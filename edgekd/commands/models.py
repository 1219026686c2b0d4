"""edgekd models: list architectures and distillation losses."""

from __future__ import annotations

import argparse

HELP = "list model architectures and distillation losses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


# what a method needs, from the flags it registered with (losses.LossSpec)
NEEDS = (("needs_teacher", "the teacher on every batch"), ("feature_layers", "distill.feature_layers"),
         ("needs_views", "distill.augment for its views"), ("adversarial", "PGD: distill.adv_*"))


def run(args: argparse.Namespace) -> int:
    from ..losses import LOSSES, loss_spec
    from ..models import MODELS

    print("architectures:")
    for name in MODELS:
        print(f"  {name:20s} {(MODELS.get(name).__doc__ or '').strip().splitlines()[0]}")
    print("distillation losses:")
    for name in LOSSES:
        spec = loss_spec(name)
        needs = ["labels only"] if not spec.uses_teacher else [t for f, t in NEEDS if getattr(spec, f)]
        print(f"  {name:20s} {(LOSSES.get(name).__doc__ or '').strip().splitlines()[0]}"
              + (f" [{'; '.join(needs)}]" if needs else ""))
    return 0
