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

Reproducibility: onnxruntime writes the ``.ort`` file's kernel-type-string table (the operator
table, ``KernelTypeStrResolver``) by walking a C++ hash map (``absl::flat_hash_map``, whose hash
seed is the address of a global, so it moves with address-space layout randomisation) and only
then sorts the table's offsets: the table's entries are the same and in the same order on every
run, but they sit at different places in the file, so two conversions of one ``.onnx`` differ in
a few hundred bytes (with randomisation turned off, ``setarch -R``, they are identical).
:func:`canonical_ort` rewrites that table in its sorted order, so the same ``.onnx`` always gives
the same ``.ort`` bytes; the rest of the file (the model) is kept byte for byte.
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
            raw = ort_tmp.read_bytes()
            canonical = canonical_ort(raw)
            ort_tmp.write_bytes(canonical)
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
            "operators": ops, "size_bytes": dest["ort"].stat().st_size, "parity": parity,
            # False only if a future onnxruntime lays the file out in a way canonical_ort does not
            # know: then two identical builds may give .ort files that differ in layout
            "byte_reproducible": canonical is not raw}


def canonical_ort(data: bytes) -> bytes:
    """The same ORT-format model with its operator table (``KernelTypeStrResolver``) written in one
    fixed order (see the module notes); ``data`` itself when it is not laid out as onnxruntime
    1.32 writes it (root table, then that table, then the model).

    A FlatBuffer is written back to front, so the model, written first, is the file's tail, and
    the operator table and the root table, written after it, are its head. The tail is kept as it
    is and a new head is built in front of it with the ``flatbuffers`` package (a dependency of
    onnxruntime): the table's entries in their (sorted) order, each created in that order."""
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        ArgTypeAndIndex,
        InferenceSession,
        KernelTypeStrArgsEntry,
        KernelTypeStrResolver,
        OpIdKernelTypeStrArgsEntry,
    )

    buf = bytearray(data)
    if len(buf) < 8 or not InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        return data
    session = InferenceSession.InferenceSession.GetRootAs(buf, 0)
    model, resolver = session.Model(), session.KernelTypeStrResolver()
    # the root table's fields: ort_version (vtable slot 4), model (6), a deprecated session state
    # (8) that onnxruntime no longer writes, kernel_type_str_resolver (10)
    if model is None or resolver is None or session._tab.Offset(8) or session._tab.Offset(12):
        return data
    model_pos = model._tab.Pos
    model_vtable = model_pos - flatbuffers.encode.Get(flatbuffers.packer.soffset, buf, model_pos)
    tail_start = min(model_pos, model_vtable)  # the model table and everything it points to
    table = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op = resolver.OpKernelTypeStrArgs(i)
        entries = []
        for j in range(op.KernelTypeStrArgsLength()):
            entry = op.KernelTypeStrArgs(j)
            args = [(entry.Args(k).ArgType(), entry.Args(k).Index()) for k in range(entry.ArgsLength())]
            entries.append((entry.KernelTypeStr(), args))
        table.append((op.OpId(), entries))
    version = session.OrtVersion()

    tail = data[tail_start:]
    b = flatbuffers.Builder(len(tail))
    b.Bytes[:] = tail  # start from the tail, as if this builder had just written it
    b.head = 0
    b.minalign = 8  # the tail holds 8-byte scalars; keep the file's length a multiple of 8

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    ops = []
    for op_id, entries in table:
        entry_offsets = []
        for type_str, args in entries:
            arg_offsets = []
            for arg_type, index in args:
                ArgTypeAndIndex.Start(b)
                ArgTypeAndIndex.AddArgType(b, arg_type)
                ArgTypeAndIndex.AddIndex(b, index)
                arg_offsets.append(ArgTypeAndIndex.End(b))
            args_vector = vector(arg_offsets)
            type_str_offset = b.CreateString(type_str)
            KernelTypeStrArgsEntry.Start(b)
            KernelTypeStrArgsEntry.AddKernelTypeStr(b, type_str_offset)
            KernelTypeStrArgsEntry.AddArgs(b, args_vector)
            entry_offsets.append(KernelTypeStrArgsEntry.End(b))
        entries_vector = vector(entry_offsets)
        op_id_offset = b.CreateString(op_id)
        OpIdKernelTypeStrArgsEntry.Start(b)
        OpIdKernelTypeStrArgsEntry.AddOpId(b, op_id_offset)
        OpIdKernelTypeStrArgsEntry.AddKernelTypeStrArgs(b, entries_vector)
        ops.append(OpIdKernelTypeStrArgsEntry.End(b))
    ops_vector = vector(ops)
    KernelTypeStrResolver.Start(b)
    KernelTypeStrResolver.AddOpKernelTypeStrArgs(b, ops_vector)
    resolver_offset = KernelTypeStrResolver.End(b)
    version_offset = b.CreateString(version) if version is not None else None
    InferenceSession.Start(b)
    if version_offset is not None:
        InferenceSession.AddOrtVersion(b, version_offset)
    InferenceSession.AddModel(b, len(tail) - (model_pos - tail_start))  # offsets count from the end
    InferenceSession.AddKernelTypeStrResolver(b, resolver_offset)
    b.Finish(InferenceSession.End(b), file_identifier=b"ORTM")
    return bytes(b.Output())


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
