"""ORT format (for mobile and reduced onnxruntime builds) of the INT8 model, parity-checked.

    rec = convert_to_ort(Path("out/student.int8.onnx"), held_out_images)
    # -> out/student.int8.ort, out/student.int8.required_operators.config,
    #    out/student.int8.required_operators_and_types.config

onnxruntime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``) does the work:
the model is loaded, optimised and saved as a FlatBuffers ``.ort`` file, and the operators (and,
in the second config, the data types) the optimised graph needs are written for a reduced build
(``build.sh --minimal_build --include_ops_by_config student.int8.required_operators.config``, plus
``--enable_reduced_operator_type_support`` with the ``_and_types`` config).

Choices, after onnxruntime's docs ("ORT model format", "ORT Mobile Model Export Helpers") and its
converter's source:

- optimisation style **Fixed** (the converter's default): optimisations are applied once, at
  conversion, and baked into the file; the runtime style only matters for compiling EPs (NNAPI,
  CoreML), which the CPU profiles do not use.
- level **all**, ``target_platform="arm"``: the converter then leaves out the x86-only NCHWc layout
  transformer (a model with it runs only on the machine that made it) and sets
  ``session.qdqisint8allowed``, so the QDQ (int8 activations) pattern is fused into int8
  ``QLinearConv`` / ``QGemm`` kernels, which is what ARM boards and phones run. The result runs on
  x86 too; the parity check below proves it there on every build.

Parity: the ``.ort`` and the ``.onnx`` are run in onnxruntime on the same held-out images; the
largest |logit difference| must be <= ``atol`` (default 0.05) or 2 % of the largest |logit|,
whichever is larger (the fused int8 kernels round differently from the unfused QDQ graph by a few
quantisation steps, which scale with the logits: 0.089 on logits of about 10 for a CIFAR
ResNet-8), and argmax agreement >= 0.99.
On the default digits build both figures are exact (0.0 and 1.0, onnxruntime 1.32, x86).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError, ParityError

CONFIG_SUFFIXES = (".required_operators.config", ".required_operators_and_types.config")


def ort_paths(onnx_path: Path) -> dict[str, Path]:
    """The files :func:`convert_to_ort` writes next to ``onnx_path``."""
    stem = onnx_path.with_suffix("")
    return {"ort": Path(f"{stem}.ort"),
            "operators_config": Path(f"{stem}{CONFIG_SUFFIXES[0]}"),
            "operators_and_types_config": Path(f"{stem}{CONFIG_SUFFIXES[1]}")}


def convert_to_ort(onnx_path: Path, images: np.ndarray, atol: float = 0.05,
                   min_agreement: float = 0.99) -> dict:
    """Write ``<stem>.ort`` and its reduced-build configs next to ``onnx_path``; check parity.

    Raises :class:`ParityError` when the ``.ort`` does not reproduce the ``.onnx``.
    """
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
        from onnxruntime.tools.ort_format_model import create_config_from_models
    except ImportError as e:  # onnxruntime builds without the tools package
        raise InputError(f"this onnxruntime has no ORT-format converter ({e}); install the full "
                         "onnxruntime wheel") from None
    onnx_path = Path(onnx_path)
    dest = ort_paths(onnx_path)
    quiet = io.StringIO()
    log = logging.getLogger("ort_format_model.utils")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(quiet):
            src = Path(tmp) / onnx_path.name
            shutil.copyfile(onnx_path, src)
            convert_onnx_models_to_ort(src, output_dir=Path(tmp), optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform="arm")
            ort_tmp = src.with_suffix(".ort")
            shutil.copyfile(ort_tmp, dest["ort"])
            for key, types in (("operators_config", False), ("operators_and_types_config", True)):
                cfg = Path(tmp) / dest[key].name
                create_config_from_models([ort_tmp], cfg, types)
                # the generated header names the temporary path; name the artifact instead
                text = cfg.read_text().replace(str(ort_tmp), dest["ort"].name)
                dest[key].write_text(text)
    finally:
        log.setLevel(level)
    parity = check_ort_parity(onnx_path, dest["ort"], images, atol, min_agreement)
    ops = [ln for ln in dest["operators_config"].read_text().splitlines() if ln and not ln.startswith("#")]
    return {"path": dest["ort"].name, "source": onnx_path.name, "optimization_style": "Fixed",
            "optimization_level": "all", "target_platform": "arm",
            "operators_config": dest["operators_config"].name,
            "operators_and_types_config": dest["operators_and_types_config"].name,
            "operators": ops, "size_bytes": dest["ort"].stat().st_size, "parity": parity}


def check_ort_parity(onnx_path: Path, ort_path: Path, images: np.ndarray, atol: float,
                     min_agreement: float) -> dict:
    from .runtimes import OrtRunner

    ref = OrtRunner(onnx_path).predict(images)
    got = OrtRunner(ort_path).predict(images)
    max_abs = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    # the fused kernels' rounding error grows with the logits' scale: allow atol or 2 % of the
    # largest |logit|, whichever is larger
    allowed = max(atol, 0.02 * float(np.abs(ref).max()))
    rec = {"samples": int(len(images)), "reference": onnx_path.name, "max_abs_logit_diff": max_abs,
           "argmax_agreement": agree, "atol": atol, "allowed_abs_logit_diff": allowed,
           "min_agreement": min_agreement}
    if not (max_abs <= allowed and agree >= min_agreement):
        raise ParityError(f"{ort_path.name} does not reproduce {onnx_path.name}: max |logit diff| "
                          f"{max_abs:.3g} (allowed {allowed:.3g}: {atol:g} or 2% of the largest "
                          f"|logit|), argmax agreement {agree:.4f} (needed {min_agreement:g}) on "
                          f"{len(images)} held-out images")
    return rec
