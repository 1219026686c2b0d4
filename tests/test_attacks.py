import numpy as np
import pytest
import torch

from edgekd.attacks import ATTACKS, craft, craft_epsilons
from edgekd.errors import ConfigError


@pytest.mark.parametrize("attack", ATTACKS)
def test_examples_stay_in_the_ball_and_hurt_the_source(trained_pair, digits, attack):
    _, student = trained_pair
    x, y = digits.test.x[:128], digits.test.y[:128]
    with torch.no_grad():
        clean = (student(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    accs = []
    for eps in (2, 8):
        adv = craft(attack, student, x, y, eps=eps, steps=10, seed=0)
        assert adv.dtype == np.uint8 and adv.shape == x.shape
        assert np.abs(adv.astype(int) - x.astype(int)).max() <= eps
        with torch.no_grad():
            accs.append((student(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())
    assert accs[1] < clean - 0.3  # eps 8/255 white-box wrecks an undefended student
    assert accs[1] <= accs[0] + 0.02


def test_pgd_is_stronger_than_fgsm_and_seeded(trained_pair, digits):
    _, student = trained_pair
    x, y = digits.test.x[:128], digits.test.y[:128]
    acc = {}
    for a in ATTACKS:
        adv = craft(a, student, x, y, eps=4, seed=0)
        with torch.no_grad():
            acc[a] = (student(torch.from_numpy(adv)).argmax(1).numpy() == y).mean()
    assert acc["pgd"] <= acc["fgsm"]
    assert np.array_equal(craft("pgd", student, x, y, 4, seed=1), craft("pgd", student, x, y, 4, seed=1))


@pytest.mark.parametrize("attack", ATTACKS)
def test_all_epsilons_at_once_are_the_same_bytes(trained_pair, digits, attack):
    _, student = trained_pair
    x, y = digits.test.x[:70], digits.test.y[:70]
    together = craft_epsilons(attack, student, x, y, [1, 4, 8], steps=3, seed=2, batch_size=32)
    assert sorted(together) == [1, 4, 8]
    for eps, adv in together.items():
        assert np.array_equal(adv, craft(attack, student, x, y, eps, steps=3, seed=2, batch_size=32)), eps


def test_unknown_attack_lists_choices(trained_pair, digits):
    with pytest.raises(ConfigError, match="fgsm, pgd"):
        craft("cw", trained_pair[1], digits.test.x[:4], digits.test.y[:4], 2)


def test_gradient_model_folds_batchnorm_into_a_copy_of_the_same_function(trained_pair, digits):
    from edgekd.attacks import _grad, gradient_model

    teacher, _ = trained_pair
    bns = lambda m: [k for k in m.modules() if isinstance(k, torch.nn.modules.batchnorm._BatchNorm)]  # noqa: E731
    assert bns(teacher)  # the digits teacher has BatchNorm after its convolutions
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    folded = gradient_model(teacher)
    assert folded is not teacher and not bns(folded)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the original untouched
    x = torch.from_numpy(digits.test.x[:64]).float()
    y = torch.from_numpy(digits.test.y[:64])
    with torch.no_grad():
        a, b = teacher(x), folded(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    g1, g2 = _grad(teacher, x, y), _grad(folded, x, y)
    assert float((g1.sign() != g2.sign()).float().mean()) < 1e-3  # FGSM's direction: the same but for ties

    class Untraceable(torch.nn.Module):  # data-dependent control flow: FX cannot trace it
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(1)

        def forward(self, x):
            return self.bn(x) if float(x.sum()) > 0 else x

    m = Untraceable()
    assert gradient_model(m) is m and not m.training
