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
    assert distill(st, logits, digits.train, DistillConfig(epochs=0), "cpu", progress=False) == []
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
    xa, t = make_augmenter(cfg, digits.train, None, "cpu")(x, idx, None)
    changed = (xa != x).reshape(64, -1).any(1)
    assert 10 < changed.sum() < 54 and t is None
    # dropout only ever zeroes pixels
    assert ((xa == x) | (xa == 0)).all()
    again, _ = make_augmenter(cfg, digits.train, None, "cpu")(x, idx, None)
    assert np.array_equal(xa, again)  # seeded


def test_training_on_evaluated_corruptions_is_refused():
    from edgekd.config import load_config

    with pytest.raises(ConfigError, match="would inflate the robustness figures"):
        load_config(None, ['distill.augment=["fog", "spatter"]'])
    cfg = load_config(None, ['distill.augment=["fog"]', "distill.allow_eval_corruptions=true"])
    assert cfg.distill.augment == ["fog"]
