"""edgekd export: student.pt -> fp32 ONNX (uint8 NHWC in, logits out), parity-checked (the build's export stage)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import STUDENT_FP32, get
from ._stage import add_config_arguments

_DEFAULT = get(STUDENT_FP32).file

HELP = "export a student.pt to fp32 ONNX, parity-checked against torch (the build's export stage)"
DESCRIPTION = """\
Export STUDENT (an edgekd checkpoint, e.g. from `edgekd distill`) to fp32 ONNX exactly as `edgekd build`
does: uint8 NHWC images in, logits out, normalisation inside the graph; then check that
onnxruntime reproduces the torch logits on calibration images of the checkpoint's data
(its stored [data] and [export] sections, or those of -c CONFIG)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("student", help="edgekd student checkpoint (.pt)")
    add_config_arguments(p, "build config whose [data] / [export] sections to use (default: the config "
                         "stored in the checkpoint)", 'export.opset=18')
    p.add_argument("-o", "--out", default=_DEFAULT, help=f"ONNX file to write (default: {_DEFAULT})")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import load_dataset
    from ..errors import InputError
    from ..models import load_checkpoint
    from ..pipeline import export_stage
    from ._stage import config_for, store_config, stored_config, write_output

    path = Path(args.student)
    user_cfg = load_config(args.config, args.overrides) if args.config else None
    model, ck = load_checkpoint(path, user_cfg.student.arch if user_cfg else None, key="student")
    cfg = config_for(path, user_cfg, args.overrides, stored_config(path, ck))
    ds = load_dataset(cfg.data)
    if ck.get("num_classes") not in (None, len(ds.classes)):
        raise InputError(f"{path} has {ck['num_classes']} classes, data {ds.name!r} has {len(ds.classes)}; "
                         "give the config it was built with (-c)")

    def produce(tmp: Path) -> dict:
        rec = export_stage(cfg, model.eval(), ds.calib.x, tmp)
        store_config(tmp, cfg)  # so `edgekd quantize` calibrates on the same data
        return rec

    rec = write_output(args.out, (".onnx",), produce)
    print(f"{args.out}: opset {rec['opset']}, max |logit diff| vs torch "
          f"{rec['parity']['max_abs_logit_diff']:.2g} on {rec['parity']['samples']} {ds.name} images")
    return 0
