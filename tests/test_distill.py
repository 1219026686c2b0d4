import math

import numpy as np
import pytest
import torch

from edgekd.config import DistillConfig
from edgekd.distill import LOSSES, distill
from edgekd.errors import ConfigError
from edgekd.models import Preprocessed, build_model, count_params


def test_hinton_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    cfg = DistillConfig(temperature=2.0, alpha=0.75)
    # by hand: p_t = softmax([0, .5]) , p_s = softmax([.5, 0]); KL(p_t || p_s); CE = -log softmax([1,0])[0]
    pt = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    ps = [pt[1], pt[0]]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    ce = -math.log(math.e / (math.e + 1))
    expected = 0.25 * ce + 0.75 * 4 * kl  # = 0.07833 + 0.36736
    got = LOSSES.get("hinton")(s, t, y, cfg).item()
    assert abs(got - expected) < 1e-6
    assert abs(got - 0.445693) < 1e-5  # pinned value


def test_hinton_is_zero_kl_when_student_equals_teacher_and_alpha_one():
    z = torch.randn(4, 10)
    assert LOSSES.get("hinton")(z, z, torch.zeros(4, dtype=torch.long),
                                DistillConfig(alpha=1.0)).abs().item() < 1e-6


def test_unknown_loss_lists_choices():
    try:
        LOSSES.get("hintn")
    except ConfigError as e:
        assert "hinton" in str(e) and "ce" in str(e)
    else:
        raise AssertionError("no error")


def test_zero_epochs_leaves_student_untouched(digits):
    torch.manual_seed(0)
    st = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
    before = {k: v.clone() for k, v in st.state_dict().items()}
    logits = np.zeros((len(digits.train), 10), np.float32)
    assert distill(st, logits, digits.train, DistillConfig(epochs=0), "cpu", progress=False)["log"] == []
    assert all(torch.equal(before[k], v) for k, v in st.state_dict().items())


def test_distilled_student_learns_and_is_compact(trained_pair, digits):
    teacher, student = trained_pair
    with torch.no_grad():
        acc = (student(torch.from_numpy(digits.test.x)).argmax(1).numpy() == digits.test.y).mean()
    assert acc > 0.85
    assert count_params(teacher.net) >= 5 * count_params(student.net)


def test_augmenter_perturbs_a_fraction_with_training_perturbations(digits):
    from edgekd.distill import make_augmenter

    cfg = DistillConfig(augment=["pixel_dropout"], augment_prob=0.5, seed=3)
    idx = np.arange(64)
    x = digits.train.x[idx]
    xa, ia, t, rows, _src = make_augmenter(cfg, digits.train)(x, idx, None)
    changed = (xa != x).reshape(64, -1).any(1)
    assert 10 < changed.sum() < 54 and t is None and np.array_equal(ia, idx)
    assert not (changed & ~rows).any()  # every changed image is reported as perturbed
    # dropout only ever zeroes pixels
    assert ((xa == x) | (xa == 0)).all()
    again = make_augmenter(cfg, digits.train)(x, idx, None)[0]
    assert np.array_equal(xa, again)  # seeded


def test_append_mode_keeps_the_clean_batch_and_adds_perturbed_copies(digits):
    from edgekd.distill import make_augmenter

    cfg = DistillConfig(augment=["pixel_dropout"], augment_prob=0.5, seed=3)
    idx = np.arange(64)
    x = digits.train.x[idx]
    targets = torch.randn(64, 10)
    replaced, _, t_rep, _, _ = make_augmenter(cfg, digits.train)(x, idx, targets)
    xa, ia, ta, rows, src = make_augmenter(cfg, digits.train, mode="append")(x, idx, targets)
    changed = (replaced != x).reshape(64, -1).any(1)
    k = len(xa) - 64
    assert 10 < k < 54 and len(ia) == len(ta) == len(xa) == len(rows)
    assert not rows[:64].any() and rows[64:].all()
    assert np.array_equal(xa[:64], x) and np.array_equal(ia[:64], idx)  # the clean batch, untouched
    # the copies are the images "replace" perturbed, in the same order, with their indices and targets
    perturbed = np.flatnonzero(changed)
    assert k >= len(perturbed) and np.isin(perturbed, ia[64:]).all()
    assert np.array_equal(xa[64:], replaced[ia[64:]])
    assert np.array_equal(src, np.concatenate([idx, ia[64:]]))  # each row's source in the clean batch
    assert torch.equal(ta[64:], targets[torch.from_numpy(ia[64:])]) and torch.equal(t_rep, targets)


