"""edgekd.pipeline at unit level (no build): the output-folder check, clean measurement with fake
runners, the build's gate policy and the models a build scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd import artifacts
from edgekd.config import load_config
from edgekd.errors import ConfigError
from edgekd.files import BUILD_FORMAT, MANIFEST
from edgekd.pipeline import MEMORY_MEASURED, MODEL_IDS, build_policy, check_out_dir, measure_clean

# ---- check_out_dir ------------------------------------------------------------------------------


def test_check_out_dir_missing_or_empty_is_fine(tmp_path):
    check_out_dir(tmp_path / "new")
    check_out_dir(tmp_path / "deeper" / "new")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    assert not (tmp_path / "new").exists()  # a check only: nothing created


def test_check_out_dir_refuses_a_folder_that_is_not_a_build(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigError, match=r"is not empty and is not an edgekd build") as e:
        check_out_dir(d)
    assert str(d) in str(e.value) and "-o" in str(e.value)
    assert (d / "holiday.jpg").read_bytes() == b"\xff\xd8"


def test_check_out_dir_refuses_a_foreign_manifest(tmp_path):
    d = tmp_path / "ext"
    d.mkdir()
    (d / MANIFEST).write_text(json.dumps({"manifest_version": 3, "name": "a browser extension"}))
    with pytest.raises(ConfigError, match="not an edgekd build"):
        check_out_dir(d)


def test_check_out_dir_refuses_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_out_dir(f)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")  # a dangling symlink is not missing either
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_out_dir(link)


def test_check_out_dir_earlier_build(tmp_path):
    d = tmp_path / "build"
    d.mkdir()
    (d / artifacts.REPORT_JSON).write_text("{}")
    (d / MANIFEST).write_text(json.dumps({"format": BUILD_FORMAT, "files": {artifacts.REPORT_JSON: {}}}))
    check_out_dir(d)  # only what its manifest lists: may be replaced
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"earlier edgekd build but also holds notes\.txt"):
        check_out_dir(d)


# ---- measure_clean ------------------------------------------------------------------------------


class FakeRunner:
    """Predicts a fixed class per image; the image's first pixel holds its index."""

    def __init__(self, classes, device="cpu", n_classes=4):
        self.classes = np.asarray(classes)
        self.device = device
        self.n_classes = n_classes
        self.calls = []
        self.threads = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        idx = images[:, 0, 0, 0].astype(int)
        logits = np.zeros((len(images), self.n_classes), np.float32)
        logits[np.arange(len(images)), self.classes[idx]] = 1.0
        return logits

    def set_threads(self, threads: int) -> None:
        self.threads = threads


