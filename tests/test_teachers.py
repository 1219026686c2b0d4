"""Bring-your-own teacher: state_dict + architecture, TorchScript, torch.export, factory; the
class checks; the teacher-output cache; student architectures and their options."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch

from edgekd.config import load_config
from edgekd.distill import crop_flip_batch, predict_logits
from edgekd.errors import ConfigError, InputError
from edgekd.models import build_model, count_params
from edgekd.teachers import detect_format, load_teacher, teacher_outputs


def teacher_cfg(weights, *extra: str):
    return load_config(None, [f'teacher.weights="{weights}"', *extra]).teacher


@pytest.fixture(scope="module")
def trained_net(trained_pair):
    return trained_pair[0].net  # the digits teacher's network (takes normalised NCHW)


def norm_args(digits) -> list[str]:
    return [f"teacher.mean={list(digits.mean)}", f"teacher.std={list(digits.std)}"]


def test_every_format_loads_the_same_teacher(tmp_path, digits, trained_pair, trained_net):
    ref = predict_logits(trained_pair[0], digits.test.x[:64], "cpu")
    sd = tmp_path / "t.pt"
    torch.save(trained_net.state_dict(), sd)
    ts = tmp_path / "t.ts"
    torch.jit.save(torch.jit.trace(trained_net, torch.zeros(1, 3, 32, 32)), ts)
    pt2 = tmp_path / "t.pt2"
    torch.export.save(torch.export.export(trained_net, (torch.zeros(2, 3, 32, 32),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), pt2)
    expected_fmt = {sd: "state_dict", ts: "torchscript", pt2: "export"}
    for path, fmt in expected_fmt.items():
        assert detect_format(path) == fmt
        teacher, rec = load_teacher(teacher_cfg(path, *norm_args(digits)), digits, "cpu")
        assert rec["format"] == fmt and len(rec["sha256"]) == 64
        got = predict_logits(teacher, digits.test.x[:64], "cpu")
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_factory_teacher(tmp_path, monkeypatch, digits, trained_pair, trained_net):
    (tmp_path / "my_models.py").write_text(
        "from edgekd.models import build_model\n"
        "def teacher(num_classes):\n    return build_model('digits_teacher', num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sd = tmp_path / "t.pt"
    torch.save(trained_net.state_dict(), sd)
    teacher, rec = load_teacher(teacher_cfg(sd, 'teacher.arch="my_models:teacher"', *norm_args(digits)),
                                digits, "cpu")
    assert rec["arch"] == "my_models:teacher"
    np.testing.assert_allclose(predict_logits(teacher, digits.test.x[:8], "cpu"),
                               predict_logits(trained_pair[0], digits.test.x[:8], "cpu"), atol=1e-5)
    sys.modules.pop("my_models", None)
    with pytest.raises(InputError, match="cannot be imported"):
        load_teacher(teacher_cfg(sd, 'teacher.arch="no_such_module_x:f"'), digits, "cpu")


def test_sidecar_gives_normalisation_and_classes_are_checked(tmp_path, digits, trained_net):
    sd = tmp_path / "t.pt"
    torch.save(trained_net.state_dict(), sd)
    meta = {"classes": digits.classes, "input": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (tmp_path / "t.json").write_text(json.dumps(meta))
    teacher, rec = load_teacher(teacher_cfg(sd), digits, "cpu")
    assert rec["normalisation"] == {"mean": [0.5] * 3, "std": [0.25] * 3, "from": "teacher metadata"}
    assert torch.allclose(teacher.mean.flatten(), torch.full((3,), 127.5))
    meta["classes"] = digits.classes[::-1]
    (tmp_path / "t.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="differ from the data's in name or order: 0: teacher '9' / data '0'"):
        load_teacher(teacher_cfg(sd), digits, "cpu")
    meta["classes"] = ["a", "b"]
    (tmp_path / "t.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="the teacher knows 2 classes .* the data has 10"):
        load_teacher(teacher_cfg(sd), digits, "cpu")
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_teacher(teacher_cfg(sd), digits, "cpu")


def test_wrong_class_count_and_unreadable_files(tmp_path, digits):
    five = tmp_path / "five.pt"
    torch.save(build_model("digits_teacher", 5).state_dict(), five)
    with pytest.raises(InputError, match="its output layer has 5 classes, the data has 10"):
        load_teacher(teacher_cfg(five), digits, "cpu")
    ts5 = tmp_path / "five.ts"
    torch.jit.save(torch.jit.script(build_model("digits_teacher", 5)), ts5)
    with pytest.raises(InputError, match=r"outputs shape \(2, 5\), the data has 10 classes"):
        load_teacher(teacher_cfg(ts5), digits, "cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="not a loadable torch state_dict"):
        load_teacher(teacher_cfg(junk), digits, "cpu")
    with pytest.raises(InputError, match="not a loadable TorchScript file"):
        load_teacher(teacher_cfg(junk, 'teacher.format="torchscript"'), digits, "cpu")
    with pytest.raises(InputError, match="not a loadable torch.export program"):
        load_teacher(teacher_cfg(junk, 'teacher.format="export"'), digits, "cpu")
    with pytest.raises(InputError, match="does not exist"):
        load_teacher(teacher_cfg(tmp_path / "none.pt"), digits, "cpu")


def test_teacher_output_cache_hits_and_views(tmp_path, digits, trained_pair):
    teacher = trained_pair[0]
    x = digits.train.x[:100]
    a, hit_a = teacher_outputs(teacher, x, "cpu", tmp_path)
    b, hit_b = teacher_outputs(teacher, x, "cpu", tmp_path)
    assert (hit_a, hit_b) == (False, True) and np.array_equal(a, b)
    np.testing.assert_allclose(a, predict_logits(teacher, x, "cpu"), atol=1e-6)
    f, _ = teacher_outputs(teacher, x, "cpu", tmp_path, view="hflip")
    np.testing.assert_allclose(f, predict_logits(teacher, np.ascontiguousarray(x[:, :, ::-1]), "cpu"), atol=1e-6)
    # the same weights under another normalisation (a loaded teacher whose mean / std changed):
    # another teacher, so a miss, and its own logits
    other = copy.deepcopy(teacher)
    other.mean += 10.0
    o, hit_other = teacher_outputs(other, x, "cpu", tmp_path)
    assert not hit_other and not np.allclose(o, a)
    np.testing.assert_allclose(o, predict_logits(other, x, "cpu"), atol=1e-6)
    for p in (tmp_path / "teacher-outputs").iterdir():  # a damaged entry is recomputed, not trusted
        p.write_bytes(b"broken")
    c, hit_c = teacher_outputs(teacher, x, "cpu", tmp_path)
    assert not hit_c and np.array_equal(c, a)


@pytest.mark.parametrize("arch, opts, params", [
    ("resnet8", {}, 78_042), ("resnet20", {}, 272_474), ("resnet8", {"width": 2.0}, 308_650),
    ("mobilenet_v2", {"width": 0.5}, 700_490), ("mobilenet_v3_small", {"width": 0.75}, 892_610),
])
def test_student_architectures_and_options(arch, opts, params):
    net = build_model(arch, 10, **opts).eval()
    assert count_params(net) == params
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_stem_keeps_resolution():
    def first_map(net):
        shapes = []
        h = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)).register_forward_hook(
            lambda m, i, o: shapes.append(o.shape[-1]))
        net.eval()(torch.zeros(1, 3, 32, 32))
        h.remove()
        return shapes[0]

    assert first_map(build_model("resnet18", 10, stem="imagenet")) == 16
    assert first_map(build_model("resnet18", 10, stem="cifar")) == 32
    assert first_map(build_model("resnet18", 10, stem="auto", image_size=32)) == 32
    assert first_map(build_model("resnet18", 10, stem="auto", image_size=224)) == 16  # imagenet stem
    assert first_map(build_model("mobilenet_v2", 10, stem="cifar")) == 32


def test_option_and_name_errors_list_the_choices():
    with pytest.raises(ConfigError, match="has no option width = 2.0; it takes: no options"):
        build_model("digits_student", 10, width=2.0)
    with pytest.raises(ConfigError, match="it takes: stem"):
        build_model("resnet18", 10, width=0.5)
    with pytest.raises(ConfigError, match="unknown model architecture 'resnet7'.*resnet8.*any torchvision"):
        build_model("resnet7", 10)
    assert build_model("squeezenet1_1", 7)(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_crop_flip_is_a_shift_and_a_mirror():
    x = torch.arange(4 * 8 * 8 * 3).reshape(4, 8, 8, 3).to(torch.uint8)
    out, flipped = crop_flip_batch(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(4):
        assert torch.equal(out[i], x[i].flip(1) if flipped[i] else x[i])
    shifted, _ = crop_flip_batch(x, torch.Generator().manual_seed(1), pad=2)
    assert shifted.shape == x.shape and shifted.dtype == torch.uint8
    assert not torch.equal(shifted, x)


def test_build_with_npz_data_and_torchscript_teacher(tmp_path, digits, trained_pair, env):
    """A whole `edgekd build` on user data (.npz) with a user teacher (TorchScript), the sweep on a
    subset, and the teacher-output cache reused by a second build."""
    from conftest import edgekd
    from sklearn.datasets import load_digits as sk_load

    from edgekd.data import upscale_gray
    from edgekd.harness import accuracy

    d = sk_load()
    np.savez(tmp_path / "digits.npz", x=upscale_gray(d.images / 16.0, 32), y=d.target,
             classes=np.array([str(c) for c in d.target_names]))
    torch.jit.save(torch.jit.trace(trained_pair[0].net, torch.zeros(1, 3, 32, 32)), tmp_path / "teacher.ts")
    (tmp_path / "b.toml").write_text(f"""
