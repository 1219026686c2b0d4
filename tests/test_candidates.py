"""Quantisation presets, the calibration cache, device profiles' candidates and the choice of the
INT8 model to deploy (edgekd.quantize, edgekd.presets, edgekd.candidates, edgekd.device_profiles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekd import artifacts
from edgekd.candidates import Candidate, candidate_config, candidate_presets, choose
from edgekd.cli import EXIT_USAGE, main
from edgekd.config import QuantizeConfig, load_config
from edgekd.errors import ConfigError
from edgekd.export import export_onnx
from edgekd.fields import check_table
from edgekd.presets import builtin_presets, load_preset
from edgekd.quantize import quantize_model
from edgekd.runtimes import OrtRunner

QUANTIZE_PRESETS = [p for p in builtin_presets() if p.section == "quantize"]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, trained_pair, digits) -> Path:
    path = tmp_path_factory.mktemp("presets") / "s.onnx"
    export_onnx(trained_pair[1], digits.calib.x, path, 17)
    return path


def _preset_config(name: str) -> QuantizeConfig:
    p = load_preset(name, "quantize")
    return QuantizeConfig(**check_table(p.table, QuantizeConfig, p.source, "quantize"))


@pytest.mark.parametrize("preset", [p.name for p in QUANTIZE_PRESETS])
def test_every_preset_builds_and_matches_fp32(preset, fp32, digits, tmp_path):
    """Each preset makes a model with the input contract that agrees with the fp32 one."""
    q = _preset_config(preset)
    out = tmp_path / f"{preset}.onnx"
    rec = quantize_model(fp32, out, digits.calib.x, q, calib_cache=tmp_path / "calib")
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    inp, outp = model.graph.input[0].type.tensor_type, model.graph.output[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8 and outp.elem_type == onnx.TensorProto.FLOAT
    if q.method == "static":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and rec["calib_samples"] == len(digits.calib)
        zp = [i for i in model.graph.initializer if i.name.endswith("_zero_point") and "image" not in i.name]
        act = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8"}
        assert q.activation_type in {act.get(z.data_type) for z in zp}
        assert out.stat().st_size < 0.45 * fp32.stat().st_size
    elif q.method == "dynamic":
        assert "ConvInteger" in ops
    else:  # fp16: half-precision weights, uint8 in and float32 out kept
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
        assert out.stat().st_size < 0.6 * fp32.stat().st_size
    x = digits.test.x
    ref, got = OrtRunner(fp32).predict(x), OrtRunner(out).predict(x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97
    if q.method == "fp16":
        assert np.abs(ref - got).max() < 0.05
    r = OrtRunner(out)
    assert r.predict(x[:1]).shape == (1, 10) and r.predict(x[:7]).shape == (7, 10)


def test_reduce_range_stores_7_bit_weights(fp32, digits, tmp_path):
    from onnx import numpy_helper

    peak = {}
    for name in ("int8-static-u8s8", "int8-static-u8s8-8bit"):
        out = tmp_path / f"{name}.onnx"
        quantize_model(fp32, out, digits.calib.x[:64], _preset_config(name))
        w = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
        peak[name] = max(int(np.abs(a.astype(np.int32)).max()) for a in w)
    # onnxruntime's 7-bit symmetric range is [-64, 64]; 8-bit uses [-127, 127]
    assert peak["int8-static-u8s8"] == 64 and peak["int8-static-u8s8-8bit"] == 127


def test_calibration_ranges_are_cached_across_presets(fp32, digits, tmp_path):
    cache = tmp_path / "calib"
    x = digits.calib.x[:64]
    first = quantize_model(fp32, tmp_path / "a.onnx", x, _preset_config("int8-static-u8s8"), calib_cache=cache)
    again = quantize_model(fp32, tmp_path / "b.onnx", x, _preset_config("int8-static-s8s8"), calib_cache=cache)
    other = quantize_model(fp32, tmp_path / "c.onnx", x, _preset_config("int8-static-u8s8-percentile"),
                           calib_cache=cache)
    assert (first["calibration"], again["calibration"], other["calibration"]) == ("computed", "cache", "computed")
    assert len(list(cache.glob("*.json"))) == 2  # one per calibrator, shared by activation types
    # the same model from cached ranges is the same file
    quantize_model(fp32, tmp_path / "a2.onnx", x, _preset_config("int8-static-u8s8"), calib_cache=cache)
    assert (tmp_path / "a2.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    # a damaged entry is recalibrated, not trusted
    for f in cache.glob("*.json"):
        f.write_text("{not json")
    rec = quantize_model(fp32, tmp_path / "d.onnx", x, _preset_config("int8-static-u8s8"), calib_cache=cache)
    assert rec["calibration"] == "computed"
    assert (tmp_path / "d.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_input_constants_are_expanded_and_outputs_unchanged(fp32, digits, tmp_path):
    """The per-channel normalisation constants become full-size (Expand, folded by onnxruntime at
    load): the file barely grows and every logit is the same as without the rewrite."""
    import shutil

    out = tmp_path / "q.onnx"
    rec = quantize_model(fp32, out, digits.calib.x[:64], QuantizeConfig())
    assert rec["input_constants_expanded"] == 2  # Sub(mean) and Div(std)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("Expand") == 2
    # undo by re-quantising and comparing with a copy that never had the rewrite: same logits
    plain = tmp_path / "plain.onnx"
    shutil.copy(out, plain)
    m = onnx.load(str(plain))
    shape = next(i for i in m.graph.initializer if i.name == "edgekd_image_shape_nchw")
    for node in m.graph.node:
        if node.op_type == "Expand":
            target = node.output[0]
            for other in m.graph.node:
                other.input[:] = [node.input[0] if i == target else i for i in other.input]
    keep = [n for n in m.graph.node if n.op_type != "Expand"]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.remove(shape)
    onnx.save(m, str(plain))
    x = digits.test.x
    assert np.array_equal(OrtRunner(out).predict(x), OrtRunner(plain).predict(x))
    assert out.stat().st_size - plain.stat().st_size < 1000


def test_candidate_config_takes_the_presets_recipe_and_the_builds_tolerances():
    q = load_config(None, ["quantize.max_clean_drop=0.05", "quantize.per_channel=false"]).quantize
    assert candidate_config(q, q.preset) is q  # the build's own section, its overrides kept
    s8 = candidate_config(q, "int8-static-s8s8")
    assert (s8.activation_type, s8.reduce_range, s8.per_channel) == ("int8", False, True)
    assert s8.max_clean_drop == 0.05 and s8.preset == "int8-static-s8s8"


def test_candidate_presets_come_from_the_profile():
    from edgekd.device_profiles import load_profile

    cfg = load_config(None)
    assert candidate_presets(cfg, None) == ["int8-static-u8s8"]
    assert candidate_presets(cfg, load_profile("rpi4")) == ["int8-static-s8s8", "int8-static-u8s8-8bit"]
    assert candidate_presets(cfg, load_profile("x86-edge"))[0] == "int8-static-u8s8"


def _cand(i: int, preset: str, passed: bool = True) -> Candidate:
    return Candidate(preset, QuantizeConfig(), Path(f"{preset}.onnx"), f"candidate_{i}", {},
                     {"clean_drop": 0.0, "perturbed_drop": 0.0 if passed else 0.05, "passed": passed})


def test_choose_fastest_passing_when_measured_here_else_the_profiles_order():
    from edgekd.device_profiles import load_profile

    a, b, c = _cand(0, "p-a"), _cand(1, "p-b"), _cand(2, "p-c", passed=False)
    scores = {"candidate_0": {"gate_failed": [], "p50_ms": 0.30},
              "candidate_1": {"gate_failed": [], "p50_ms": 0.20},
              "candidate_2": {"gate_failed": [], "p50_ms": 0.10}}
    prof = load_profile("rpi4")
    win, why = choose([a, b, c], scores, prof, measured_here=True)
    assert win is b and "fastest measured here" in why and "p50 0.200 ms" in why  # c misses the tolerance
    win, why = choose([a, b, c], scores, prof, measured_here=False)
    assert win is a and "order of preference" in why and "edgekd bundle" in why
    # a gate failure outranks speed; when every candidate fails the gate, the fewest failures win
    scores["candidate_1"]["gate_failed"] = ["student_int8.clean_drop"]
    assert choose([a, b], scores, prof, measured_here=True)[0] is a
    scores["candidate_0"]["gate_failed"] = ["student_int8.clean_drop", "student_int8.agreement"]
    win, why = choose([a, b], scores, prof, measured_here=True)
    assert win is b and "fails 1 gate check" in why
    win, why = choose([a], scores, None, measured_here=True)
    assert win is a and "only candidate" in why


def test_profiles_validate_presets_and_isa(tmp_path):
    from edgekd.device_profiles import profile_from_dict

    with pytest.raises(ConfigError, match=r"x.toml: presets: unknown quantize preset 'nope'; valid: fp16"):
        profile_from_dict({"presets": ["nope"]}, "x.toml", "x")
    with pytest.raises(ConfigError, match=r"'fp16' makes fp16 models; a device's candidates are INT8"):
        profile_from_dict({"presets": ["fp16"]}, "x.toml", "x")
    with pytest.raises(ConfigError, match=r"isa = 'sse9' is not one of avx2, avx512, vnni, neon, dotprod"):
        profile_from_dict({"isa": ["sse9"]}, "x.toml", "x")


def test_host_profile_and_cpu_class(monkeypatch):
    from edgekd import device_profiles as dp

    host = dp.load_profile("host")
    assert host.name == "host" and host.presets and host.arch in ("x86_64", "arm64", "armv7")
    assert dp.same_cpu_class(host)
    monkeypatch.setattr(dp, "host_isa", lambda: ("x86_64", ["avx2"]))
    assert dp.host_profile().presets[0] == "int8-static-u8s8"
    assert dp.same_cpu_class(dp.load_profile("x86-edge")) and not dp.same_cpu_class(dp.load_profile("rpi4"))
    monkeypatch.setattr(dp, "host_isa", lambda: ("x86_64", ["avx2", "avx512", "vnni"]))
    assert dp.host_profile().presets[0] == "int8-static-u8s8-8bit"
    assert not dp.same_cpu_class(dp.load_profile("x86-edge"))  # VNNI changes the INT8 kernels
    monkeypatch.setattr(dp, "host_isa", lambda: ("arm64", ["dotprod", "neon"]))
    assert dp.host_profile().presets[0] == "int8-static-s8s8"
    assert dp.same_cpu_class(dp.load_profile("android-arm64"))


@pytest.fixture
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKD_DEVICES", raising=False)
    return tmp_path


def _one_error(capsys, argv) -> str:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgekd: error: ") and "Traceback" not in err[0]
    return err[0]


def test_bad_presets_and_devices_are_one_sentence(capsys, _isolated):
    line = _one_error(capsys, ["build", "--set", "quantize.preset=nope", "-o", "out"])
    assert "unknown quantize preset 'nope'; valid: fp16, int8-dynamic" in line
    bad = _isolated / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\nprecision = "int8"\n[quantize]\nbits = 4\n')
    line = _one_error(capsys, ["build", "--set", f"quantize.preset={bad}", "-o", "out"])
    assert "bad.toml: unknown key quantize.bits" in line or "unknown key 'bits'" in line
    line = _one_error(capsys, ["build", "--device", "nope", "-o", "out"])
    assert "unknown device profile 'nope'" in line and "rpi4" in line and "host" in line
    line = _one_error(capsys, ["build", "--set", "quantize.preset=fp16", "-o", "out"])
    assert "fp16" in line
    assert not (_isolated / "out").exists()


TINY = ["--set", "distill.epochs=2", "--set", "teacher.epochs=2", "--set", "distill.min_steps=0",
        "--set", "teacher.min_steps=0", "--set", 'robustness.perturbations=["gaussian_noise"]',
        "--set", "robustness.severities=[3]", "--set", "robustness.adversarial=false",
        "--set", "quantize.tune_perturbations=[\"gaussian_blur\"]", "--set", "quantize.tune_severities=[3]",
        "--set", "measure.latency_runs=50"]


def test_build_for_two_devices_chooses_different_presets_and_the_bundle_uses_it(capsys, _isolated):
    """`edgekd build --device x86-edge` and `--device rpi4` build each profile's candidates, choose
    different presets, say why, and the gate and the bundle use the chosen artifact."""
    chosen = {}
    for device in ("x86-edge", "rpi4"):
        out = _isolated / device
        assert main(["build", *TINY, "--device", device, "-o", str(out), "--quiet"]) in (0, 1), capsys.readouterr()
        capsys.readouterr()
        report = json.loads((out / artifacts.REPORT_JSON).read_text())
        q = report["quantization"]
        assert q["device"] == device and q["why"].startswith(q["chosen"])
        assert [c["preset"] for c in q["candidates"]] == candidate_presets(load_config(None),
                                                                          __import__("edgekd.device_profiles", fromlist=["x"]).load_profile(device))
        for c in q["candidates"]:
            assert c["tolerance"]["passed"] in (True, False) and c["latency_ms"]["p50"] > 0
            assert 0 <= c["accuracy"]["clean"] <= 1 and c["file_bytes"] > 0
        chosen[device] = q["chosen"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["stages"]["quantize"]["chosen"] == q["chosen"]
        assert manifest["config"]["deploy"]["device"] == device
        # the deployed file is the chosen candidate: its activation type is the preset's
        act = _preset_config(q["chosen"]).activation_type
        zp = [i for i in onnx.load(str(out / "student.int8.onnx")).graph.initializer
              if i.name.endswith("_zero_point") and i.dims == []]
        want = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}[act]
        assert zp and all(z.data_type == want for z in zp)
        # gate.json judged that file; the budgets of the profile are applied to it (size at least)
        gate = json.loads((out / artifacts.GATE_JSON).read_text())
        assert any(c["id"] == "student_int8.size_bytes" for c in gate["checks"])
        assert not list(out.glob(".candidates*"))  # the candidates' scratch folder is gone
    assert chosen["x86-edge"] != chosen["rpi4"]
    assert chosen["rpi4"] == "int8-static-s8s8"  # not measurable here: the profile's first that passes
    # the bundle for rpi4 ships the chosen model (its .ort form)
    bundle = _isolated / "bundle-rpi4"
    assert main(["bundle", str(_isolated / "rpi4"), "--device", "rpi4", "-o", str(bundle)]) == 0, capsys.readouterr()
    capsys.readouterr()
    shipped = {p.name for p in bundle.rglob("*.ort")}
    assert shipped == {"student.int8.ort"}
