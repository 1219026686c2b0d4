"""torch -> ExecuTorch programs (``.pte``) for the XNNPACK CPU backend, fp32 and INT8.

    rec = export_pte(student, calib_images, Path("student.fp32.pte"), "fp32", max_batch=32)
    rec = export_pte(student, calib_images, Path("student.int8.pte"), "int8", max_batch=32)
    rec["delegation"]    # -> {"delegated_nodes": 37, "non_delegated_nodes": 5, "fraction": 0.88, ...}

The program keeps the build's input contract: a uint8 NHWC image batch in, float32 logits out,
normalisation inside (``models.Preprocessed``). The batch axis is dynamic up to ``max_batch`` (the
memory ExecuTorch plans is sized for it; a runner splits longer batches).

fp32: ``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])``
-> ``to_executorch()``. INT8: torchao's PT2E flow with XNNPACK's quantizer (``XNNPACKQuantizer`` with
``get_symmetric_quantization_config(is_per_channel=True)``: int8 per-channel symmetric weights,
int8 per-tensor activations), calibrated on the calibration images, then lowered the same way.

Every compute operator must land in the XNNPACK delegate: one that does not would run in
ExecuTorch's portable (reference) kernels, far slower and not what the user measures on the device,
so the export fails with one sentence naming it (:class:`DelegationError`). Only the layout and
dtype glue around the delegate (:data:`GLUE_OPS`: the uint8 -> float cast and NHWC permute of the
input, the flatten before the classifier) may stay outside; the record says how much of the graph
XNNPACK took (ExecuTorch's ``get_delegation_info``).

ExecuTorch is the optional extra ``[executorch]`` (:func:`available`; without it the build skips
these artifacts with one line, :data:`INSTALL`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import EdgekdError, ParityError

INSTALL = "pip install -e '.[executorch]'"
# operators allowed outside the XNNPACK delegate (ExecuTorch's names, digits suffix dropped): data
# movement and dtype conversion, no arithmetic
GLUE_OPS = frozenset({
    "aten_permute_copy_default", "aten_view_copy_default", "aten_as_strided_copy_default",
    "aten_squeeze_copy_dims", "aten_squeeze_copy_dim", "aten_unsqueeze_copy_default",
    "aten_expand_copy_default", "aten_clone_default", "dim_order_ops__to_dim_order_copy_default",
    "dim_order_ops__clone_dim_order_default", "getitem", "sym_size"})
_NOT_COUNTED = frozenset({"getitem", "sym_size"})  # bookkeeping nodes, not operators


class DelegationError(EdgekdError):
    """A compute operator of the student falls outside the XNNPACK delegate (exit 3)."""

    exit_code = 3


def available() -> bool:
    """Whether the ``[executorch]`` extra (executorch with its XNNPACK backend) is installed."""
    try:
        with _quiet():
            import executorch.backends.xnnpack.partition.xnnpack_partitioner  # noqa: F401
            import executorch.exir  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ExecuTorch's and torchao's import-time and export-time notices stay off the build's output."""
    logs = [logging.getLogger(n) for n in ("torch.utils._pytree", "torch._export", "executorch", "root")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _exported(model: torch.nn.Module, example: torch.Tensor, max_batch: int):
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)


def _example(images: np.ndarray, max_batch: int) -> torch.Tensor:
    """An input of ``max_batch`` images (the calibration images repeated where there are fewer):
    the shape ExecuTorch plans its memory for."""
    idx = np.arange(max_batch) % len(images)
    return torch.from_numpy(np.ascontiguousarray(images[idx]))


def _quantized(model: torch.nn.Module, calib: np.ndarray, max_batch: int) -> torch.nn.Module:
    """``model`` through torchao's PT2E INT8 flow with XNNPACK's quantizer, calibrated on ``calib``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_exported(model, _example(calib, max_batch), max_batch).module(), quantizer)
    with torch.no_grad():
        for i in range(0, len(calib), max_batch):
            prepared(torch.from_numpy(np.ascontiguousarray(calib[i:i + max_batch])))
    return convert_pt2e(prepared)


def delegation(graph_module) -> dict:
    """How much of the lowered graph XNNPACK took: node counts in and outside the delegate
    (bookkeeping nodes not counted), the share delegated, and the operators outside it."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    outside: dict[str, int] = {}
    inside = 0
    for op, d in info.delegation_by_operator.items():
        op = re.sub(r"_[\d]+$", "", op)
        if op in _NOT_COUNTED:
            continue
        inside += d.delegated
        if d.non_delegated:
            outside[op] = outside.get(op, 0) + d.non_delegated
    n_out = sum(outside.values())
    return {"backend": "XnnpackBackend", "subgraphs": int(info.num_delegated_subgraphs),
            "delegated_nodes": inside, "non_delegated_nodes": n_out,
            "fraction": round(inside / max(1, inside + n_out), 4),
            "outside": dict(sorted(outside.items())),
            "compute_outside": sorted(op for op in outside if op not in GLUE_OPS)}


