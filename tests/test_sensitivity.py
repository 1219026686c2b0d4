"""The robustness-aware PTQ search (edgekd.sensitivity) on constructed models, with the real
quantiser (quantize_model, default U8S8 static recipe) and real accuracy measurements.

The models classify digits by nearest class mean (a fixed Gemm on the pixels) and carry a "noise
trap": the digits are grey (R = G = B exactly), so a 1x1 Conv computing ``boost * (R - G)`` is
exactly 0 on every clean image and large under Gaussian noise (drawn per channel). Its mean
absolute value is subtracted from class 0's logit and the same quantity, computed by a twin Conv,
added back (through Abs / ReduceMean / Sub / Neg, which QDQ leaves in float), so the fp32 model is
the nearest-mean classifier itself. The twin has two constant output channels (+-``WIDE``) that give it a wide
calibrated range; the trap's range, calibrated on clean images, is 0, so INT8 zeroes it and, on
noisy images, class 0 gets the twin's value: perturbed accuracy collapses, clean accuracy does not.
"""

from __future__ import annotations

import json

import pytest
import torch

from edgekd import perturb
from edgekd.config import QuantizeConfig
from edgekd.export import export_onnx
from edgekd.quantize import quantize_model
from edgekd.runtimes import OrtRunner
from edgekd.sensitivity import SearchResult, rank_nodes, search

TOL = 0.03
WIDE = 64.0


class TrapNet(torch.nn.Module):
    """Nearest-class-mean logits + sum over traps of (|trap conv| - |twin channel|) on one class."""

    def __init__(self, train, traps: dict[str, tuple[int, float, float]]) -> None:
        # traps: name -> (class it boosts, boost, weight on B: > 0 gives a small clean range)
        super().__init__()
        x = torch.from_numpy(train.x).permute(0, 3, 1, 2).float().flatten(1) / 255
        y = torch.from_numpy(train.y)
        mu = torch.stack([x[y == k].mean(0) for k in range(10)])
        self.fc = torch.nn.Linear(x.shape[1], 10)
        self.traps = torch.nn.ModuleDict({n: torch.nn.Conv2d(3, 10, 1) for n in traps})
        self.twin = torch.nn.Conv2d(3, 12, 1)
        with torch.no_grad():
            self.fc.weight.copy_(mu * 0.05)
            self.fc.bias.copy_(-(mu * mu).sum(1) * 0.025)
            self.twin.weight.zero_()
            self.twin.bias.zero_()
            self.twin.bias[10], self.twin.bias[11] = WIDE, -WIDE
            for name, (cls, boost, blue) in traps.items():
                conv = self.traps[name]
                conv.weight.zero_()
                conv.bias.zero_()
                for c in (conv, self.twin):
                    c.weight[cls, :, 0, 0] = torch.tensor([boost, -boost, blue])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255
        out = self.fc(x.flatten(1))
        for conv in self.traps.values():  # Sub and Neg, not Add: QDQ would quantise an Add's inputs
            out = out - conv(x).abs().mean((2, 3))
        return out - -self.twin(x).abs().mean((2, 3))[:, :10]


@pytest.fixture(scope="module")
def sets(digits):
    val = digits.val
    return val.x, val.y, perturb.apply("gaussian_noise", val.x, 3, seed=0)


def build(digits, tmp_path, traps):
    path = tmp_path / "fp32.onnx"
    export_onnx(TrapNet(digits.train, traps).eval(), digits.calib.x, path, opset=17)
    return path


def accuracy(path, x, y) -> float:
    return float((OrtRunner(path).predict(x).argmax(1) == y).mean())


def harness(fp32, calib, sets, cache):
    """The two callbacks of search(): the real quantiser and accuracy drops against fp32."""
    x, y, noisy = sets
    ref_clean, ref_noisy = accuracy(fp32, x, y), accuracy(fp32, noisy, y)

    def quantize(nodes, out):
        return quantize_model(fp32, out, calib, QuantizeConfig(), nodes_to_exclude=nodes, calib_cache=cache)

    def drops(path):
        c, p = ref_clean - accuracy(path, x, y), ref_noisy - accuracy(path, noisy, y)
        return {"clean_drop": c, "perturbed_drop": p, "passed": c <= TOL and p <= TOL}

    return quantize, drops


def float_convs(path) -> set[str]:
    """Conv nodes of a QDQ model whose weight is float (not read through a DequantizeLinear)."""
    import onnx

    g = onnx.load(str(path)).graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in g.node if n.op_type == "Conv" and n.input[1] not in dq_out}


