"""docs/extending.md: every example on the page runs as written and does what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.config import load_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
_BLOCK = re.compile(r"<!-- example: (\S+)(?: (\S+))? -->\n```(\w+)\n(.*?)```", re.S)


def examples() -> dict[str, tuple[str | None, str]]:
    found = {m.group(1): (m.group(2), m.group(4)) for m in _BLOCK.finditer(DOC.read_text())}
    assert set(found) == {"loss", "corruption", "preset", "device", "runtime"}, found.keys()
    return found


def run_example(name: str) -> dict:
    namespace: dict = {}
    exec(compile(examples()[name][1], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


@pytest.fixture
def registered():
    """Unregister what an example registered, so other tests see the stock registries."""
    added: list[tuple] = []
    yield added
    for registry, name in added:
        registry.remove(name)


def test_a_logit_loss_is_one_function_and_the_config_accepts_it(registered, digits):
    from edgekd.distill import distill
    from edgekd.losses import LOSSES, kd_term, loss_spec
    from edgekd.models import Preprocessed, build_model

    ns = run_example("loss")
    registered.append((LOSSES, "soft_only"))
    cfg = load_config(None, ['distill.loss="soft_only"', "distill.epochs=1", "distill.min_steps=0",
                             "distill.augment=[]", "distill.select=\"last\""])
    assert loss_spec("soft_only").uses_teacher and not loss_spec("soft_only").step
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    assert torch.allclose(ns["soft_only"](s, t, None, cfg.distill), kd_term(s, t, cfg.distill.temperature))
    torch.manual_seed(0)
    student = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
    before = [p.detach().clone() for p in student.parameters()]
    teacher_logits = np.eye(10, dtype=np.float32)[digits.train.y] * 5
    rec = distill(student, teacher_logits, digits.train, cfg.distill, "cpu", progress=False)
    assert rec["log"] and np.isfinite(rec["log"][-1]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_a_corruption_is_one_function_and_every_listing_sees_it(registered):
    from edgekd import perturb
    from edgekd.perturb_registry import PERTURBATIONS

    run_example("corruption")
    registered.append((PERTURBATIONS, "vignette"))
    assert "vignette" in perturb.resolve(["extra"]) and "vignette" in perturb.resolve(["all"])
    assert "vignette" not in perturb.COMMON
    load_config(None, ['distill.augment=["vignette"]'])  # a valid training perturbation
    img = np.full((2, 32, 32, 3), 200, np.uint8)
    out = {s: perturb.apply("vignette", img, s, seed=0) for s in (1, 5)}
    assert out[1].dtype == np.uint8 and out[1].shape == img.shape
    assert out[5][0, 0, 0, 0] < out[1][0, 0, 0, 0] < 200  # corners darken with severity
    assert abs(int(out[5][0, 16, 16, 0]) - 200) <= 2      # the centre barely changes
    assert np.array_equal(out[5], perturb.apply("vignette", img, 5, seed=0))


def test_a_preset_is_one_toml_file(tmp_path, trained_pair, digits):
    from edgekd.export import export_onnx
    from edgekd.quantize import quantize_model
    from edgekd.runtimes import RUNTIMES

    name, text = examples()["preset"]
    path = tmp_path / Path(name).name
    path.write_text(text)
    cfg = load_config(None, [f'quantize.preset="{path}"'])
    assert (cfg.quantize.calibrate_method, cfg.quantize.activation_type) == ("entropy", "uint8")
    cfg2 = load_config(None, [f'quantize.preset="{path}"', 'quantize.calibrate_method="minmax"'])
    assert cfg2.quantize.calibrate_method == "minmax"  # the config's own keys win
    fp32, int8 = tmp_path / "s.onnx", tmp_path / "s.int8.onnx"
    export_onnx(trained_pair[1], digits.calib.x, fp32, 17)
    rec = quantize_model(fp32, int8, digits.calib.x[:16], cfg.quantize)
    assert rec["calibrate_method"] == "entropy" and rec["activations"] == "uint8"
    x = digits.test.x[:64]
    agree = (RUNTIMES.get("onnxruntime")(int8).predict(x).argmax(1)
             == RUNTIMES.get("onnxruntime")(fp32).predict(x).argmax(1)).mean()
    assert agree >= 0.9


def test_a_device_profile_is_one_toml_file(tmp_path, monkeypatch):
    from edgekd.device_profiles import builtin_profiles, load_profile

    name, text = examples()["device"]
    (tmp_path / name).write_text(text)
    prof = load_profile(str(tmp_path / name))
    assert (prof.name, prof.threads, prof.model_id) == ("my-board", 4, "student_int8_ort")
    assert prof.budgets.max_latency_p90_ms == 15.0
    monkeypatch.setenv("EDGEKD_DEVICES", str(tmp_path))
    assert "my-board" in [p.name for p in builtin_profiles()]
    assert load_profile("my-board") == prof.__class__(**{**prof.__dict__, "source": prof.source})


def test_a_runtime_is_one_class_measured_like_the_others(registered, trained_pair, digits, tmp_path):
    from edgekd.export import export_onnx
    from edgekd.harness import evaluate, measure_latency
    from edgekd.runtimes import RUNTIMES

    ns = run_example("runtime")
    registered.append((RUNTIMES, "numpy-linear"))
    assert RUNTIMES.get("numpy-linear") is ns["NumpyLinearRunner"]
    d = int(np.prod(digits.test.x.shape[1:]))
    w = np.zeros((d, 10), np.float32)
    w[:, 3] = 1.0
    runner = RUNTIMES.get("numpy-linear")(w, np.zeros(10, np.float32))
    assert (evaluate(runner, digits.test.x[:50]) == 3).all()
    rec = measure_latency(runner, digits.test.x[:1], runs=5, warmup=1, threads=1)
    export_onnx(trained_pair[1], digits.calib.x, tmp_path / "s.onnx", 17)
    ort = measure_latency(RUNTIMES.get("onnxruntime")(tmp_path / "s.onnx"), digits.test.x[:1], 5, 1, 1)
    assert set(rec) == set(ort) and rec["runs"] == 5 and rec["p50"] > 0