[data]
name = "npz"
path = "digits.npz"
[teacher]
weights = "teacher.ts"
mean = {list(digits.mean)}
std = {list(digits.std)}
[compute]
device = "cpu"
[distill]
epochs = 2
[robustness]
perturbations = ["common"]
epsilons = [2]
sample_images = 60
[gate]
adversarial_epsilon = 2
""")
    proc = edgekd("build", "-c", "b.toml", "-o", "out", "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    teacher_pred = predict_logits(trained_pair[0], digits.test.x, "cpu").argmax(1)
    assert report["models"]["teacher"]["accuracy"]["clean"] == accuracy(teacher_pred, digits.test.y)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["format"] == "torchscript"
    assert manifest["stages"]["distill"]["teacher_outputs"]["computed"] == 1
    preds = np.load(out / "predictions.npz")
    assert preds["sweep_index"].shape == (60,) and preds["student_int8/fog/3"].shape == (60,)
    assert preds["student_int8/clean"].shape == (len(digits.test),)
    gate = json.loads((out / "gate.json").read_text())
    mca = next(c for c in gate["checks"] if c["id"] == "student_int8.mca_drop")
    assert "resamples of 60 images" in mca["detail"]
    again = edgekd("build", "-c", "b.toml", "-o", "out2", "--quiet", "--set", "robustness.enabled=false",
                   cwd=tmp_path, env=env)
    assert again.returncode in (0, 1), again.stderr
    m2 = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert m2["stages"]["distill"]["teacher_outputs"]["from_cache"] == 1
