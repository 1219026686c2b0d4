"""Robustness-aware post-training quantisation: when an INT8 (QDQ) model loses more than its
tolerance against the fp32 model, on clean or on perturbed images, keep the fewest sensitive
nodes in float (onnxruntime's ``nodes_to_exclude``) until the tolerance holds.

    def quantize(nodes, out):      # one recipe, only the excluded nodes change between trials
        return quantize_model(fp32, out, calib, cfg.quantize, nodes_to_exclude=nodes, calib_cache=cache)

    def drops(path):               # accuracy lost against the fp32 model, clean and perturbed
        ...
        return {"clean_drop": c, "perturbed_drop": p, "passed": c <= tol_c and p <= tol_p}

    res = search(fp32, quantize, drops, perturbed_val_images, work / "search", max_nodes=6)
    res.passed, res.nodes, res.path     # path: the model with res.nodes in float (None: nodes == [])
    json.dumps(res.to_dict())           # ranking and every trial with its drops

Search. The plain QDQ model is evaluated first; if it passes, that is all. Otherwise the nodes
QDQ wrapped (of an op type ``quantize_static`` quantises, with a quantised weight or output: Conv,
Gemm, MatMul, Add, pooling, ...; named as in the ``quant_pre_process``-ed graph, BN folded, which
is what ``nodes_to_exclude`` matches) are ranked; the first 1, 2, ... ``max_nodes`` of the ranking
are kept in float until ``drops`` passes, then each of those is put back into INT8 in turn (least
sensitive first) and stays INT8 if the tolerance still holds: the fewest the search finds. Each
node set is quantised and evaluated once (``trials``); trial models are written in ``work_dir``
and all but the returned one deleted. When ``max_nodes`` nodes do not suffice, ``passed`` is
False and ``nodes`` / ``path`` are the trial's with the lowest clean + perturbed drop.

Ranking, after onnxruntime's ``onnxruntime/quantization/qdq_loss_debug.py``: the pre-processed
fp32 model and the plain QDQ model get every float tensor as an output
(``modify_model_output_intermediate_tensors``) and run on ``rank_images`` (perturbed validation
images: where robustness is lost); tensors are paired as ``create_activation_matching`` pairs them
and compared by its cross-model error (``xmodel_err``: SQNR, dB, of the fp32 activation against
the dequantised QDQ one, ``compute_signal_to_quantization_noice_ratio``; here its sums of squares
are accumulated over batches, so no activation is held for all images). Not by ``qdq_err`` (a
tensor before vs after its own Q/DQ pair): where QDQ removes a ReLU, the tensor before the pair
is the Conv's raw output, and the "error" is the ReLU's. The cross-model error accumulates
downstream (the last nodes always look worst), so a node's score is the SQNR it *loses*: the
lowest xmodel SQNR of its activation inputs minus that of its output, both capped at
``PERFECT_DB`` (a graph input, or a tensor closer to fp32 than 8 bits can be, is perfect). A node
whose clean-calibrated range clips what perturbed images drive through it loses nearly all
(output ~0 dB), where the nodes of an (untrained) digits student lose at most ~9 dB.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the best an 8-bit tensor gets (a full-range uniform signal: 6.02 * 8 + 1.76 = 49.9 dB); a tensor
# closer to fp32 is unquantised or on its quantisation grid: exact, as far as ranking goes
PERFECT_DB = 50.0
_SAVED = "_ReshapedSavedOutput"  # qdq_loss_debug's suffix of the added outputs
_Q, _DQ = "QuantizeLinear", "DequantizeLinear"
_Q_INPUT = "_QuantizeLinear_Input"  # a graph output's tensor before its Q/DQ pair


@dataclass
class SearchResult:
    passed: bool                  # the tolerance holds with `nodes`
    nodes: list[str]              # nodes kept in float (fewest found), [] when nothing breaks
    path: Path | None             # the model with those nodes excluded (None when nodes == [])
    ranking: list[dict] = field(default_factory=list)  # most sensitive first
    trials: list[dict] = field(default_factory=list)   # every model tried, in order

    def to_dict(self) -> dict:
        """A JSON-able record (``path`` as the file name)."""
        return {"passed": self.passed, "nodes": list(self.nodes),
                "path": None if self.path is None else self.path.name,
                "ranking": [dict(r) for r in self.ranking], "trials": [dict(t) for t in self.trials]}


def search(fp32_path: Path, quantize: Callable[[list[str], Path], dict],
           drops: Callable[[Path], dict], rank_images: np.ndarray, work_dir: Path,
           max_nodes: int = 6, input_name: str = "image") -> SearchResult:
    """The fewest nodes to keep in float for ``drops`` to pass (see the module docstring).

    ``quantize(nodes_to_exclude, out_path)`` writes a QDQ model; ``drops(model_path)`` returns
    ``{"clean_drop", "perturbed_drop", "passed"}``; ``rank_images`` are uint8 images fed to
    ``input_name`` to rank the nodes."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    trials: list[dict] = []
    files: dict[frozenset, Path] = {}

    def trial(nodes: list[str]) -> dict:
        key = frozenset(nodes)
        for t in trials:
            if frozenset(t["nodes"]) == key:
                return t
        path = work_dir / f"sensitivity-trial{len(trials):02d}.onnx"
        quantize(list(nodes), path)
        d = drops(path)
        t = {"nodes": list(nodes), "clean_drop": float(d["clean_drop"]),
             "perturbed_drop": float(d["perturbed_drop"]), "passed": bool(d["passed"])}
        trials.append(t)
        files[key] = path
        return t

    if trial([])["passed"]:
        return _finish(True, [], [], trials, files)
    ranking = rank_nodes(Path(fp32_path), files[frozenset()], rank_images, input_name)
    order = [r["node"] for r in ranking]
    chosen: list[str] | None = None
    for k in range(1, min(max_nodes, len(order)) + 1):
        if trial(order[:k])["passed"]:
            chosen = order[:k]
            break
    if chosen is None:
        best = min(trials, key=lambda t: (t["clean_drop"] + t["perturbed_drop"], len(t["nodes"])))
        return _finish(False, best["nodes"], ranking, trials, files)
    for node in reversed(list(chosen)):  # prune: the least sensitive first
        fewer = [n for n in chosen if n != node]
        if trial(fewer)["passed"]:
            chosen = fewer
    return _finish(True, chosen, ranking, trials, files)


