"""edgekd.artifacts: the one table of model ids, files, formats, precisions and runtimes."""

from __future__ import annotations

import pytest

from edgekd import artifacts
from edgekd.artifacts import (
    ARTIFACTS,
    all_artifacts,
    build_models,
    by_file,
    deployed,
    memory_models,
    model_files,
    model_suffixes,
)
from edgekd.errors import ConfigError
from edgekd.files import MANIFEST
from edgekd.runtimes import RUNTIMES


def test_ids_and_files_unique():
    ids = [a.id for a in all_artifacts()]
    assert len(ids) == len(set(ids)) and ids == ARTIFACTS.names()
    files = [a.file for a in all_artifacts() if a.file is not None]
    assert len(files) == len(set(files))
    others = {artifacts.REPORT_JSON, artifacts.REPORT_MD, artifacts.REPORT_HTML, artifacts.GATE_JSON,
              artifacts.PREDICTIONS, MANIFEST}
    assert len(others) == 6 and not others & set(files)  # no model file clashes with the build's other files
    assert [a.id for a in all_artifacts()] == ["teacher", "student_torch", "student_fp32", "student_int8",
                                               "student_int8_ort", "student_fp32_pte", "student_int8_pte",
                                               "student_fp16"]
    assert artifacts.quantized_file("int8") == "student.int8.onnx"
    assert artifacts.quantized_file("fp16") == "student.fp16.onnx"


def test_every_field_is_from_its_vocabulary():
    for a in all_artifacts():
        assert a.kind in ("teacher", "student")
        assert a.format in ("torch", "onnx", "ort", "pte")
        assert a.precision in ("fp32", "int8", "fp16")
        assert a.runtime in RUNTIMES, a
        assert a.color.startswith("#") and len(a.color) == 7
        assert not a.memory or a.measured  # memory is measured for scored models only
    colors = [a.color for a in all_artifacts()]
    assert len(colors) == len(set(colors))  # plots tell them apart


def test_teacher_is_the_only_fileless_artifact():
    teacher = artifacts.get(artifacts.TEACHER)
    assert teacher.kind == "teacher" and teacher.file is None and teacher.suffix == ""
    assert not teacher.deployable and teacher.measured
    assert [a.id for a in all_artifacts() if a.file is None] == [artifacts.TEACHER]
    assert build_models()[0] is teacher


def test_every_deployable_artifact_has_a_model_file():
    suffixes = model_suffixes()
    assert suffixes == (".onnx", ".ort", ".pte")
    deployable = model_files()
    assert deployable and all(a.deployable for a in deployable)
    for a in deployable:
        assert a.file is not None and "." + a.file.rsplit(".", 1)[1] in suffixes, a
        assert a.file.endswith(a.suffix) and a.file.endswith("." + a.format)
        assert a.kind == "student"
    assert [a for a in all_artifacts() if a.deployable] == deployable


def test_suffix_property():
    assert artifacts.get("student_int8").suffix == ".int8.onnx"
    assert artifacts.get("student_torch").suffix == ".pt"


def test_deployed():
    assert deployed("int8", "ort").id == "student_int8_ort"
    assert deployed("int8", "onnx").id == "student_int8"
    assert deployed("fp32", "onnx").id == "student_fp32"
    for a in model_files():  # every deployable artifact is what some (precision, format) picks
        assert deployed(a.precision, a.format) is a


def test_deployed_unknown_lists_valid_choices():
    with pytest.raises(ConfigError) as e:
        deployed("fp16", "onnx")
    msg = str(e.value)
    assert "fp16" in msg and "onnx" in msg
    assert msg.endswith("valid: fp32/onnx, int8/onnx, int8/ort, fp32/pte, int8/pte")
    with pytest.raises(ConfigError, match="valid: fp32/onnx"):
        deployed("fp32", "torch")  # the torch student is not deployable


def test_by_file():
    assert by_file("student.int8.onnx") is artifacts.get("student_int8")
    assert by_file("student.int8.ort").id == "student_int8_ort"
    assert by_file("student.pt").id == "student_torch"
    assert by_file("model.onnx") is None and by_file(artifacts.REPORT_JSON) is None
    for a in all_artifacts():
        if a.file:
            assert by_file(a.file) is a


def test_get_unknown_id():
    with pytest.raises(ConfigError, match=r"unknown model id 'student'; valid: teacher, student_torch"):
        artifacts.get("student")


def test_subsets():
    assert [a.id for a in build_models()] == ["teacher", "student_torch", "student_fp32", "student_int8"]
    assert [a.id for a in memory_models()] == ["student_fp32", "student_int8"]
    both = ("onnxruntime", "executorch")
    assert [a.id for a in build_models(both)] == ["teacher", "student_torch", "student_fp32", "student_int8",
                                                  "student_fp32_pte", "student_int8_pte"]
    assert [a.id for a in memory_models(both)] == ["student_fp32", "student_int8", "student_fp32_pte",
                                                   "student_int8_pte"]
    assert [a.id for a in model_files()] == ["student_fp32", "student_int8", "student_int8_ort",
                                             "student_fp32_pte", "student_int8_pte"]
    assert artifacts.runtime_names() == both
    assert artifacts.gated_int8(both) == ["student_int8", "student_int8_pte"]
    assert [a.id for a in artifacts.runtime_files("executorch")] == ["student_fp32_pte", "student_int8_pte"]
    assert artifacts.plotted_formats() == ("onnx", "pte")


def test_artifacts_are_frozen():
    with pytest.raises(AttributeError):
        artifacts.get("student_int8").file = "other.onnx"
