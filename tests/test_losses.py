"""Distillation methods: pinned values of every formula (recomputed from plain torch ops and pinned
as literals), gradients, PGD bounds, layer-mapping errors, and a short distill() run per method."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from edgekd import losses as L
from edgekd.config import DistillConfig, load_config
from edgekd.data import Split
from edgekd.distill import LOSSES, distill, predict_logits
from edgekd.errors import ConfigError
from edgekd.models import Preprocessed, build_model

S = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
T = torch.tensor([[0.0, 1.0, 0.5], [0.3, 0.3, -0.2]])
S_ADV = torch.tensor([[0.2, 0.4, -0.3], [-0.5, 1.0, 0.0]])
Y = torch.tensor([0, 2])


def kl(p_logits, q_logits, t=1.0):
    """KL(softmax(p / t) || softmax(q / t)) per row, averaged: sum p (log p - log q), by hand."""
    p_logits, q_logits = p_logits.double(), q_logits.double()
    p = torch.exp(p_logits / t) / torch.exp(p_logits / t).sum(1, keepdim=True)
    q = torch.exp(q_logits / t) / torch.exp(q_logits / t).sum(1, keepdim=True)
    return (p * (p.log() - q.log())).sum(1).mean()


def ce(z, y):
    z = z.double()
    return -(z.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(z, 1)).mean()


def test_method_choices_are_the_registry_and_have_paper_docstrings():
    from dataclasses import fields

    choices = {f.name: f for f in fields(DistillConfig)}["loss"].metadata["choices"]
    assert list(choices) == LOSSES.names() and "rslad" in choices and "hintn" not in choices
    help_text = {f.name: f for f in fields(DistillConfig)}["loss"].metadata["help"]
    for name in LOSSES:
        assert name in help_text
        doc = LOSSES.get(name).__doc__
        assert doc and doc.strip().splitlines()[0]
    for name, year in [("hinton", "2015"), ("fitnets", "2015"), ("attention", "2017"),
                       ("augmix_js", "2020"), ("ard", "2020"), ("rslad", "2021")]:
        assert year in LOSSES.get(name).__doc__


def test_capabilities_are_flags_on_the_registered_entries():
    assert L.loss_names(step=False) == ["hinton", "ce"]
    assert L.loss_names(uses_teacher=False) == ["ce"]
    assert L.loss_names(needs_teacher=True) == L.loss_names(feature_layers=True) == ["fitnets", "attention"]
    assert L.loss_names(regressors=True) == ["fitnets"]
    assert L.loss_names(needs_views=True) == ["augmix_js"]
    assert L.loss_names(adversarial=True) == ["ard", "rslad"]
    assert L.loss_names(uses_teacher=True, feature_layers=False) == ["hinton", "augmix_js", "ard", "rslad"]
    assert L.loss_spec("rslad") is LOSSES.get("rslad").spec
    with pytest.raises(ConfigError, match="unknown distillation loss 'hintn'; valid: hinton"):
        L.loss_spec("hintn")
    with pytest.raises(TypeError, match="no LossSpec flag"):
        L.loss_names(adverserial=True)
    for bad in (dict(feature_layers=True), dict(step=True, feature_layers=True),
                dict(step=True, needs_teacher=True, regressors=True), dict(step=True, needs_teacher=True,
                                                                           uses_teacher=False)):
        with pytest.raises(ValueError):
            L.LossSpec(**bad)
    assert L.spec_of(lambda s, t, y, cfg: s.sum()) == L.LossSpec()  # registered bare: a logit loss


def test_no_module_tests_a_method_by_name():
    """Config validation, preflight, training and the report ask the flags, never the name."""
    import pathlib
    import re

    pattern = re.compile(r"""\bloss\s*(==|!=|\bin\b)\s*[("']""")
    root = pathlib.Path(L.__file__).parent
    hits = [f"{f.relative_to(root)}:{i}: {line.strip()}" for f in sorted(root.rglob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


@pytest.fixture
def new_methods():
    """Methods registered from outside the package, as a newcomer would (one place, losses'
    decorators), and unregistered afterwards."""
    names = ["test_soft", "test_labels", "test_feat", "test_views", "test_adv"]

    @L.logit_loss("test_soft")
    def soft_only(student_logits, teacher_logits, labels, cfg):
        """Test 2024: the soft-target term alone."""
        return L.kd_term(student_logits, teacher_logits, cfg.temperature)

    @L.logit_loss("test_labels", uses_teacher=False)
    def labels_only(student_logits, teacher_logits, labels, cfg):
        """Test 2024: cross-entropy."""
        return L.hard_ce(student_logits, labels, cfg)

    def step(ctx):
        z = ctx.student(ctx.x)
        return L.hinton_kd(z, ctx.teacher_logits, ctx.labels, ctx.cfg), z

    L.step_method("test_feat", needs_teacher=True, feature_layers=True)(step)
    L.step_method("test_views", needs_views=True)(lambda ctx: step(ctx))
    L.step_method("test_adv", adversarial=True)(lambda ctx: step(ctx))
    try:
        yield names
    finally:
        for n in names:
            del LOSSES._items[n]  # the Registry has no public removal


def test_a_new_method_is_accepted_everywhere_without_editing_config(new_methods, digits):
    from edgekd.losses import training_meta
    from edgekd.pipeline import teacher_train_targets

    for name in new_methods:
        assert name in L.loss_names()
    assert load_config(None, ["distill.loss=test_soft"]).distill.loss == "test_soft"
    # its flags drive the config's cross checks, as the built-in methods' do
    with pytest.raises(ConfigError, match="'test_feat' needs distill.feature_layers"):
        load_config(None, ["distill.loss=test_feat"])
    assert load_config(None, ["distill.loss=test_feat", 'distill.feature_layers=["6:6"]']).distill.feature_layers
    with pytest.raises(ConfigError, match="'test_views' makes its augmented views from distill.augment"):
        load_config(None, ["distill.loss=test_views", "distill.augment=[]"])
    # ... the report's training record
    adv = training_meta(load_config(None, ["distill.loss=test_adv"]).distill)
    assert adv["training_adversarial"]["method"] == "test_adv"
    views = training_meta(load_config(None, ["distill.loss=test_views", "distill.augment_prob=0"]).distill)
    assert views["training_perturbations"] and views["training_augment"] is None
    assert not L.batch_augmentation_on(load_config(None, ["distill.loss=test_views"]).distill)
    # ... preflight's advice and the build's soft targets (none for a labels-only loss)
    assert "test_soft" in L.loss_names(uses_teacher=True, feature_layers=False)
    cfg = load_config(None, ["distill.loss=test_labels"])
    logits, _, rec = teacher_train_targets(cfg, None, digits, "cpu")
    assert not logits.any() and rec == {"computed": 0, "from_cache": 0}
    # ... and training
    train = _subset(digits.train, 64)
    for name in ("test_soft", "test_labels"):
        torch.manual_seed(0)
        student = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
        view = "same" if name == "test_labels" else "cached"  # labels only: "same" needs no teacher
        d = load_config(None, ["distill.epochs=1", "distill.min_steps=0", f"distill.loss={name}",
                               f"distill.teacher_view={view}"]).distill
        log = distill(student, np.zeros((64, 10), np.float32), train, d, "cpu", progress=False)["log"]
        assert math.isfinite(log[0]["loss"])


def test_new_methods_are_gone_after_the_fixture():
    assert "test_soft" not in LOSSES
    with pytest.raises(ConfigError, match="'test_soft' is not one of hinton"):
        load_config(None, ["distill.loss=test_soft"])


def test_hinton_and_ce_unchanged():
    cfg = DistillConfig(temperature=2.0, alpha=0.75)
    expected = 0.25 * ce(S, Y) + 0.75 * 4 * kl(T, S, 2.0)
    got = LOSSES.get("hinton")(S, T, Y, cfg)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    assert got.item() == pytest.approx(0.4237, abs=1e-4)
    assert LOSSES.get("ce")(S, T, Y, cfg).item() == pytest.approx(ce(S, Y).item(), abs=1e-6)
    assert LOSSES.get("ce")(S, T, Y, cfg).item() == pytest.approx(0.8439, abs=1e-4)
    assert not L.is_step_method(LOSSES.get("hinton")) and L.is_step_method(LOSSES.get("rslad"))


def test_kd_term_pinned():
    assert L.kd_term(S, T, 4.0).item() == pytest.approx(16 * kl(T, S, 4.0).item(), abs=1e-6)
    assert L.kd_term(S, T, 4.0).item() == pytest.approx(0.2924, abs=1e-4)


def test_ard_loss_pinned():
    t, a = 4.0, 0.9
    expected = a * t * t * kl(T, S_ADV, t) + (1 - a) * ce(S, Y)
    got = L.ard_loss(S_ADV, S, T, Y, t, a).item()
    assert got == pytest.approx(expected.item(), abs=1e-6)
    assert got == pytest.approx(0.2130, abs=1e-4)


def test_rslad_loss_pinned():
    expected = 5 / 6 * kl(T, S_ADV) + 1 / 6 * kl(T, S)
    got = L.rslad_loss(S_ADV, S, T).item()
    assert got == pytest.approx(expected.item(), abs=1e-6)
    assert got == pytest.approx(0.1559, abs=1e-4)
    assert L.rslad_loss(T, T, T).item() == pytest.approx(0.0, abs=1e-7)


def test_js_consistency_pinned():
    ps = [torch.softmax(z, 1) for z in (S, T, S_ADV)]
    m = sum(ps) / 3
    expected = sum((p * (p.log() - m.log())).sum(1).mean() for p in ps) / 3
    got = L.js_consistency(S, T, S_ADV).item()
    assert got == pytest.approx(expected.item(), abs=1e-6)
    assert got == pytest.approx(0.0678, abs=1e-4)
    assert L.js_consistency(S, S, S).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 <= got <= math.log(3)  # JS over 3 distributions is bounded by log 3


FS = [torch.linspace(-1, 1, 2 * 2 * 4 * 4).reshape(2, 2, 4, 4), torch.linspace(0, 2, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)]
FT = [torch.linspace(1, -0.5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4), torch.cos(torch.arange(2 * 4 * 4 * 4.0)).reshape(2, 4, 4, 4)]


def test_attention_transfer_pinned():
    beta = 1000.0
    expected = 0.0
    for s, t in zip(FS, FT):
        if t.shape[-1] != s.shape[-1]:  # 4x4 teacher map averaged down to the student's 2x2
            t = t.reshape(2, 4, 2, 2, 2, 2).mean((3, 5))
        qs, qt = s.pow(2).mean(1).reshape(2, -1), t.pow(2).mean(1).reshape(2, -1)
        qs, qt = qs / qs.norm(dim=1, keepdim=True), qt / qt.norm(dim=1, keepdim=True)
        expected += ((qs - qt) ** 2).mean().item()
    expected *= beta / 2
    got = L.attention_transfer_loss(FS, FT, beta).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got == pytest.approx(50.6871, abs=1e-3)
    assert L.attention_transfer_loss(FS, FS, beta).item() == pytest.approx(0.0, abs=1e-6)


def test_hint_loss_pinned():
    reg = [torch.nn.Conv2d(2, 3, 1, bias=False), torch.nn.Conv2d(3, 4, 1, bias=False)]
    with torch.no_grad():
        reg[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]).view(3, 2, 1, 1))
        reg[1].weight.copy_(torch.full((4, 3, 1, 1), 0.1))
    out = [r(f) for r, f in zip(reg, FS)]
    # by hand: the 1x1 convs as channel mixes, the 4x4 teacher map pooled to 2x2
    r0 = torch.stack([FS[0][:, 0], FS[0][:, 1], 0.5 * (FS[0][:, 0] + FS[0][:, 1])], 1)
    r1 = 0.1 * FS[1].sum(1, keepdim=True).expand(2, 4, 2, 2)
    t1 = FT[1].reshape(2, 4, 2, 2, 2, 2).mean((3, 5))
    expected = ((r0 - FT[0]) ** 2).mean() + ((r1 - t1) ** 2).mean()
    got = L.hint_loss(out, FT).item()
    assert got == pytest.approx(expected.item(), abs=1e-6)
    assert got == pytest.approx(1.2029, abs=1e-4)


def _pair(seed=0):
    torch.manual_seed(seed)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    return (Preprocessed(build_model("digits_student", 10), mean, std),
            Preprocessed(build_model("digits_teacher", 10), mean, std))


def test_pgd_stays_in_the_ball_and_the_pixel_range_and_raises_the_kl():
    student, teacher = _pair()
    student.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 16, 16, 3), generator=gen, dtype=torch.uint8)
    x[:2] = 0  # the clamp at the range's ends
    x[2:4] = 255
    with torch.no_grad():
        target = teacher.eval()(x)
    adv = L.pgd_kl(student, x, target, 1.0, eps=4.0, step_size=1.0, steps=5, gen=gen)
    assert (adv - x.float()).abs().max() <= 4.0 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 255
    assert (adv - x.float()).abs().max() > 1.0  # it moved
    with torch.no_grad():
        assert L.kl_batchmean(target, student(adv)) > L.kl_batchmean(target, student(x))


