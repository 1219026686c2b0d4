"""edgekd quantize: fp32 ONNX -> INT8 (static, calibrated on the data's calibration images, or
dynamic) or fp16 ONNX, as the [quantize] preset says."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import quantized_file
from ._stage import add_config_arguments

HELP = "quantise an fp32 ONNX model to INT8 or fp16 (the build's quantize stage)"
DESCRIPTION = """\
Quantise MODEL (an fp32 ONNX file taking uint8 NHWC images, e.g. from `edgekd export`) with
onnxruntime.quantization exactly as `edgekd build` does: the [quantize] preset (`edgekd presets`)
says static INT8 (calibrated on the calibration images of the data), dynamic INT8 or fp16; the
options are those of -c CONFIG, else of the build MODEL sits in, else the defaults. Then report the
model's agreement with MODEL on the calibration images."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="fp32 ONNX model")
    add_config_arguments(p, "build config whose [data] / [quantize] sections to use (default: those of "
                         "the build MODEL sits in)", "quantize.preset='\"int8-static-u8s8\"'")
    p.add_argument("-o", "--out", help=f"ONNX file to write (default: {quantized_file('int8')}, or "
                   f"{quantized_file('fp16')} for an fp16 preset)")


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..errors import InputError
    from ..files import check_regular
    from ..harness import agreement, evaluate
    from ..pipeline import quantize_stage
    from ..runtimes import RUNTIMES
    from ._stage import config_for, stored_config, write_output

    path = check_regular(args.model, "model")
    if path.suffix != ".onnx":
        raise InputError(f"{path}: expected an fp32 .onnx model")
    fp32 = RUNTIMES.get("onnxruntime")(path)  # one sentence if onnxruntime cannot load it
    from ..config import load_config

    user_cfg = load_config(args.config, args.overrides) if args.config else None
    stored = stored_config(path)
    if user_cfg is None and not stored:
        raise InputError(f"{path} carries no build config (it is not from `edgekd export` or an edgekd "
                         "build); give the config whose [data] and [quantize] sections to use: -c CONFIG")
    cfg = config_for(path, user_cfg, args.overrides, stored)
    ds = load_dataset(cfg.data)
    calib = ds.calib.x
    try:
        ref = evaluate(fp32, calib)
    except Exception as e:  # wrong input shape / dtype for this model
        raise InputError(f"{path}: cannot run on {ds.name} images {ds.image_shape} uint8 NHWC "
                         f"({str(e).splitlines()[0][:160]})") from None
    from ..quantize import calib_images_of, precision_of

    q = cfg.quantize
    out = Path(args.out or quantized_file(precision_of(q)))
    write_output(out, (".onnx",), lambda tmp: quantize_stage(cfg, path, calib, tmp))
    agree = agreement(evaluate(RUNTIMES.get("onnxruntime")(out), calib), ref)
    what = {"static": f"static INT8 ({q.activation_type} activations, {q.calibrate_method} calibration on "
                      f"{len(calib_images_of(calib, q))} {ds.name} images)",
            "dynamic": "dynamic INT8 (activations quantised at run time)", "fp16": "fp16"}[q.method]
    print(f"{out}: {q.preset}, {what}, {out.stat().st_size:,} bytes (fp32 {path.stat().st_size:,}); "
          f"same class as {path.name} on {100 * agree:.1f}% of the calibration images")
    return 0
