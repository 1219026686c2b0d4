"""Reduced-precision models with onnxruntime.quantization: static and dynamic INT8, and fp16.

    rec = quantize_model(Path("student.fp32.onnx"), Path("student.int8.onnx"), calib_images, cfg.quantize)
    rec = quantize_model(fp32, out, calib, cfg.quantize, nodes_to_exclude=["/conv1/Conv"],
                         calib_cache=Path("~/.cache/edgekd/calibration"))

``[quantize] method`` says which (a preset in ``export/`` usually sets it):

- ``static``: QDQ after ``quant_pre_process`` (ONNX shape inference + graph optimisation),
  calibrated on the first ``calib_samples`` calibration images (minmax / entropy / percentile),
  per-channel int8 weights, uint8 (U8S8) or int8 (S8S8) activations, 7-bit weights with
  ``reduce_range``. The calibration ranges are cached (onnxruntime's ``calibration_cache_path``) in
  ``calib_cache``, keyed by the fp32 model, the images and the calibration method, so another preset
  of the same model (U8S8 after S8S8, or the sensitivity search's trials) does not recalibrate.
  ``nodes_to_exclude`` stay in float (the robustness-aware search, :mod:`edgekd.sensitivity`).
- ``dynamic``: int8 weights, activations quantised at run time (ConvInteger / MatMulInteger).
- ``fp16``: ``onnxruntime.transformers.float16`` with the graph's uint8 image input and float32
  logits output kept.

After INT8 quantisation the graph's input normalisation (``Cast -> Sub(mean) -> Div(std)`` with
per-channel constants) gets its constants ``Expand``-ed to the whole image
(:func:`expand_input_constants`): onnxruntime's INT8 convolutions run channels-last, so it moves
the layout transpose in front of the normalisation, where a per-channel constant broadcasts along
the innermost axis of size 3, its slowest path (Sub + Div cost 16 % of the CIFAR student's INT8
time at batch 1); with full-size constants (folded at session start, so the file grows by bytes)
they are plain elementwise ops. The arithmetic is unchanged, so is every output.

Why U8S8 + 7-bit weights on x86 without VNNI (AVX2, AVX-512 without VNNI): onnxruntime's U8S8
kernels there use VPMADDUBSW, whose int16 intermediate sums saturate with 8-bit weights, and S8S8
runs slower than fp32 (benchmarks/RESULTS.md). Measured on the digits student on an AVX2 machine:
8-bit weights agreed with the fp32 model on 93.0% of test images, 7-bit on 100%.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .config import QuantizeConfig
from .export import INPUT_NAME

# the [quantize] keys that say how a model is quantised (what a preset sets); the others say what
# the build checks and searches (tolerances, the sensitivity search, QAT) and are the build's own
RECIPE_KEYS = ("method", "calibrate_method", "calib_samples", "calib_percentile", "calib_num_bins",
               "per_channel", "activation_type", "reduce_range")
PRECISION = {"static": "int8", "dynamic": "int8", "fp16": "fp16"}


def precision_of(cfg: QuantizeConfig) -> str:
    """"int8" or "fp16": the precision of the model ``cfg`` makes."""
    return PRECISION[cfg.method]


def recipe(cfg: QuantizeConfig) -> dict:
    """The recipe part of a [quantize] section (what a preset sets), as a dict."""
    return {k: getattr(cfg, k) for k in RECIPE_KEYS}


def quantize_model(fp32_path: Path, out_path: Path, calib_images: np.ndarray, cfg: QuantizeConfig, *,
                   nodes_to_exclude: list[str] | tuple[str, ...] = (), calib_cache: Path | None = None,
                   expand_constants: bool = True) -> dict:
    """Write the ``cfg.method`` model of ``fp32_path`` to ``out_path``; returns its record.
    (``expand_constants=False`` skips :func:`expand_input_constants`: for benchmarks' ablations.)"""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if cfg.method == "fp16":
        return _fp16(fp32_path, out_path)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        if cfg.method == "dynamic":
            rec = _dynamic(pre, out_path, cfg, nodes_to_exclude)
        else:
            rec = _static(fp32_path, pre, out_path, calib_images, cfg, list(nodes_to_exclude), calib_cache,
                          Path(tmp))
    rec["input_constants_expanded"] = expand_input_constants(out_path) if expand_constants else 0
    return rec


# ops of the input normalisation prefix (uint8 image -> float, normalised, channels first)
_PREFIX_OPS = {"Cast", "Transpose", "Sub", "Div", "Mul", "Add"}


def expand_input_constants(path: Path) -> int:
    """Rewrite ``path`` in place: each per-channel constant of the normalisation prefix (the
    Sub / Div / Mul / Add nodes between the uint8 NHWC image and the first other op) is fed
    through ``Expand`` to the full ``[1, C, H, W]`` shape. Returns how many were expanded (0: the
    graph has no such prefix, and the file is untouched)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] if g.input else []
    if len(dims) != 4 or not all(dims[1:]):
        return 0
    _, h, w, c = dims
    init = {i.name: i for i in g.initializer}
    reached = {g.input[0].name}
    nodes, expanded = list(g.node), 0
    shape_name = "edgekd_image_shape_nchw"
    for node in list(nodes):
        if not node.input or node.input[0] not in reached or node.op_type not in _PREFIX_OPS:
            continue
        reached.update(node.output)
        const = init.get(node.input[1]) if len(node.input) > 1 else None
        if const is None or tuple(const.dims) not in ((1, c, 1, 1), (c, 1, 1)):
            continue
        full = f"{node.input[1]}_expanded"
        nodes.insert(nodes.index(node), helper.make_node("Expand", [node.input[1], shape_name], [full],
                                                         name=f"{node.name}_expand_constant"))
        node.input[1] = full
        expanded += 1
    if expanded:
        g.initializer.append(numpy_helper.from_array(np.array([1, c, h, w], np.int64), shape_name))
        del g.node[:]
        g.node.extend(nodes)
        onnx.save(model, str(path))
    return expanded


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization prints calibration progress to stdout and logs a warning for the uint8
    image input it does not quantise: neither is for edgekd's users (errors still raise)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def calib_images_of(calib_images: np.ndarray, cfg: QuantizeConfig) -> np.ndarray:
    """The calibration images a recipe uses: the first ``calib_samples`` (0 = all)."""
    return calib_images[:cfg.calib_samples] if cfg.calib_samples else calib_images


def _static(fp32_path: Path, pre: Path, out_path: Path, calib_images: np.ndarray, cfg: QuantizeConfig,
            nodes_to_exclude: list[str], calib_cache: Path | None, tmp: Path) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    images = calib_images_of(calib_images, cfg)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibrate_method]
    # Histogram calibrators (entropy, percentile) stack activations across batches, so they need
    # batches of one size: feed those one image at a time.
    batch = 64 if cfg.calibrate_method == "minmax" else 1

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(images), batch))

        def get_next(self) -> dict | None:
            i = next(self._it, None)
            return None if i is None else {INPUT_NAME: images[i:i + batch]}

    extra: dict = {}
    if cfg.calibrate_method == "percentile":
        extra.update(CalibPercentile=cfg.calib_percentile, CalibNumBins=cfg.calib_num_bins)
    elif cfg.calibrate_method == "entropy":
        extra.update(CalibNumBins=cfg.calib_num_bins)
    cached = None if calib_cache is None else Path(calib_cache) / f"{_calib_key(fp32_path, images, cfg)}.json"
    local = tmp / "calibration.json"
    hit = cached is not None and cached.is_file() and _copy(cached, local)

    def run(cache_path: Path | None) -> None:
        quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=cfg.per_channel,
                        activation_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[cfg.activation_type],
                        weight_type=QuantType.QInt8, calibrate_method=method, reduce_range=cfg.reduce_range,
                        nodes_to_exclude=nodes_to_exclude or None, extra_options=extra,
                        calibration_cache_path=None if cache_path is None else str(cache_path))

    try:
        run(local)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        if not hit:
            raise
        local.unlink(missing_ok=True)  # a damaged or foreign cache entry: calibrate afresh
        hit = False
        run(local)
    if cached is not None and not hit and local.is_file():
        _copy(local, cached)
    return {"path": out_path.name, "method": "static", "format": "QDQ",
            "weights": f"int8 per-{'channel' if cfg.per_channel else 'tensor'}, "
                       f"{7 if cfg.reduce_range else 8}-bit",
            "activations": cfg.activation_type, "calibrate_method": cfg.calibrate_method,
            "reduce_range": cfg.reduce_range, "calib_samples": int(len(images)),
            "calibration": "cache" if hit else "computed", "nodes_excluded": list(nodes_to_exclude),
            "pre_process": "quant_pre_process"}


def _dynamic(pre: Path, out_path: Path, cfg: QuantizeConfig, nodes_to_exclude) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(pre), str(out_path), per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                     weight_type=QuantType.QInt8, nodes_to_exclude=list(nodes_to_exclude) or None)
    return {"path": out_path.name, "method": "dynamic", "format": "QOperator (ConvInteger / MatMulInteger)",
            "weights": f"int8 per-{'channel' if cfg.per_channel else 'tensor'}, {7 if cfg.reduce_range else 8}-bit",
            "activations": "uint8, quantised at run time", "reduce_range": cfg.reduce_range,
            "calib_samples": 0, "nodes_excluded": list(nodes_to_exclude), "pre_process": "quant_pre_process"}


def _fp16(fp32_path: Path, out_path: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return {"path": out_path.name, "method": "fp16", "format": "ONNX float16",
            "weights": "float16", "activations": "float16", "calib_samples": 0,
            "converter": "onnxruntime.transformers.float16 (keep_io_types)"}


def _calib_key(fp32_path: Path, images: np.ndarray, cfg: QuantizeConfig) -> str:
    """What the calibration ranges depend on: the model, the images, the calibrator and its options
    (not the activation type or reduce_range, which only change how the ranges are used)."""
    import onnxruntime

    h = hashlib.sha256()
    with open(fp32_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(repr((images.shape, cfg.calibrate_method, cfg.calib_percentile if cfg.calibrate_method ==
                   "percentile" else None, cfg.calib_num_bins if cfg.calibrate_method != "minmax" else None,
                   onnxruntime.__version__)).encode())
    return h.hexdigest()[:32]


def _copy(src: Path, dst: Path) -> bool:
    """Copy through a temporary file and a rename; False (nothing written) on any OS error: the
    cache is an optimisation, a read-only cache never fails a build."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
