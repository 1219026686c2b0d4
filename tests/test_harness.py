import numpy as np
import pytest

from edgekd.export import export_onnx
from edgekd.harness import accuracy, agreement, evaluate, measure_latency
from edgekd.runtimes import OrtRunner, TorchRunner


def test_one_evaluate_for_torch_and_onnx(trained_pair, digits, tmp_path):
    _, student = trained_pair
    path = tmp_path / "s.onnx"
    export_onnx(student, digits.calib.x, path, 17)
    pt = evaluate(TorchRunner(student), digits.test.x, batch_size=50)
    ox = evaluate(OrtRunner(path), digits.test.x, batch_size=64)
    assert pt.dtype == np.int16 and len(pt) == len(digits.test)
    assert agreement(pt, ox) == 1.0
    assert accuracy(pt, digits.test.y) == float((pt == digits.test.y).mean())


def test_latency_fields(trained_pair, digits):
    lat = measure_latency(TorchRunner(trained_pair[1]), digits.test.x[:1], runs=50, warmup=2, threads=1)
    assert lat["batch"] == 1 and lat["threads"] == 1 and lat["runs"] == 50
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0 and lat["wall_s"] > 0
    assert lat["device"] == "cpu" and lat["warmup"] == 2 and lat["cpu_count"] >= 1
    assert len(lat["samples"]) == 50 and min(lat["samples"]) == pytest.approx(lat["min"], abs=1e-4)