def _ctx(method, student, teacher, cfg, taps=None, aux=None, n=6):
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 16, 16, 3), generator=gen, dtype=torch.uint8)
    with torch.no_grad():
        t = teacher.eval()(x)
    views = lambda xb, idx: (255 - xb)  # noqa: E731 - any perturbation will do here
    return L.StepContext(student=student.train(), teacher=teacher, x=x, idx=np.arange(n),
                         teacher_logits=t, labels=torch.arange(n) % 10, cfg=cfg, views=views,
                         taps=taps, aux=aux, gen=gen)


@pytest.mark.parametrize("name", ["fitnets", "attention", "augmix_js", "ard", "rslad"])
def test_gradient_reaches_the_student_and_the_regressors(name):
    student, teacher = _pair()
    cfg = DistillConfig(loss=name, feature_layers=["6:6", "10:14"], adv_steps=2)
    taps = aux = None
    if name in ("fitnets", "attention"):
        taps = L.FeatureTaps(student, teacher, L.parse_layer_pairs(cfg.feature_layers))
        if name == "fitnets":
            ch = taps.channels(student, teacher, torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
            assert ch == [(32, 64), (64, 256)]
            aux = L.make_regressors(ch)
    loss, logits = LOSSES.get(name)(_ctx(name, student, teacher, cfg, taps, aux))
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.shape == (6, 10)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    if aux is not None:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aux.parameters())
    assert student.training  # PGD's eval-mode attack hands the student back in train mode