@pytest.fixture(scope="module")
def one_trap(digits, sets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_trap")
    fp32 = build(digits, tmp, {"noise": (0, 100.0, 0.0)})
    quantize, drops = harness(fp32, digits.calib.x, sets, tmp / "calib")
    res = search(fp32, quantize, drops, sets[2], tmp / "search")
    return fp32, res


def test_search_keeps_the_trap_in_float(one_trap, sets):
    fp32, res = one_trap
    plain = res.trials[0]
    assert plain["nodes"] == [] and not plain["passed"]
    assert plain["perturbed_drop"] > 0.5 and plain["clean_drop"] <= TOL  # INT8 collapses on noise only
    assert res.passed and res.nodes == ["/noise/Conv"]
    assert res.ranking[0]["node"] == "/noise/Conv"
    assert res.ranking[0]["xmodel_sqnr"] == pytest.approx(0.0, abs=0.5)  # zeroed by its INT8 range
    assert res.ranking[0]["score"] > res.ranking[1]["score"] + 10
    # the returned model: the trap is a float Conv, the twin and the classifier stay INT8
    assert res.path.is_file() and float_convs(res.path) == {"/noise/Conv"}
    x, y, noisy = sets
    assert accuracy(res.path, noisy, y) >= accuracy(fp32, noisy, y) - TOL
    assert sorted(p.name for p in res.path.parent.glob("*.onnx")) == [res.path.name]  # trials deleted


def test_result_record_is_json(one_trap):
    _, res = one_trap
    rec = json.loads(json.dumps(res.to_dict()))
    assert rec["path"] == res.path.name and rec["nodes"] == res.nodes and rec["passed"] is True
    assert [t["nodes"] for t in rec["trials"]] == [[], ["/noise/Conv"]]  # pruning reuses the plain trial
    for t in rec["trials"]:
        assert set(t) >= {"nodes", "clean_drop", "perturbed_drop", "passed"}
        assert isinstance(t["clean_drop"], float) and isinstance(t["perturbed_drop"], float)
    assert rec["trials"][1]["perturbed_drop"] <= TOL < rec["trials"][0]["perturbed_drop"]
    assert {"node", "op_type", "score"} <= set(rec["ranking"][0])


def test_nothing_breaks_no_nodes(digits, sets, tmp_path):
    fp32 = build(digits, tmp_path, {})
    quantize, drops = harness(fp32, digits.calib.x, sets, tmp_path / "calib")
    res = search(fp32, quantize, drops, sets[2], tmp_path / "search")
    assert isinstance(res, SearchResult)
    assert res.passed and res.nodes == [] and res.path is None and res.ranking == []
    assert len(res.trials) == 1 and res.trials[0]["passed"]
    assert not list((tmp_path / "search").glob("*.onnx"))


def test_prune_drops_a_harmless_node_ranked_first(digits, sets, tmp_path):
    # "decoy" is zeroed by INT8 like a trap but moves class 1 by too little to matter; "noise" has a
    # small clean range (its blue weight), so INT8 clips rather than zeroes it: it ranks second.
    fp32 = build(digits, tmp_path, {"decoy": (1, 0.5, 0.0), "noise": (0, 100.0, 20.0)})
    quantize, drops = harness(fp32, digits.calib.x, sets, tmp_path / "calib")
    res = search(fp32, quantize, drops, sets[2], tmp_path / "search")
    assert [r["node"] for r in res.ranking[:2]] == ["/decoy/Conv", "/noise/Conv"]
    assert res.passed and res.nodes == ["/noise/Conv"]
    assert [t["nodes"] for t in res.trials] == [[], ["/decoy/Conv"],
                                                ["/decoy/Conv", "/noise/Conv"],
                                                ["/noise/Conv"]]
    assert float_convs(res.path) == {"/noise/Conv"}


def test_gives_up_after_max_nodes(digits, sets, tmp_path):
    fp32 = build(digits, tmp_path, {"noise": (0, 100.0, 0.0)})
    quantize, drops = harness(fp32, digits.calib.x, sets, tmp_path / "calib")
    res = search(fp32, quantize, drops, sets[2], tmp_path / "search", max_nodes=0)
    assert not res.passed and res.nodes == [] and res.path is None and len(res.trials) == 1
    assert res.ranking[0]["node"] == "/noise/Conv"  # still ranked, for the report
    # ranking alone, against a model quantised with the trap excluded: nothing left to lose there
    q = tmp_path / "q.onnx"
    quantize(["/noise/Conv"], q)
    assert rank_nodes(fp32, q, sets[2])[0]["score"] < res.ranking[0]["score"] - 10


def test_ranked_names_are_excludable_after_bn_fusion(digits, sets, tmp_path):
    """The digits student exported with its BatchNormalization nodes (no constant folding): the ranked
    names are those of the quant_pre_process-ed graph (BN folded into its Conv), the names
    nodes_to_exclude matches: the top-ranked Conv comes out as a float Conv, its output unquantised."""
    import warnings

    import onnx

    from edgekd.models import Preprocessed, build_model

    torch.manual_seed(0)
    fp32 = tmp_path / "student.onnx"
    model = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(digits.calib.x[:2]),), str(fp32), opset_version=17,
                          dynamo=False, do_constant_folding=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    assert "BatchNormalization" in {n.op_type for n in onnx.load(str(fp32)).graph.node}
    quantize, _ = harness(fp32, digits.calib.x, sets, tmp_path / "calib")
    plain, top = tmp_path / "plain.onnx", tmp_path / "top.onnx"
    quantize([], plain)
    ranking = rank_nodes(fp32, plain, sets[2][:32])
    convs = [r["node"] for r in ranking if r["op_type"] == "Conv"]
    assert len(convs) == 3 and "BatchNormalization" not in {r["op_type"] for r in ranking}
    quantize([convs[0]], top)
    assert float_convs(plain) == set() and float_convs(top) == {convs[0]}
    g = onnx.load(str(top)).graph
    out = next(n for n in g.node if n.name == convs[0]).output[0]
    assert not any(n.op_type == "QuantizeLinear" and out in n.input for n in g.node)
