import numpy as np
import pytest

from edgekd.export import export_onnx
from edgekd.harness import accuracy, agreement, evaluate, measure_latency
from edgekd.runtimes import LANES_MAX, OrtRunner, TorchRunner


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


def test_batches_shared_over_single_thread_sessions(trained_pair, digits, tmp_path):
    """evaluate shares the batches out over OrtRunner.lanes(): the same classes, in order, as one
    single-thread session running them one after the other; one lane where one thread is asked for
    or a provider other than the CPU's is used."""
    path = tmp_path / "s.onnx"
    export_onnx(trained_pair[1], digits.calib.x, path, 17)
    one = OrtRunner(path, threads=1)
    assert one.lanes(50) == [one.predict]
    x = digits.test.x
    want = np.concatenate([one.predict(x[i:i + 16]).argmax(1) for i in range(0, len(x), 16)]).astype(np.int16)
    three = OrtRunner(path, threads=3)
    assert len(three.lanes(6)) == 3 and [t for t, _ in three._lanes] == [1, 1, 1]
    # at least two batches a lane (else one idles while another runs the last batch)
    assert len(three.lanes(5)) == 2 and three.lanes(3) == [three.predict]
    calls = []
    lanes = three.lanes(6)
    three.lanes = lambda batches: [lambda b, k=k, p=p: calls.append(k) or p(b) for k, p in enumerate(lanes)]
    got = evaluate(three, x, batch_size=16)
    assert got.dtype == np.int16 and np.array_equal(got, want)
    assert len(calls) == -(-len(x) // 16) and len(set(calls)) > 1
    assert len(OrtRunner(path, threads=2).lanes(4)) == 2
    nine = OrtRunner(path, threads=9)  # at most LANES_MAX sessions (each holds the weights), the threads shared
    assert len(nine.lanes(50)) == LANES_MAX == 4 and [t for t, _ in nine._lanes] == [2, 2, 2, 2]
    assert [s.get_session_options().intra_op_num_threads for _, s in nine._lanes] == [2, 2, 2, 2]
    made = [s for _, s in nine._lanes]
    assert len(nine.lanes(6)) == 3 and [s for _, s in nine._lanes] == made  # fewer lanes, not new sessions
    assert np.array_equal(evaluate(nine, x, batch_size=16), want)
    nine.set_threads(2)
    assert len(nine.lanes(50)) == 2 and [t for t, _ in nine._lanes] == [1, 1]
    gpu = OrtRunner(path, threads=2, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert gpu.lanes(50) == [gpu.predict]
    late = OrtRunner(path, threads=2)
    path.unlink()  # gone before its lanes are made: its one session still runs every batch
    assert late.lanes(50) == [late.predict] and np.array_equal(evaluate(late, x, batch_size=16), want)


def test_a_failing_lane_stops_evaluate_with_its_error(trained_pair, digits, tmp_path):
    path = tmp_path / "s.onnx"
    export_onnx(trained_pair[1], digits.calib.x, path, 17)
    runner = OrtRunner(path, threads=2)
    good = runner.lanes(50)[0]
    seen = []

    def bad(batch):
        seen.append(len(batch))
        raise RuntimeError("lane failed")

    runner.lanes = lambda batches: [good, bad]
    with pytest.raises(RuntimeError, match="lane failed"):
        evaluate(runner, digits.test.x, batch_size=8)
    assert len(seen) == 1  # the failing lane took one batch and stopped
