"""The runners of the RUNTIMES registry and the device runner (edgekd/_ortbench.py) they share:
one onnxruntime session maker, one timing loop, one set of latency statistics.

Cheap: an untrained digits student exported to ONNX in a temporary folder (no training, no build).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from edgekd import _ortbench
from edgekd.bench import bench
from edgekd.errors import InputError
from edgekd.export import export_onnx
from edgekd.harness import measure_latency
from edgekd.models import Preprocessed, build_model
from edgekd.runtimes import RUNTIMES, OrtRunner, TorchRunner

STATS = {"min", "mean", "std", "p50", "p90", "p95", "p99", "max"}
# what every latency record holds (a device run's latency_ms, a build's latency_ms)
RECORD = {"batch", "threads", "runs", "warmup", "wall_s"} | STATS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch model, its ONNX file, uint8 NHWC images)."""
    torch.manual_seed(0)
    model = Preprocessed(build_model("digits_student", 10), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("runtimes") / "tiny.onnx"
    export_onnx(model, images, path, opset=17)
    return model, path, images


def test_registry_runners_predict_the_same(tiny):
    model, path, images = tiny
    ort_runner = RUNTIMES.get("onnxruntime")(path, threads=1)
    torch_runner = RUNTIMES.get("torch")(model, "cpu")
    assert isinstance(ort_runner, OrtRunner) and isinstance(torch_runner, TorchRunner)
    assert (ort_runner.runtime, ort_runner.device, ort_runner.path) == ("onnxruntime", "cpu", path)
    assert ort_runner.input_name == "image" and ort_runner.session.get_providers()[0] == "CPUExecutionProvider"
    assert ort_runner.warning is None
    got, ref = ort_runner.predict(images), torch_runner.predict(images)
    assert got.shape == ref.shape == (16, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert (got.argmax(1) == ref.argmax(1)).all()
    # a new thread count makes a new session (same options otherwise): same predictions
    first = ort_runner.session
    ort_runner.set_threads(2)
    assert ort_runner.threads == 2 and ort_runner.session is not first
    np.testing.assert_array_equal(ort_runner.predict(images), got)
    ort_runner.synchronize()


def test_onnxruntime_threads_sleep_between_runs_only_while_another_runtime_takes_turns(tiny):
    from edgekd.cores import no_spinning_between

    def spins(runner):  # onnxruntime's default is to spin (the entry is absent)
        try:
            return runner.session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning") != "0"
        except RuntimeError:  # not set
            return True

    model, path, images = tiny
    ort_runner, torch_runner = OrtRunner(path), TorchRunner(model)
    got, first = ort_runner.predict(images), ort_runner.session
    assert ort_runner.spinning and spins(ort_runner)
    with no_spinning_between({"a": ort_runner}):  # one runtime: unchanged
        assert ort_runner.spinning and ort_runner.session is first
    with no_spinning_between({"t": torch_runner, "a": ort_runner}):
        assert not ort_runner.spinning and not spins(ort_runner) and ort_runner.session is not first
        np.testing.assert_array_equal(ort_runner.predict(images), got)
    assert ort_runner.spinning and spins(ort_runner)


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(tiny):
    _, path, images = tiny
    r = OrtRunner(path, providers=("NoSuchExecutionProvider",))
    assert r.session.get_providers() == ["CPUExecutionProvider"]
    assert r.warning.startswith("NoSuchExecutionProvider is not in this onnxruntime (")
    assert r.warning.endswith("; used CPUExecutionProvider")
    assert r.predict(images[:2]).shape == (2, 10)


def test_latency_records_share_the_device_runner_fields(tiny):
    model, path, images = tiny
    recs = {name: measure_latency(runner, images[:1], runs=20, warmup=2, threads=1)
            for name, runner in (("torch", TorchRunner(model)), ("onnxruntime", OrtRunner(path)))}
    device = _ortbench.measure(str(path), threads=1, runs=20, warmup=2)["latency_ms"]
    assert set(device) == RECORD
    for name, lat in recs.items():
        assert set(lat) == RECORD | {"device", "cpu_count", "samples"}, name
        assert (lat["batch"], lat["threads"], lat["runs"], lat["warmup"], lat["device"]) == (1, 1, 20, 2, "cpu")
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        # the statistics are the device runner's, of the recorded samples
        stats = _ortbench.latency_stats(np.asarray(lat["samples"]))
        assert all(lat[k] == pytest.approx(stats[k], abs=1e-3) for k in STATS)
    assert (device["batch"], device["threads"], device["runs"], device["warmup"]) == (1, 1, 20, 2)


def test_statistics_of_known_timings():
    ms = np.arange(1.0, 11.0)  # 1, 2, ..., 10 ms
    s = _ortbench.latency_stats(ms)
    assert s == pytest.approx({"min": 1.0, "mean": 5.5, "std": math.sqrt(55 / 6), "p50": 5.5, "p90": 9.1,
                               "p95": 9.55, "p99": 9.91, "max": 10.0})
    assert _ortbench.latency_stats(np.array([2.5]))["std"] == 0.0
    rec = _ortbench.latency_record(ms, 0.06, batch=4, threads=2, warmup=3)
    assert set(rec) == RECORD and (rec["batch"], rec["threads"], rec["runs"], rec["warmup"]) == (4, 2, 10, 3)
    with pytest.raises(ValueError, match="at least one timed run"):
        _ortbench.latency_stats(np.array([]))


def test_timing_loop_counts_calls_and_synchronizes():
    calls, syncs = [], []
    ms, wall_s = _ortbench.time_calls(lambda: calls.append(1), runs=7, warmup=3,
                                      synchronize=lambda: syncs.append(1))
    assert len(ms) == 7 and len(calls) == 10 and len(syncs) == 8  # after the warm-up and each timed call
    assert (ms >= 0).all() and wall_s >= ms.sum() / 1e3
    ms, wall_s = _ortbench.time_calls(lambda: None, warmup=0, seconds=0.02)  # a time budget
    assert len(ms) >= 10 and wall_s >= 0.02


def test_measure_latency_times_the_runner_through_the_device_runner():
    class Slow:  # 2 ms per call; counts threads and synchronize calls
        device = "cuda"
        threads, syncs = None, 0

        def predict(self, images):
            time.sleep(0.002)
            return np.zeros((len(images), 10), np.float32)

        def set_threads(self, threads):
            self.threads = threads

        def synchronize(self):
            self.syncs += 1

    r = Slow()
    lat = measure_latency(r, np.zeros((3, 32, 32, 3), np.uint8), runs=5, warmup=1, threads=4)
    assert r.threads == 4 and r.syncs == 6 and lat["device"] == "cuda" and lat["batch"] == 3
    assert lat["min"] >= 2.0 and lat["runs"] == len(lat["samples"]) == 5


def test_measurement_in_a_fresh_process(tiny):
    _, path, _ = tiny
    rec = bench([path], [1], runs=10, warmup=1)[0]
    assert set(rec["latency_ms"]) == RECORD and rec["runs"] == rec["latency_ms"]["runs"] == 10
    assert rec["model"] == "tiny.onnx" and rec["input_shapes"] == {"image": [1, 32, 32, 3]}


def test_unusable_model_files_are_one_sentence_errors(tiny, tmp_path):
    missing = tmp_path / "none.onnx"
    with pytest.raises(InputError, match="none.onnx: ONNX file does not exist") as e:
        OrtRunner(missing)
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model\n")
    with pytest.raises(InputError, match=r"notes.onnx: onnxruntime cannot load it \(") as e:
        OrtRunner(not_onnx)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    with pytest.raises(InputError, match="is a folder, not a file"):
        OrtRunner(tmp_path)
    # the device runner's own errors, which run.py and `edgekd bench` show as one line
    with pytest.raises(_ortbench.ModelLoadError, match="model file does not exist"):
        _ortbench.make_session(str(missing))
    with pytest.raises(_ortbench.ModelLoadError, match="not a regular file"):
        _ortbench.make_session(str(tmp_path))
    with pytest.raises(InputError, match=r"^measuring .*notes.onnx failed: .*notes.onnx: onnxruntime cannot "
                                         r"load it \(.*\)$") as e:
        bench([not_onnx], [1], runs=2, warmup=0)
    assert "\n" not in str(e.value)