def test_perturbed_target_is_the_teacher_on_exactly_the_image_the_student_sees(digits):
    """augment_target = "perturbed": the target of a perturbed image is the teacher run on it after
    crop and flip; clean images keep the cached target (mirrored when flipped)."""
    from edgekd.distill import make_augmenter, prepare_batch

    class Brightness(torch.nn.Module):  # a "teacher" whose output tells the images apart
        def forward(self, x):
            return x.float().mean(dim=(1, 2, 3))[:, None].repeat(1, 10)

    cfg = DistillConfig(augment=["pixel_dropout"], augment_prob=0.5, seed=3)
    x = torch.from_numpy(digits.train.x)
    t = torch.full((len(x), 10), -1.0)
    t_flip = torch.full((len(x), 10), -2.0)
    idx = np.arange(64)
    for mode in ("replace", "append"):
        augment = make_augmenter(cfg, digits.train, mode=mode)
        xb, ia, _, tb = prepare_batch(idx, digits.train.x[idx], x[idx], t, t_flip, "cpu", augment,
                                      crop_flip=True, aug_gen=torch.Generator().manual_seed(0),
                                      retarget=Brightness())
        fresh = tb[:, 0] >= 0
        assert len(xb) == len(ia) == len(tb) and 10 < int(fresh.sum()) < len(xb) - 10
        assert torch.allclose(tb[fresh], Brightness()(xb[fresh]))
        assert set(tb[~fresh, 0].tolist()) == {-1.0, -2.0}  # cached targets, plain and mirrored


def test_append_mode_trains_on_more_images_per_epoch(digits):
    """The student really sees the appended copies, with as many labels and targets (or the loss
    would fail on mismatched shapes): about augment_prob more images per epoch than "replace"."""

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.images = net, 0

        def forward(self, x):
            self.images += len(x) if self.training else 0
            return self.net(x)

    logits = np.zeros((len(digits.train), 10), np.float32)
    seen = {}
    for mode in ("replace", "append"):
        torch.manual_seed(0)
        st = Counting(Preprocessed(build_model("digits_student", 10), digits.mean, digits.std))
        cfg = DistillConfig(epochs=1, min_steps=0, augment=["pixel_dropout"], augment_prob=0.5, augment_mode=mode,
                            seed=1, select="last")
        distill(st, logits, digits.train, cfg, "cpu", progress=False)
        seen[mode] = st.images
    n = len(digits.train)
    assert seen["replace"] == n
    assert 1.3 * n < seen["append"] < 1.7 * n


def test_training_on_evaluated_corruptions_is_refused():
    from edgekd.config import load_config

    with pytest.raises(ConfigError, match="would inflate the robustness figures"):
        load_config(None, ['distill.augment=["fog", "spatter"]'])
    cfg = load_config(None, ['distill.augment=["fog"]', "distill.allow_eval_corruptions=true"])
    assert cfg.distill.augment == ["fog"]


def test_perturbed_target_without_a_teacher_is_refused(digits):
    st = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
    logits = np.zeros((len(digits.train), 10), np.float32)
    cfg = DistillConfig(epochs=1, augment=["pixel_dropout"], augment_target="perturbed")
    with pytest.raises(ConfigError, match="needs the teacher model"):
        distill(st, logits, digits.train, cfg, "cpu", progress=False)