def _images(n: int) -> np.ndarray:
    x = np.zeros((n, 2, 2, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_measure_clean_accuracy_and_agreement():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    teacher = FakeRunner([0, 1, 2, 3, 0, 1, 2, 0])       # 7 of 8 right
    student = FakeRunner([0, 1, 2, 0, 1, 1, 2, 3])       # 6 of 8 right; same as teacher on 5
    runners = {artifacts.TEACHER: teacher, "student_int8": student}
    metrics, preds = measure_clean(runners, _images(8), labels, batch_size=3, progress=False)
    assert list(metrics) == [artifacts.TEACHER, "student_int8"] == list(preds)
    assert metrics[artifacts.TEACHER] == {"accuracy": {"clean": 7 / 8}, "agreement_with_teacher": {"clean": 1.0}}
    assert metrics["student_int8"]["accuracy"]["clean"] == pytest.approx(6 / 8)
    assert metrics["student_int8"]["agreement_with_teacher"]["clean"] == pytest.approx(5 / 8)
    np.testing.assert_array_equal(preds["student_int8"], student.classes)
    np.testing.assert_array_equal(preds[artifacts.TEACHER], teacher.classes)
    assert teacher.calls == [3, 3, 2] and student.calls == [3, 3, 2]  # batched as asked
    assert isinstance(metrics["student_int8"]["accuracy"]["clean"], float)


def test_measure_clean_agreement_is_with_the_teacher_whatever_the_order():
    labels = np.array([1, 1, 1, 1])
    runners = {"student_fp32": FakeRunner([1, 2, 2, 2]), artifacts.TEACHER: FakeRunner([2, 2, 2, 2]),
               "student_int8": FakeRunner([1, 1, 1, 1])}
    metrics, _ = measure_clean(runners, _images(4), labels, batch_size=256, progress=False)
    assert metrics["student_fp32"] == {"accuracy": {"clean": 0.25}, "agreement_with_teacher": {"clean": 0.75}}
    assert metrics["student_int8"] == {"accuracy": {"clean": 1.0}, "agreement_with_teacher": {"clean": 0.0}}
    assert metrics[artifacts.TEACHER]["accuracy"]["clean"] == 0.0


def test_measure_clean_needs_the_teacher():
    with pytest.raises(KeyError):
        measure_clean({"student_int8": FakeRunner([0])}, _images(1), np.array([0]), 8, False)


# ---- build_policy -------------------------------------------------------------------------------


def test_build_policy_defaults():
    policy = build_policy(load_config(None))
    assert policy.models == (artifacts.STUDENT_INT8,)
    assert policy.max_clean_drop is not None and policy.max_mca_drop is not None


def test_build_policy_valid_model_ids():
    policy = build_policy(load_config(None, ['gate.models=["student_fp32", "student_int8"]']))
    assert policy.models == ("student_fp32", "student_int8")


def test_build_policy_refuses_a_model_a_build_does_not_have():
    with pytest.raises(ConfigError) as e:
        build_policy(load_config(None, ['gate.models=["nope"]']))
    msg = str(e.value)
    assert "gate.models" in msg and "nope" in msg
    for mid in MODEL_IDS:
        assert mid in msg
    # the .ort program is deployable but not measured by a build: not gateable
    with pytest.raises(ConfigError, match=artifacts.STUDENT_INT8_ORT):
        build_policy(load_config(None, [f'gate.models=["{artifacts.STUDENT_INT8_ORT}"]']))


def test_build_policy_refuses_budgets_of_unknown_or_unmeasured_models():
    with pytest.raises(ConfigError, match=r"gate\.budgets\.nope: a build has no model 'nope'; valid: ") as e:
        build_policy(load_config(None, ["gate.budgets.nope.max_size_bytes=1000"]))
    assert all(mid in str(e.value) for mid in MODEL_IDS)
    with pytest.raises(ConfigError, match="max_peak_memory_bytes") as e:
        build_policy(load_config(None, [f"gate.budgets.{artifacts.TEACHER}.max_peak_memory_bytes=1000"]))
    assert all(mid in str(e.value) for mid in MEMORY_MEASURED)
    ok = build_policy(load_config(None, [f"gate.budgets.{artifacts.STUDENT_INT8}.max_peak_memory_bytes=1000"]))
    assert ok.budgets[artifacts.STUDENT_INT8].max_peak_memory_bytes == 1000


def test_build_policy_without_sweep_switches_off_robustness_checks():
    policy = build_policy(load_config(None, ["robustness.enabled=false"]))
    assert policy.max_mca_drop is None and policy.max_corruption_drop is None
    assert policy.max_adversarial_drop is None and policy.max_clean_drop is not None
    # a section that sets them keeps them
    kept = build_policy(load_config(None, ["robustness.enabled=false", "gate.max_mca_drop=0.2"]))
    assert kept.max_mca_drop == pytest.approx(0.2)


def test_build_policy_refuses_an_epsilon_the_build_will_not_run():
    with pytest.raises(ConfigError, match="gate.adversarial_epsilon = 16"):
        build_policy(load_config(None, ["gate.adversarial_epsilon=16"]))


# ---- the models a build scores ------------------------------------------------------------------


def test_model_ids_are_the_measured_artifacts():
    measured = [a.id for a in artifacts.build_models()]
    assert MODEL_IDS == tuple(measured)
    # the measured artifacts of the default runtimes (ExecuTorch's join with export.runtimes)
    assert measured == [a.id for a in artifacts.all_artifacts() if a.measured
                        and (a.format == "torch" or a.runtime in artifacts.DEFAULT_RUNTIMES)]
    assert set(artifacts.build_models(("onnxruntime", "executorch"))) - set(artifacts.build_models()) == {
        artifacts.get(artifacts.STUDENT_FP32_PTE), artifacts.get(artifacts.STUDENT_INT8_PTE)}
    assert MODEL_IDS[0] == artifacts.TEACHER
    assert {artifacts.STUDENT_TORCH, artifacts.STUDENT_FP32, artifacts.STUDENT_INT8} <= set(MODEL_IDS)
    assert artifacts.STUDENT_INT8_ORT not in MODEL_IDS
    assert set(MEMORY_MEASURED) <= set(MODEL_IDS)
    assert MEMORY_MEASURED == tuple(a.id for a in artifacts.memory_models())
