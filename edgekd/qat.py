"""Quantisation-aware training (QAT) with torchao's PT2E flow, exported as an ONNX QDQ model.

    from edgekd import qat
    if qat.available():
        rec = qat.qat_finetune(student, split.x, split.y, teacher_logits, calib.x, cfg.distill,
                               epochs=2, lr=1e-3, out_path=Path("student.qat.onnx"),
                               parity_images=test.x[:256])
        rec["parity"]["argmax_agreement"]  # converted torch model vs onnxruntime

The flow (``student``, a ``models.Preprocessed``, is deep-copied and never changed):

1. ``torch.export.export(copy, (uint8 batch,), dynamic_shapes=batch).module()`` in train mode;
2. ``prepare_qat_pt2e(m, quantizer)``: fake-quant modules on activations and weights; each
   conv + BatchNorm pair is rewritten to the QAT conv-bn pattern (BN statistics still update in
   training and are folded into the conv weight before it is fake-quantised);
3. range initialisation: ``calib_x`` through the model in eval mode with the observers on and
   fake quantisation off (the fp32 activation ranges);
4. ``epochs`` of SGD (momentum / Nesterov / weight decay of ``distill_cfg``; cosine decay from
   ``lr`` to 0 per step, no warm-up; batches drawn as ``distill.py`` draws them, no augmentation)
   on the ``hinton`` loss against ``teacher_logits`` (``ce`` on the labels when None), between
   ``move_exported_model_to_train`` and ``move_exported_model_to_eval``, as torchao's docs say
   (``.train()`` / ``.eval()`` are refused on exported models). ``lr`` is a fine-tuning rate
   (~1e-3): one epoch of SGD at 1e-2 costs the Adam-trained digits test student a third of its
   argmax agreement, quantised or not;
5. ``convert_pt2e``: BN folded into the conv, weights stored as int8, activations as
   quantize / dequantize pairs (``quantized_decomposed`` ops);
6. ``torch.onnx.export(..., dynamo=True)`` (needs ``onnxscript``, whose torchlib maps
   ``quantized_decomposed`` ops to QuantizeLinear / DequantizeLinear), input ``image`` uint8
   ``[batch, H, W, 3]`` with a dynamic ``batch`` axis, output ``logits`` float32 (the contract of
   ``export.py``). The TorchScript exporter (``dynamo=False``, what ``export.py`` uses) fails:
   UnsupportedOperatorError on ``quantized_decomposed::dequantize_per_channel``. A 1 x 1
   ``adaptive_avg_pool2d`` is translated to GlobalAveragePool (see ``_translations``);
7. parity: converted torch model vs onnxruntime (CPU EP) on ``parity_images``; ParityError below
   99 % argmax agreement.

Quantizer: torchao's ``X86InductorQuantizer`` (``torchao.quantization.pt2e.quantizer``) with a
QuantizationConfig built here. It is torchao's public, maintained quantizer for CPUs and knows the
QAT conv-bn(-relu) patterns, conv / linear, pooling and add; the XNNPACKQuantizer copy in torchao
(``torchao.testing.pt2e``) is deprecated testing code (moved to executorch). Its default config is
uint8 activations and int8 per-channel weights [-128, 127]; ours: activations ``uint8`` [0, 255] or
``int8`` [-128, 127], per-tensor affine (FusedMovingAvgObsFakeQuantize); weights int8 symmetric,
per output channel (``per_channel``) or per tensor. ``reduce_range`` maps to 7-bit weights: the
weight QuantizationSpec gets ``quant_min=-64, quant_max=63`` (else [-127, 127]), so the int8
initialisers of the ONNX file hold 7-bit values (u8 x s8 products then cannot saturate the int16
pair sums of x86 VPMADDUBSW kernels without VNNI, as onnxruntime's reduce_range intends).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, ParityError
from .export import INPUT_NAME, OUTPUT_NAME
from .losses import LOSSES
from .training import param_groups

MIN_AGREEMENT = 0.99  # argmax agreement of onnxruntime with the converted torch model
QUANTIZER = "X86InductorQuantizer"


def available() -> bool:
    """Whether torchao (and its PT2E QAT flow) can be imported."""
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not available():
        raise ConfigError("quantize.qat needs torchao: pip install -e '.[qat]'")
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter)
    except ImportError:
        raise ConfigError("quantize.qat exports with torch.onnx's dynamo exporter, which needs "
                          "onnxscript: pip install -e '.[qat]'") from None


def quantization_config(activation_type: str = "uint8", reduce_range: bool = True,
                        per_channel: bool = True):
    """The torchao QuantizationConfig of the QAT run (see the module docstring)."""
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec

    if activation_type not in ("uint8", "int8"):
        raise ConfigError(f"QAT activation type must be 'uint8' or 'int8', not {activation_type!r}")
    eps = {"eps": 2 ** -12}
    a_min, a_max = (0, 255) if activation_type == "uint8" else (-128, 127)
    act = QuantizationSpec(dtype=getattr(torch, activation_type), quant_min=a_min, quant_max=a_max,
                           qscheme=torch.per_tensor_affine,
                           observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(**eps))
    w_min, w_max = (-64, 63) if reduce_range else (-127, 127)
    observer = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
    weight = QuantizationSpec(
        dtype=torch.int8, quant_min=w_min, quant_max=w_max,
        qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        ch_axis=0 if per_channel else None,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(observer=observer, **eps))
    return QuantizationConfig(act, act, weight, None, is_qat=True)


@contextlib.contextmanager
def _fold_only_present_convs(m) -> Iterator[None]:
    """Speed-up of ``convert_pt2e``: its conv-bn folding exports 24 pattern graphs for each of
    conv1d, conv2d, conv_transpose1d and conv_transpose2d (~6 s each on 2 cores, torchao 0.18);
    conv kinds absent from ``m`` cannot match, so their pass is skipped (a no-op where torchao's
    private helper is missing or renamed)."""
    from torchao.quantization.pt2e import qat_utils

    helper = getattr(qat_utils, "_fold_conv_bn_qat_helper", None)
    present = {str(n.target).split(".")[1] for n in m.graph.nodes
               if n.op == "call_function" and str(n.target).startswith("aten.")}
    kinds = {"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}
    if helper is None or not (present & kinds):
        yield
        return

    def fold(gm, conv_fn, *args, **kwargs):
        if getattr(conv_fn, "__name__", None) in kinds - present:
            return gm
        return helper(gm, conv_fn, *args, **kwargs)

    qat_utils._fold_conv_bn_qat_helper = fold
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = helper


def _translations(q) -> dict:
    """torch.onnx decomposes ``adaptive_avg_pool2d`` (no torchlib entry) into ReduceMean +
    as_strided (Range / Gather) that onnxruntime cannot fuse; where every one in ``q`` pools to
    1 x 1 it is exported as GlobalAveragePool (fused with its Q/DQ into QLinearGlobalAveragePool)."""
    op = torch.ops.aten.adaptive_avg_pool2d.default
    sizes = [tuple(n.args[1]) for n in q.graph.nodes if n.op == "call_function" and n.target == op]
    if not sizes or any(s != (1, 1) for s in sizes):
        return {}
    from onnxscript import opset18

    def global_average_pool(x, output_size):
        return opset18.GlobalAveragePool(x)

    return {op: global_average_pool}


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    # as distill._batches; a last batch of one image is dropped (batch-norm statistics of one
    # image, and torch.export's size-1 specialisation of the dynamic batch axis)
    return [b for b in torch.randperm(n, generator=gen).split(batch_size) if len(b) > 1]


def _predict(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with torch.no_grad():
        out = [model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))).float()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def qat_finetune(student, train_x: np.ndarray, train_y: np.ndarray,
                 teacher_logits: np.ndarray | None, calib_x: np.ndarray, distill_cfg, *,
                 epochs: int, lr: float, activation_type: str = "uint8", reduce_range: bool = True,
                 per_channel: bool = True, batch_size: int = 64, seed: int = 0,
                 out_path: Path, parity_images: np.ndarray) -> dict:
    """QAT-fine-tune a copy of ``student`` and write it to ``out_path`` as an ONNX QDQ model;
    returns the JSON-able record (see the module docstring for the flow)."""
    _require()
    if len(train_x) != len(train_y) or (teacher_logits is not None and len(teacher_logits) != len(train_x)):
        raise ValueError("train_x, train_y and teacher_logits must have one row per training image")
    if len(train_x) < 2 or len(parity_images) == 0:
        raise ValueError("QAT needs at least two training images and one parity image")
    qconfig = quantization_config(activation_type, reduce_range, per_channel)
    out_path = Path(out_path)
    with torch.random.fork_rng(devices=[]):  # seeded (dropout), the caller's global RNG untouched
        torch.manual_seed(seed)
        return _qat(student, train_x, train_y, teacher_logits, calib_x, distill_cfg, epochs, lr,
                    activation_type, reduce_range, per_channel, batch_size, seed, out_path,
                    parity_images, qconfig)


def _qat(student, train_x, train_y, teacher_logits, calib_x, distill_cfg, epochs, lr, activation_type,
         reduce_range, per_channel, batch_size, seed, out_path, parity_images, qconfig) -> dict:
    import torchao
    from torchao.quantization.pt2e import (
        disable_fake_quant,
        enable_fake_quant,
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    start = time.perf_counter()
    model = copy.deepcopy(student).cpu().train()
    example = torch.from_numpy(np.ascontiguousarray(train_x[:2]))
    dims = ({0: torch.export.Dim("batch")},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's and torch.export's deprecation notices
        m = torch.export.export(model, (example,), dynamic_shapes=dims).module()
        m = prepare_qat_pt2e(m, X86InductorQuantizer().set_global(qconfig))

    # range initialisation: fp32 activation ranges of the calibration images
    move_exported_model_to_eval(m)
    m.apply(disable_fake_quant)
    if len(calib_x):
        _predict(m, calib_x, batch_size=max(2, batch_size))
    m.apply(enable_fake_quant)

    loss_name = "ce" if teacher_logits is None else "hinton"
    loss_fn = LOSSES.get(loss_name)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(np.asarray(train_y)).long()
    t = None if teacher_logits is None else torch.from_numpy(np.asarray(teacher_logits, np.float32))
    steps_per_epoch = len(_batches(len(x), batch_size, torch.Generator().manual_seed(seed)))
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.SGD(param_groups(list(m.named_parameters()), distill_cfg.weight_decay), lr=lr,
                          momentum=distill_cfg.momentum,
                          nesterov=bool(distill_cfg.nesterov and distill_cfg.momentum > 0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    move_exported_model_to_train(m)
    steps, log = 0, []
    for epoch in range(epochs):
        loss_sum, seen = 0.0, 0
        for idx in _batches(len(x), batch_size, gen):
            out = m(x[idx])
            loss = loss_fn(out, None if t is None else t[idx], y[idx], distill_cfg)
            if not torch.isfinite(loss):
                raise ConfigError(f"QAT diverged at step {steps + 1} (loss {float(loss)}); lower the QAT "
                                  f"learning rate {lr:g} (fine-tuning rates are ~1e-3 with SGD)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        log.append({"epoch": epoch + 1, "loss": loss_sum / max(1, seen)})
    move_exported_model_to_eval(m)
    train_s = time.perf_counter() - start

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_start = time.perf_counter()
        with _fold_only_present_convs(m):
            q = convert_pt2e(m)
        move_exported_model_to_eval(q)
        torch.nn.Module.train(q, False)  # the flag only: torch.onnx warns about train mode
        torch.onnx.export(q, (example,), str(out_path), dynamo=True, verbose=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},),
                          custom_translation_table=_translations(q))
    export_s = time.perf_counter() - export_start
    import onnx

    onnx.checker.check_model(str(out_path))
    proto = onnx.load(str(out_path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)

    from .runtimes import OrtRunner

    ref = _predict(q, parity_images)
    got = OrtRunner(out_path).predict(np.ascontiguousarray(parity_images))
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    parity = {"samples": int(len(parity_images)), "max_abs_logit_diff": float(np.abs(ref - got).max()),
              "argmax_agreement": agree, "min_agreement": MIN_AGREEMENT,
              "reference": "converted torch model (convert_pt2e)"}
    if agree < MIN_AGREEMENT:
        raise ParityError(f"{out_path.name} does not reproduce the QAT-converted torch model: argmax "
                          f"agreement {agree:.4f} (needed {MIN_AGREEMENT}) and max |logit diff| "
                          f"{parity['max_abs_logit_diff']:.3g} on {len(parity_images)} held-out images")
    w_range = "7-bit [-64, 63]" if reduce_range else "8-bit [-127, 127]"
    a_range = "[0, 255]" if activation_type == "uint8" else "[-128, 127]"
    return {"method": "qat", "framework": f"torchao {torchao.__version__} PT2E",
            "quantizer": f"{QUANTIZER} (custom QuantizationConfig)", "loss": loss_name,
            "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "steps": steps,
            "schedule": "cosine (per step, no warm-up)", "optimizer": "sgd",
            "calibration_images": int(len(calib_x)),
            "activations": f"{activation_type} per-tensor affine {a_range}",
            "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'} symmetric, {w_range}",
            "log": log, "path": out_path.name, "exporter": "torch.onnx (dynamo)", "opset": opset,
            "qdq_nodes": qdq, "input": INPUT_NAME, "output": OUTPUT_NAME, "parity": parity,
            "train_s": round(train_s, 3), "convert_export_s": round(export_s, 3)}