def export_pte(model: torch.nn.Module, calib: np.ndarray, path: Path, precision: str, max_batch: int) -> dict:
    """Write ``path`` (an XNNPACK-delegated ExecuTorch program of ``model`` at ``precision``,
    "fp32" or "int8" calibrated on ``calib``); returns its record. A compute operator outside
    the delegate raises :class:`DelegationError`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = model.cpu().eval()
    t0 = time.perf_counter()
    with _quiet():
        if precision == "int8":
            model = _quantized(model, calib, max_batch)
        edge = to_edge_transform_and_lower(_exported(model, _example(calib, max_batch), max_batch),
                                           partitioner=[XnnpackPartitioner()])
        deleg = delegation(edge.exported_program().graph_module)
        if deleg["compute_outside"]:
            ops = ", ".join(f"{op} x{deleg['outside'][op]}" for op in deleg["compute_outside"])
            raise DelegationError(
                f"{path.name}: XNNPACK does not take {ops} of the student (they would run in "
                f"ExecuTorch's slow portable kernels); use a student built from convolutions, "
                f"pooling, linear layers and ReLU, or drop executorch from export.runtimes")
        program = edge.to_executorch()
    path.write_bytes(program.buffer)
    quant = ({"scheme": "XNNPACKQuantizer symmetric: int8 per-channel weights, int8 per-tensor activations",
              "calib_images": int(len(calib))} if precision == "int8" else None)
    return {"path": path.name, "precision": precision, "format": "pte", "backend": "XnnpackBackend",
            "exporter": "torch.export + executorch.exir.to_edge_transform_and_lower",
            "max_batch": max_batch, "size_bytes": path.stat().st_size, "delegation": deleg,
            "quantization": quant, "export_s": round(time.perf_counter() - t0, 3)}


def check_pte(model: torch.nn.Module, path: Path, images: np.ndarray, precision: str, atol: float,
              min_agreement: float) -> dict:
    """The program against the torch student on held-out ``images``: fp32 must match the logits
    within ``atol`` and every predicted class; INT8 must agree on at least ``min_agreement`` of
    the classes. Raises :class:`ParityError` otherwise."""
    from .runtimes import PteRunner

    with torch.no_grad():
        ref = model.cpu().eval()(torch.from_numpy(images)).numpy()
    got = PteRunner(path).predict(images)
    max_abs = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    rec = {"samples": len(images), "max_abs_logit_diff": max_abs, "argmax_agreement": agree}
    if precision == "fp32":
        rec["atol"] = atol
        ok = max_abs <= atol and agree == 1.0
        want = f"max |logit diff| {max_abs:.3g} (allowed {atol:g}), argmax agreement {agree:.4f}"
    else:
        rec["min_agreement"] = min_agreement
        ok = agree >= min_agreement
        want = f"argmax agreement {agree:.4f} (at least {min_agreement:g} needed)"
    if not ok:
        raise ParityError(f"{path.name} does not reproduce the torch student: {want} on {len(images)} "
                          "held-out images")
    return rec


def executorch_stage(student: torch.nn.Module, calib: np.ndarray, files: dict[str, Path], ec) -> dict:
    """Every ExecuTorch artifact of a build: ``files`` maps a precision to its path; ``ec`` is the
    [export] config (parity samples and tolerances, max batch). Returns ``{precision: record}``
    with each program's parity check."""
    held_out = calib[:ec.parity_samples]
    out = {}
    for precision, path in files.items():
        rec = export_pte(student, calib, path, precision, ec.pte_max_batch)
        rec["parity"] = check_pte(student, path, held_out, precision, ec.parity_atol, ec.pte_int8_min_agreement)
        out[precision] = rec
    return out
