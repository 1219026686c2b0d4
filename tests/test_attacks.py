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
