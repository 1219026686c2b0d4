"""The training recipe: optimisers, schedules, label smoothing, EMA, best-epoch selection on the
validation split (never the test split), calibration drawn from the training images, the teacher's
check against chance, and teachers fine-tuned from published weights."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.config import DistillConfig, load_config
from edgekd.data import Split, split_dataset
from edgekd.distill import distill, make_validator, predict_logits
from edgekd.errors import ConfigError, InputError
from edgekd.losses import LOSSES
from edgekd.models import Preprocessed, build_model
from edgekd.training import Recipe, make_optimizer


def _student(digits, seed=0):
    torch.manual_seed(seed)
    return Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)


def _accuracy(model, split):
    return float((predict_logits(model, split.x, "cpu").argmax(1) == split.y).mean())


# --- optimiser and schedule ------------------------------------------------------------------------

def test_sgd_is_nesterov_with_no_weight_decay_on_batchnorm_and_biases(digits):
    net = build_model("resnet8", 10)
    opt, _ = make_optimizer([net], Recipe.from_config(DistillConfig()), 100)
    assert isinstance(opt, torch.optim.SGD)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert decayed["nesterov"] and decayed["momentum"] == pytest.approx(0.95)  # one-cycle: 0.9 + 0.05 at the start
    bn_and_bias = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    bn_and_bias |= {id(m.bias) for m in net.modules() if isinstance(m, torch.nn.Linear)}
    assert bn_and_bias == {id(p) for p in plain["params"]}
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(net.parameters()))


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw_stay_selectable(name, cls):
    net = build_model("digits_student", 10)
    opt, _ = make_optimizer([net], Recipe.from_config(DistillConfig(optimizer=name, lr=5e-3)), 10)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == pytest.approx(5e-3 / 25)  # one-cycle start


def _lrs(schedule, steps=100, warm=0.2, lr=0.2):
    net = torch.nn.Linear(2, 2)
    opt, sched = make_optimizer([net], Recipe(epochs=1, batch_size=1, lr=lr, seed=0, optimizer="sgd",
                                              schedule=schedule, warmup_fraction=warm), steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def test_onecycle_warms_up_to_the_peak_then_anneals():
    lrs = _lrs("onecycle")
    assert lrs.argmax() in (19, 20) and lrs.max() == pytest.approx(0.2, rel=1e-3)
    assert np.all(np.diff(lrs[:20]) > 0) and np.all(np.diff(lrs[21:]) < 0)
    assert lrs[-1] < 1e-4


def test_cosine_warms_up_linearly_then_decays_to_zero():
    lrs = _lrs("cosine")
    assert np.allclose(lrs[:20], 0.2 * np.arange(1, 21) / 20)
    assert lrs[60] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lrs[-1] < 1e-3 and np.all(np.diff(lrs[20:]) <= 0)


def test_cosine_keeps_the_momentum_and_onecycle_cycles_it_around_it():
    net = torch.nn.Linear(2, 2)
    for schedule, at_peak in (("cosine", 0.8), ("onecycle", 0.75)):
        opt, sched = make_optimizer([net], Recipe(epochs=1, batch_size=1, lr=0.1, seed=0, optimizer="sgd",
                                                  momentum=0.8, schedule=schedule, warmup_fraction=0.5), 10)
        for _ in range(4):  # one-cycle's peak: step pct_start * total - 1
            opt.step()
            sched.step()
        assert opt.param_groups[0]["momentum"] == pytest.approx(at_peak)


def test_constant_schedule_keeps_the_rate():
    assert np.allclose(_lrs("constant"), 0.2)


def test_min_steps_raises_the_epochs_on_small_data():
    r = Recipe(epochs=12, batch_size=64, lr=0.1, seed=0, min_steps=250)
    assert r.epochs_for(220) == 63  # 4 steps an epoch
    assert r.epochs_for(1294) == 12  # 21 steps an epoch: already 252
    assert dataclasses.replace(r, epochs=0).epochs_for(10) == 0  # 0 still means untrained


def test_label_smoothing_enters_the_hard_label_terms():
    z, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    smoothed = DistillConfig(label_smoothing=0.1)
    assert LOSSES.get("ce")(z, z, y, smoothed).item() == pytest.approx(
        F.cross_entropy(z, y, label_smoothing=0.1).item())
    t = torch.randn(8, 10)
    cfg = DistillConfig(label_smoothing=0.1, alpha=0.5)
    plain = LOSSES.get("hinton")(z, t, y, dataclasses.replace(cfg, label_smoothing=0.0)).item()
    diff = LOSSES.get("hinton")(z, t, y, cfg).item() - plain
    assert diff == pytest.approx(0.5 * (F.cross_entropy(z, y, label_smoothing=0.1) - F.cross_entropy(z, y)).item(),
                                 abs=1e-6)


# --- best-epoch selection, EMA ---------------------------------------------------------------------

def _kd_cfg(**kw):
    return DistillConfig(**{"epochs": 4, "augment": [], "loss": "ce", "min_steps": 0, **kw})


def test_the_kept_epoch_is_the_best_on_validation_and_its_weights_are_restored(digits):
    student = _student(digits)
    zeros = np.zeros((len(digits.train), 10), np.float32)
    rec = distill(student, zeros, digits.train, _kd_cfg(epochs=5, lr=0.3), "cpu", progress=False, val=digits.val)
    scores = [row["val_score"] for row in rec["log"]]
    best = int(np.argmax(scores)) + 1  # first best, as kept
    assert rec["kept"]["kept_epoch"] == best and rec["kept"]["selection"] == "clean"
    assert rec["kept"]["val_score"] == pytest.approx(max(scores))
    assert _accuracy(student, digits.val) == pytest.approx(max(scores))  # those weights are the model's now


def test_select_last_keeps_the_last_epoch_and_scores_nothing(digits):
    student = _student(digits)
    zeros = np.zeros((len(digits.train), 10), np.float32)
    rec = distill(student, zeros, digits.train, _kd_cfg(epochs=2, select="last"), "cpu", progress=False,
                  val=digits.val)
    assert rec["kept"]["kept_epoch"] == 2 and all("val_score" not in r for r in rec["log"])
    assert all(r["images_per_s"] > 0 for r in rec["log"])


def test_early_stopping_ends_training_after_patience_epochs_without_progress(digits):
    calls = []

    def validate(_model):
        calls.append(1)
        return 0.5  # never improves after the first epoch

    from edgekd.distill import _fit

    recipe = Recipe.from_config(_kd_cfg(epochs=10, early_stop_patience=2))
    rec = _fit(_student(digits), digits.train, None, recipe, "cpu", False, "student",
               lambda s, _t, y: F.cross_entropy(s, y), validate=validate)
    assert len(rec["log"]) == 3 and rec["kept"]["kept_epoch"] == 1 and rec["epochs"] == 10


def test_ema_weights_are_the_ones_kept():
    from edgekd.training import BestEpoch

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    keeper = BestEpoch(net, Recipe(epochs=1, batch_size=1, lr=0.1, seed=0, ema_decay=0.9), None)
    expected = {k: v.clone().float() for k, v in net.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(float(step + 1))
            net[1].running_mean.add_(1.0)
        keeper.after_step()
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = v.clone().float() if step == 0 else 0.9 * expected[k] + 0.1 * v
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    rec = keeper.restore()
    assert rec["ema"] and rec["kept_epoch"] == 0
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, expected[k], atol=1e-5), k
            if not k.endswith("running_var"):  # the only float tensor the loop leaves alone
                assert not torch.equal(v, raw[k])


def test_perturbed_selection_scores_perturbed_validation_images(digits):
    from edgekd.distill import perturbed_copy

    cfg = _kd_cfg(select="perturbed", augment=["gaussian_blur", "pixel_dropout"])
    student = _student(digits)
    distill(student, np.zeros((len(digits.train), 10), np.float32), digits.train, cfg, "cpu",
            progress=False)
    images = perturbed_copy(digits.val, cfg.augment, cfg.seed + 5)
    changed = (images != digits.val.x).reshape(len(images), -1).any(1)
    assert changed.mean() > 0.9  # every image perturbed (a mild severity may leave a flat one alone)
    assert np.array_equal(images, perturbed_copy(digits.val, cfg.augment, cfg.seed + 5))  # seeded
    expected = float((predict_logits(student, images, "cpu").argmax(1) == digits.val.y).mean())
    assert make_validator(digits.val, "perturbed", cfg, "cpu")(student) == expected
    assert make_validator(digits.val, "clean", cfg, "cpu")(student) == _accuracy(student, digits.val)
    with pytest.raises(ConfigError, match="distill.augment"):
        load_config(None, ["distill.select=perturbed", "distill.augment=[]"])


def test_the_test_split_is_never_read_in_training(cfg, digits):
    """Teacher training, the teacher check and distillation give bit-identical weights whatever the
    test split holds (here: noise and shuffled labels)."""
    from edgekd.pipeline import prepare_teacher

    rng = np.random.default_rng(1)
    noise = Split(rng.integers(0, 256, digits.test.x.shape, dtype=np.uint8), rng.permutation(digits.test.y),
                  digits.test.indices)
    c = load_config(None, ["teacher.epochs=1", "teacher.min_steps=0", "distill.epochs=2",
                           "distill.augment=[]"])
    weights = []
    for ds in (digits, dataclasses.replace(digits, test=noise)):
        torch.manual_seed(0)
        teacher, _ = prepare_teacher(c, ds, "cpu", progress=False)
        student = _student(ds)
        logits = predict_logits(teacher, ds.train.x, "cpu")
        distill(student, logits, ds.train, c.distill, "cpu", progress=False, val=ds.val)
        weights.append(student.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


# --- splits ----------------------------------------------------------------------------------------

def _split(n_per_class=60, **kw):
    y = np.repeat(np.arange(3), n_per_class)
    x = np.zeros((len(y), 8, 8, 3), np.uint8)
    x[..., 0] = np.arange(len(y))[:, None, None] % 256
    cfg = load_config(None, [f"data.{k}={v}" for k, v in kw.items()]).data
    return split_dataset("toy", ["a", "b", "c"], x, y, cfg)


def test_calibration_comes_from_the_training_images_by_default():
    ds = _split(calib_samples=20, test_fraction=0.2, val_fraction=0.1)
    n = 180
    assert len(ds.test) == 36 and len(ds.val) == 14 and len(ds.train) == n - 36 - 14  # every other image trains
    assert set(ds.calib.indices) <= set(ds.train.indices) and len(ds.calib) == 20
    assert not set(ds.val.indices) & set(ds.train.indices)
    assert not set(ds.test.indices) & (set(ds.train.indices) | set(ds.val.indices))


def test_held_out_calibration_stays_out_of_training():
    ds = _split(calib_samples=20, test_fraction=0.2, val_fraction=0.1, calib_from="held_out")
    assert len(ds.train) == 180 - 36 - 14 - 20
    assert not set(ds.calib.indices) & (set(ds.train.indices) | set(ds.val.indices) | set(ds.test.indices))


def test_validation_split_is_capped_and_can_be_switched_off():
    assert len(_split(val_fraction=0.5, val_max_images=10).val) == 10
    ds = _split(val_fraction=0)
    assert len(ds.val) == 0 and len(ds.train) == 180 - 36


# --- the teacher: chance check, floors, pretrained -------------------------------------------------

def test_a_chance_level_teacher_fails_with_one_sentence_unless_allowed(digits):
    from edgekd.teachers import check_not_chance

    torch.manual_seed(0)
    useless = Preprocessed(build_model("digits_teacher", 10), digits.mean, digits.std)
    with torch.no_grad():  # predicts class 0 whatever the image
        useless.net[-1].weight.zero_()
        useless.net[-1].bias.copy_(torch.arange(10, 0, -1).float())
    with pytest.raises(InputError) as e:
        check_not_chance(useless.eval(), digits, "cpu", allow=False)
    msg = str(e.value)
    assert "no better than chance" in msg and "teacher.allow_chance_level" in msg and "\n" not in msg
    rec = check_not_chance(useless, digits, "cpu", allow=True)
    assert rec["split"] == "validation" and not rec["passed"]
    assert rec["chance"] == pytest.approx(np.bincount(digits.val.y).max() / len(digits.val))
    assert rec["accuracy"] == pytest.approx(float((digits.val.y == 0).mean()))


def test_a_good_teacher_passes_the_check(trained_pair, digits):
    from edgekd.teachers import check_not_chance

    rec = check_not_chance(trained_pair[0], digits, "cpu", allow=False)
    assert rec["passed"] and rec["accuracy"] > 0.9 and rec["p_value"] < 1e-10


def test_pretrained_teacher_gets_the_published_weights_and_a_new_head(monkeypatch, cfg, digits):
    torchvision = pytest.importorskip("torchvision")
    from edgekd.models import IMAGENET_MEAN
    from edgekd.pipeline import prepare_teacher

    torch.manual_seed(123)
    published = torchvision.models.resnet18().state_dict()  # stands in for the ImageNet weights
    calls = []

    def fake_get_state_dict(self, *a, **kw):
        calls.append(str(self))
        return published

    monkeypatch.setattr(type(torchvision.models.ResNet18_Weights.DEFAULT), "get_state_dict", fake_get_state_dict)
    c = load_config(None, ["teacher.arch=resnet18", "teacher.pretrained=true", "teacher.epochs=0",
                           "teacher.min_steps=0", "teacher.allow_chance_level=true"])
    teacher, rec = prepare_teacher(c, digits, "cpu", progress=False)
    assert calls == ["ResNet18_Weights.IMAGENET1K_V1"] and rec["source"] == "pretrained+fine-tuned"
    sd = teacher.net.state_dict()
    assert torch.equal(sd["layer1.0.conv1.weight"], published["layer1.0.conv1.weight"])
    assert teacher.net.fc.out_features == 10 and teacher.net.fc.in_features == 512
    assert torch.allclose(teacher.mean.flatten(), torch.tensor(IMAGENET_MEAN) * 255)


def test_pretrained_needs_a_torchvision_classifier():
    from edgekd.models import pretrained_model

    with pytest.raises(ConfigError, match="torchvision"):
        pretrained_model("digits_teacher", 10)


# --- a small two-class ImageFolder, as a new user brings it ---------------------------------------

def _two_class_folder(root, digits):
    """train/ and val/ folders of two digit classes (a few hundred PNGs), like a user's photos."""
    from PIL import Image

    x = np.concatenate([digits.train.x, digits.val.x, digits.test.x])
    y = np.concatenate([digits.train.y, digits.val.y, digits.test.y])
    counts = {}
    for i in np.flatnonzero(y < 2):
        part = "val" if counts.get(int(y[i]), 0) % 5 == 4 else "train"  # a fifth to val/
        counts[int(y[i])] = counts.get(int(y[i]), 0) + 1
        d = root / part / ["zero", "one"][y[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(d / f"{i:05d}.png")
    return sum(1 for _ in (root / "train").rglob("*.png")), sum(1 for _ in (root / "val").rglob("*.png"))


def test_small_imagefolder_trains_on_all_but_its_test_and_validation_images(tmp_path, digits):
    from edgekd.data import load_dataset

    n_train, n_test = _two_class_folder(tmp_path / "photos", digits)
    assert 250 < n_train + n_test < 450
    ds = load_dataset(load_config(None, ['data.name="imagefolder"', f'data.path="{tmp_path / "photos"}"']).data)
    assert len(ds.test) == n_test and len(ds.train) + len(ds.val) == n_train  # calibration takes nothing
    assert len(ds.calib) == 200 and set(ds.calib.indices) <= set(ds.train.indices)
    assert len(ds.val) == round(0.1 * n_train)


def test_a_chance_level_teacher_fails_the_build_with_one_sentence(tmp_path, digits, env):
    from conftest import edgekd

    _two_class_folder(tmp_path / "photos", digits)
    torch.manual_seed(0)
    net = build_model("digits_teacher", 2)
    with torch.no_grad():  # says "zero" to everything: 50 % on two balanced classes
        net[-1].weight.zero_()
        net[-1].bias.copy_(torch.tensor([1.0, 0.0]))
    torch.save(net.state_dict(), tmp_path / "teacher.pt")
    proc = edgekd("build", "-o", "out", "--quiet", "--set", 'data.name="imagefolder"',
                  "--set", 'data.path="photos"', "--set", 'teacher.weights="teacher.pt"',
                  "--set", "teacher.arch=digits_teacher", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "no better than chance" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def test_amp_is_a_no_op_on_cpu(digits):
    """distill.amp only acts on CUDA: a CPU run is bit-identical with it on or off."""
    zeros = np.zeros((len(digits.train), 10), np.float32)
    states = []
    for amp in (True, False):
        student = _student(digits)
        distill(student, zeros, digits.train, _kd_cfg(epochs=1, amp=amp, select="last"), "cpu", progress=False)
        states.append(student.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())


def test_the_build_reports_the_kept_epoch_and_the_teacher_check(default_build):
    import json

    work, proc = default_build
    out = work / "out"
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    st = report["training"]["student"]
    log = manifest["stages"]["distill"]["log"]
    scores = [row["val_score"] for row in log]
    assert st["kept"]["kept_epoch"] == int(np.argmax(scores)) + 1 == manifest["stages"]["distill"]["kept"]["kept_epoch"]
    assert st["optimizer"] == "sgd" and st["val_images"] == manifest["dataset"]["sizes"]["val"] > 0
    check = report["training"]["teacher"]["check"]
    assert check["passed"] and check["split"] == "validation" and check["accuracy"] > 0.9
    md = (out / "report.md").read_text()
    assert f"Kept the weights of epoch {st['kept']['kept_epoch']}: the best validation clean accuracy" in md
    assert "validation images held out of training (not the test split)" in md
    assert 'id="selection"' in (out / "report.html").read_text()


def test_crop_flip_gather_equals_pad_crop_and_mirror():
    """The uint8 index_select equals the textbook reflect-pad, crop, mirror, image by image."""
    from edgekd.distill import apply_crop_flip, draw_crop_flip

    x = torch.randint(0, 256, (64, 12, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    shifts = draw_crop_flip(len(x), torch.Generator().manual_seed(1), pad=4)
    out = apply_crop_flip(x, shifts, pad=4)
    padded = F.pad(x.permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="reflect").permute(0, 2, 3, 1)
    dy, dx, flip = shifts
    for i in range(len(x)):
        ref = padded[i, dy[i, 0]:dy[i, 0] + 12, dx[i, 0]:dx[i, 0] + 10].to(torch.uint8)
        assert torch.equal(out[i], ref.flip(1) if flip[i] else ref), i
    assert flip.any() and not flip.all() and len(set(dy.flatten().tolist())) > 3
