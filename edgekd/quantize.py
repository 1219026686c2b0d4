"""INT8 quantisation with onnxruntime.quantization.

    quantize_static_int8(Path("student.fp32.onnx"), Path("student.int8.onnx"), calib_images, cfg)

Static QDQ quantisation (per-channel weights, int8 activations) after ``quant_pre_process``
(ONNX shape inference + graph optimisation), calibrated on the calibration split only.

Weights are quantised to 7 bits (``reduce_range``) by default: on x86 CPUs without VNNI (AVX2,
AVX-512 without VNNI) onnxruntime's U8S8 kernels use VPMADDUBSW, whose int16 intermediate sums
saturate; onnxruntime's docs recommend reduce_range there. Measured on the digits student on an
AVX2 machine: 8-bit weights agreed with the fp32 model on 93.0% of test images, 7-bit on 100%.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .config import QuantizeConfig
from .export import INPUT_NAME


def quantize_static_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray,
                         cfg: QuantizeConfig) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibrate_method]
    # Histogram calibrators (entropy, percentile) stack activations across batches, so they need
    # batches of one size: feed those one image at a time.
    batch = 64 if cfg.calibrate_method == "minmax" else 1

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(calib_images), batch))

        def get_next(self) -> dict | None:
            i = next(self._it, None)
            return None if i is None else {INPUT_NAME: calib_images[i:i + batch]}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=cfg.per_channel,
                        activation_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[cfg.activation_type],
                        weight_type=QuantType.QInt8, calibrate_method=method,
                        reduce_range=cfg.reduce_range)
    return {"path": out_path.name, "format": "QDQ", "weights": "int8 per-channel" if cfg.per_channel
            else "int8 per-tensor", "activations": cfg.activation_type, "calibrate_method": cfg.calibrate_method,
            "reduce_range": cfg.reduce_range,
            "calib_samples": int(len(calib_images)), "pre_process": "quant_pre_process"}