def _finish(passed: bool, nodes: list[str], ranking: list[dict], trials: list[dict],
            files: dict[frozenset, Path]) -> SearchResult:
    """The result; deletes the trial models but the returned one."""
    keep = files.get(frozenset(nodes)) if nodes else None
    for p in files.values():
        if p != keep:
            p.unlink(missing_ok=True)
    return SearchResult(passed, list(nodes), keep, ranking, trials)


def rank_nodes(fp32_path: Path, qdq_path: Path, images: np.ndarray, input_name: str = "image",
               batch: int = 32) -> list[dict]:
    """The quantised nodes of ``qdq_path``, most sensitive first: ``{"node", "op_type", "score"
    (xmodel SQNR lost, dB), "input_sqnr", "xmodel_sqnr" (of its output, dB)}``."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre, fp_aug, q_aug = (Path(tmp) / n for n in ("pre.onnx", "fp32.aug.onnx", "qdq.aug.onnx"))
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)  # as quantize_model
        modify_model_output_intermediate_tensors(str(pre), str(fp_aug))
        modify_model_output_intermediate_tensors(str(qdq_path), str(q_aug))
        sqnr = tensor_sqnr(fp_aug, q_aug, images, input_name, batch)
    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    quantizable = set(QLinearOpsRegistry) | set(QDQRegistry)  # quantize_static's default op types
    quantized_out = {n.input[0] for n in graph.node if n.op_type == _Q}
    ranking = []
    for node in graph.node:
        if node.op_type not in quantizable or not node.name:
            continue
        reads_weight = any(i in producer and producer[i].op_type == _DQ and producer[i].input[0] in weights
                           for i in node.input)
        if not (reads_weight or any(o in quantized_out for o in node.output)):
            continue  # not wrapped by QDQ: excluding it would change nothing
        acts = [s for s in (_source(i, producer, weights) for i in node.input if i) if s is not None]
        sqnr_in = min((sqnr.get(s, PERFECT_DB) for s in acts), default=PERFECT_DB)
        sqnr_out = min((sqnr.get(o.removesuffix(_Q_INPUT), PERFECT_DB) for o in node.output),
                       default=PERFECT_DB)
        ranking.append({"node": node.name, "op_type": node.op_type, "score": round(sqnr_in - sqnr_out, 4),
                        "input_sqnr": round(sqnr_in, 4), "xmodel_sqnr": round(sqnr_out, 4)})
    return sorted(ranking, key=lambda r: -r["score"])  # stable: graph order among equals


def _source(name: str, producer: dict, weights: set[str]) -> str | None:
    """The fp32 tensor an input of a QDQ-model node stands for (None for weights)."""
    if name in weights:
        return None
    p = producer.get(name)
    if p is not None and p.op_type == _DQ:
        src = p.input[0]
        if src in weights:
            return None  # a quantised weight or bias
        q = producer.get(src)
        src = q.input[0] if q is not None and q.op_type == _Q else src
        return src.removesuffix(_Q_INPUT)
    return name


def tensor_sqnr(fp32_aug: Path, qdq_aug: Path, images: np.ndarray, input_name: str = "image",
                batch: int = 32) -> dict[str, float]:
    """Cross-model SQNR (dB, capped at +-``PERFECT_DB``) of every fp32 tensor against what the QDQ
    model's consumers of it see: its dequantised value where it is quantised, else the tensor."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as collect_activations
    sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in (fp32_aug, qdq_aug)]
    names = [[o.name for o in s.get_outputs()] for s in sessions]
    sig: dict[str, float] = {}
    err: dict[str, float] = {}
    for i in range(0, len(images), batch):
        feed = {input_name: np.ascontiguousarray(images[i:i + batch])}
        fp, q = ({n.removesuffix(_SAVED): v for n, v in zip(ns, s.run(ns, feed)) if n.endswith(_SAVED)}
                 for s, ns in zip(sessions, names))
        match = create_activation_matching({k: [v] for k, v in q.items()}, {k: [v] for k, v in fp.items()})
        pairs = {k: (m["float"][0], m["post_qdq"][0]) for k, m in match.items() if "float" in m}
        pairs.update({k: (v, q[k]) for k, v in fp.items() if k in q and k not in pairs and k not in match})
        for k, (a, b) in pairs.items():
            if a.shape != b.shape:
                continue
            a, b = a.astype(np.float64), b.astype(np.float64)
            sig[k] = sig.get(k, 0.0) + float(np.dot(a, a))
            err[k] = err.get(k, 0.0) + float(np.dot(a - b, a - b))
    return {k: _db(sig[k], err[k]) for k in sig}


def _db(signal: float, noise: float) -> float:
    if noise <= signal * 10 ** (-PERFECT_DB / 10):
        return PERFECT_DB
    if signal <= 0.0:
        return -PERFECT_DB
    return max(-PERFECT_DB, 10 * math.log10(signal / noise))