def test_feature_method_without_its_teacher_features_is_bigger_than_hinton():
    student, teacher = _pair()
    cfg = DistillConfig(loss="attention", feature_layers=["2:2"])
    taps = L.FeatureTaps(student, teacher, L.parse_layer_pairs(cfg.feature_layers))
    ctx = _ctx("attention", student, teacher, cfg, taps)
    loss, logits = LOSSES.get("attention")(ctx)
    hinton = LOSSES.get("hinton")(logits, ctx.teacher_logits, ctx.labels, cfg)
    at = L.attention_transfer_loss([taps.student[0]], [taps.teacher[0]], cfg.at_beta)
    assert loss.item() == pytest.approx((hinton + at).item(), rel=1e-5) and at.item() > 0


def test_bad_layer_names_are_named_with_valid_choices():
    student, teacher = _pair()
    with pytest.raises(ConfigError, match=r"student has no module '99'.*include: 0, 1, 2"):
        L.FeatureTaps(student, teacher, [("99", "6")])
    with pytest.raises(ConfigError, match=r"teacher has no module 'layer4'"):
        L.check_layer_names(student.net, teacher.net, ["6:layer4"])
    with pytest.raises(ConfigError, match="must look like 'student_module:teacher_module'"):
        load_config(None, ['distill.feature_layers=["6"]'])
    with pytest.raises(ConfigError, match="needs distill.feature_layers"):
        load_config(None, ["distill.loss=fitnets"])
    with pytest.raises(ConfigError, match="is not one of hinton, ce, fitnets"):
        load_config(None, ["distill.loss=fitnet"])
    with pytest.raises(ConfigError, match="augmix_js.*distill.augment, which is empty"):
        load_config(None, ["distill.loss=augmix_js", "distill.augment=[]"])
    with pytest.raises(ConfigError, match="does not output a 4-D"):
        taps = L.FeatureTaps(student, teacher, [("13", "6")])  # 13 = the flatten before the head
        taps.channels(student, teacher, torch.zeros(1, 16, 16, 3, dtype=torch.uint8))


