import onnx
import pytest
from onnx import numpy_helper

from edgekd.config import QuantizeConfig
from edgekd.errors import ParityError
from edgekd.export import check_parity, export_onnx
from edgekd.quantize import quantize_model
from edgekd.runtimes import OrtRunner


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_pair, digits):
    _, student = trained_pair
    d = tmp_path_factory.mktemp("export")
    path = d / "s.onnx"
    rec = export_onnx(student, digits.calib.x, path, opset=17)
    return path, rec


def test_export_contract_and_parity(exported, trained_pair, digits):
    path, rec = exported
    m = onnx.load(path)
    assert m.opset_import[0].version == 17
    inp = m.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    par = check_parity(trained_pair[1], path, digits.test.x[:64], atol=1e-3)
    assert par["max_abs_logit_diff"] < 1e-3 and par["argmax_agreement"] == 1.0
    # dynamic batch: batch 1 and batch 7 both run
    r = OrtRunner(path)
    assert r.predict(digits.test.x[:1]).shape == (1, 10)
    assert r.predict(digits.test.x[:7]).shape == (7, 10)


def test_broken_parity_fails_clearly(exported, trained_pair, digits, tmp_path):
    path, _ = exported
    m = onnx.load(path)
    for init in m.graph.initializer:  # damage the first conv's weights
        if init.dims and len(init.dims) == 4:
            arr = numpy_helper.to_array(init) * -1
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            break
    bad = tmp_path / "bad.onnx"
    onnx.save(m, bad)
    with pytest.raises(ParityError, match="does not reproduce the torch model"):
        check_parity(trained_pair[1], bad, digits.test.x[:64], atol=1e-3)


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_static_int8(exported, digits, tmp_path, method):
    path, _ = exported
    out = tmp_path / "s.int8.onnx"
    rec = quantize_model(path, out, digits.calib.x[:100], QuantizeConfig(calibrate_method=method))
    assert rec["calib_samples"] == 100 and rec["format"] == "QDQ"
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert out.stat().st_size < 0.45 * path.stat().st_size
    fp = OrtRunner(path).predict(digits.test.x).argmax(1)
    q = OrtRunner(out).predict(digits.test.x).argmax(1)
    # a briefly trained student has low-margin predictions; the e2e test asserts >= 99% on the real build
    assert (fp == q).mean() >= 0.95
