"""edgekd distill: the build's first stages only -- a teacher (loaded or trained) and a distilled student.pt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._stage import add_config_arguments

HELP = "distil a student from the teacher and write student.pt (the build's first stage only)"
DESCRIPTION = """\
Load (or train) the teacher the config names and distil the student on the training split,
exactly as `edgekd build` does, then write the student checkpoint to -o (default student.pt).
Continue with `edgekd export student.pt` (fp32 ONNX) and `edgekd quantize` (INT8).
The file is written whole or not at all; the test split is never read during training."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("-o", "--out", default="student.pt", help="student checkpoint to write (default: student.pt)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import load_dataset
    from ..distill import resolve_device
    from ..harness import accuracy, evaluate
    from ..pipeline import distill_stage, preflight, prepare_teacher, save_student
    from ..runtimes import RUNTIMES
    from ._stage import check_output, write_output

    cfg = load_config(args.config, args.overrides)
    preflight(cfg)
    out = Path(args.out)
    check_output(out, (".pt",))  # refuse a bad -o now, not after training
    ds = load_dataset(cfg.data)
    device = resolve_device(cfg.compute.device)
    teacher, _ = prepare_teacher(cfg, ds, device, not args.quiet)
    student, dist = distill_stage(cfg, ds, teacher, device, not args.quiet)
    write_output(out, (".pt",), lambda tmp: save_student(cfg, ds, student, dist, tmp))
    bs = cfg.measure.eval_batch_size
    acc = {name: accuracy(evaluate(RUNTIMES.get("torch")(m, dev), ds.test.x, bs), ds.test.y)
           for name, m, dev in (("teacher", teacher, device), ("student", student, "cpu"))}
    tr = dist["training"]
    kept = f", kept epoch {tr['kept']['kept_epoch']} ({tr['kept']['why']})" if tr["kept"] else ""
    print(f"{out}: {cfg.student.arch}, {dist['student_params']:,} parameters, {len(tr['log'])} epochs of "
          f"{cfg.distill.loss}{kept}; clean accuracy on the {len(ds.test)} test images: student "
          f"{100 * acc['student']:.1f}%, teacher {100 * acc['teacher']:.1f}%", file=sys.stdout)
    return 0