def test_a_torchscript_teacher_is_refused_for_feature_methods():
    student, teacher = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        scripted = Preprocessed(torch.jit.script(teacher.net), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ConfigError, match="teacher is a TorchScript module.*do not call forward hooks"):
        L.FeatureTaps(student, scripted, [("6", "6")])


def test_preflight_rejects_a_bad_layer_before_training():
    from edgekd.pipeline import preflight

    cfg = load_config(None, ["distill.loss=attention", 'distill.feature_layers=["6:60"]'])
    with pytest.raises(ConfigError, match="teacher has no module '60'"):
        preflight(cfg)


def _subset(split: Split, n: int) -> Split:
    return Split(split.x[:n], split.y[:n], split.indices[:n])


@pytest.mark.parametrize("name", ["fitnets", "attention", "augmix_js", "ard", "rslad", "hinton", "ce"])
def test_each_method_trains_a_digits_student(name, trained_pair, digits):
    teacher, _ = trained_pair
    train = _subset(digits.train, 128)
    logits = predict_logits(teacher, train.x, "cpu")
    cfg = load_config(None, ["distill.epochs=1", "distill.min_steps=0", f"distill.loss={name}",
                             "distill.adv_steps=2", 'distill.feature_layers=["6:6", "10:10"]',
                             "distill.batch_size=64"]).distill
    torch.manual_seed(0)
    student = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
    teacher_before = copy.deepcopy(teacher.state_dict())
    keys_before = set(student.state_dict())
    log = distill(student, logits, train, cfg, "cpu", progress=False, teacher=teacher)["log"]
    assert len(log) == 1 and math.isfinite(log[0]["loss"])
    assert set(student.state_dict()) == keys_before  # no regressor left inside the student
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_default_distillation_is_unchanged_by_the_new_options(trained_pair, digits):
    """hinton with the training-only augmentation trains exactly as before: the new options, set to
    anything, change nothing (no extra RNG draws, same optimiser)."""
    teacher, _ = trained_pair
    train = _subset(digits.train, 192)
    logits = predict_logits(teacher, train.x, "cpu")
    states = []
    for extra in ([], ["distill.js_weight=3", "distill.adv_steps=3", 'distill.feature_layers=["2:2"]']):
        cfg = load_config(None, ["distill.epochs=1", "distill.min_steps=0", *extra]).distill
        torch.manual_seed(0)
        student = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
        distill(student, logits, train, cfg, "cpu", progress=False, teacher=teacher)
        states.append(student.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_report_says_when_the_student_trained_adversarially():
    from edgekd.report import markdown_sections

    acc = {"clean": 0.9, "mca": 0.8, "corruptions": {"fog": [0.8] * 5}, "missing": {},
           "adversarial": {"pgd": {"8": 0.3}}}
    report = {"models": {"teacher": {"accuracy": acc}, "student_torch": {"accuracy": acc}},
              "robustness": {"training_method": "rslad", "training_perturbations": ["occlusion"],
                             "training_overlaps_evaluation": [],
                             "training_adversarial": {"method": "rslad", "epsilon_255": 8.0, "steps": 10,
                                                      "step_size_255": 2.0}}}
    text = "\n".join(markdown_sections(report))
    assert "Student trained adversarially (rslad: PGD on the student, eps 8/255, 10 steps)" in text
    assert "Student distilled with `rslad`, trained with perturbations: occlusion (disjoint from the 15" in text
    report["robustness"]["training_adversarial"] = None
    assert "adversarially" not in "\n".join(markdown_sections(report))


@pytest.mark.parametrize("overrides, method, seen", [
    ([], "hinton", ["speckle_noise", "gaussian_blur", "spatter", "occlusion", "pixel_dropout"]),
    (["distill.augment_prob=0"], "hinton", []),  # listed in the config but never applied
    (["distill.augment_prob=0", "distill.loss=augmix_js"], "augmix_js",  # views ignore augment_prob
     ["speckle_noise", "gaussian_blur", "spatter", "occlusion", "pixel_dropout"]),
    (["distill.augment=[]", "distill.loss=rslad"], "rslad", []),
    (["distill.epochs=0"], None, []),  # no distillation: nothing was trained
])
def test_training_meta_lists_only_what_the_student_saw(overrides, method, seen):
    from edgekd.losses import training_meta

    meta = training_meta(load_config(None, overrides).distill)
    assert meta["training_method"] == method
    assert meta["training_perturbations"] == seen
    assert meta["training_overlaps_evaluation"] == []
    assert (meta["training_adversarial"] is not None) == (method == "rslad")
    # batch-level augmentation (fraction, mode, target) only where the batches were perturbed
    assert (meta["training_augment"] is not None) == (bool(seen) and method == "hinton")


def test_report_says_how_perturbed_images_entered_the_batches():
    from edgekd.losses import training_meta
    from edgekd.report import markdown_sections

    meta = training_meta(load_config(None, ["distill.augment_prob=0.25", "distill.augment_mode=append"]).distill)
    assert meta["training_augment"] == {"prob": 0.25, "mode": "append", "target": "clean"}
    acc = {"clean": 0.9, "mca": 0.8, "corruptions": {"fog": [0.8] * 5}, "missing": {}}
    report = {"models": {"teacher": {"accuracy": acc}, "student_torch": {"accuracy": acc}}, "robustness": meta}
    text = "\n".join(markdown_sections(report))
    assert ("trained with perturbations: speckle_noise, gaussian_blur, spatter, occlusion, pixel_dropout, "
            "on 25 % of each batch, appended to the clean batch (soft target: the teacher on the clean "
            "image) (disjoint from the 15") in text


def test_html_report_says_how_the_student_was_trained():
    from edgekd.html_report import _training_html

    rob = {"training_method": "hinton", "training_perturbations": ["fog", "occlusion"],
           "training_overlaps_evaluation": ["fog"], "training_adversarial": None}
    html = _training_html(rob)
    assert 'data-method="hinton"' in html and "<code>hinton</code>" in html
    assert "overlaps the evaluated corruptions fog: robustness figures are inflated" in html
    rob.update(training_method="ard", training_perturbations=[], training_overlaps_evaluation=[],
               training_adversarial={"method": "ard", "epsilon_255": 8.0, "steps": 3, "step_size_255": 3.0})
    html = _training_html(rob)
    assert "perturbations: none" in html and "inflated" not in html
    assert "trained adversarially (ard: PGD on the student, eps 8/255, 3 steps)" in html
    assert _training_html({}) == ""
