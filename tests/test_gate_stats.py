"""edgekd.gate.stats: paired statistics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.gate import stats as st


def test_paired_interval_hand_computed():
    # n = 100, b = 10 (teacher right, student wrong), c = 4:
    # delta = (4 - 10)/100 = -0.06; SE = sqrt(14 - 36/100)/100 = sqrt(13.64)/100 = 0.0369324
    # CI = -0.06 -+ 1.959964 * 0.0369324 = [-0.132386, 0.012386]
    # McNemar exact: 2 * P(X <= 4 | 14, 1/2) = 2 * (1 + 14 + 91 + 364 + 1001)/2^14 = 2942/16384
    pd = st.paired_difference_from_counts(100, 10, 4)
    assert pd.delta == pytest.approx(-0.06)
    assert pd.se == pytest.approx(0.0369324, abs=1e-7)
    assert (pd.lo, pd.hi) == (pytest.approx(-0.132386, abs=1e-6), pytest.approx(0.012386, abs=1e-6))
    assert pd.p_mcnemar == pytest.approx(2942 / 16384)
    # the same from per-image correctness vectors
    teacher = np.array([1] * 10 + [0] * 4 + [1] * 80 + [0] * 6, bool)
    student = np.array([0] * 10 + [1] * 4 + [1] * 80 + [0] * 6, bool)
    assert st.paired_difference(teacher, student) == pd


def test_holm_hand_computed():
    # sorted p: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06; back in input order:
    adjusted = st.holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert list(adjusted < 0.05) == [True, False, False, True]
    np.testing.assert_allclose(st.holm_adjust([0.5, 0.9]), [1.0, 1.0])  # 2 x 0.5 capped at 1; monotone


def test_one_sided_pvalue_and_wilson_hand_computed():
    # drop 1 on 25 of 100 images: mean 0.25, population sd sqrt(0.25*0.75) = 0.4330127,
    # SE = 0.04330127; margin 0.15: z = 0.10/0.04330127 = 2.3094011, p = 1 - Phi(z) = 0.0104606
    d = np.array([1.0] * 25 + [0.0] * 75)
    assert st.one_sided_pvalue(d, 0.15) == pytest.approx(0.0104606, abs=1e-6)
    assert st.one_sided_pvalue(np.zeros(10), 0.15) == 1.0
    # Wilson, 90 of 100: z^2 = 3.841459, denominator 1 + z^2/100 = 1.0384146,
    # centre (0.9 + 0.0192073)/1.0384146 = 0.8852026,
    # half = 1.959964/1.0384146 * sqrt(0.0009 + 3.841459/40000) = 0.0595683
    lo, hi = st.wilson_interval(90, 100)
    assert (lo, hi) == (pytest.approx(0.8256343, abs=1e-6), pytest.approx(0.9447709, abs=1e-6))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.random(500), np.full(500, 0.25)])
    a = st.paired_bootstrap(x, 1000, 0.95, seed=3)
    b = st.paired_bootstrap(x, 1000, 0.95, seed=3)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert a.lo[0] < a.point[0] < a.hi[0] and a.hi[0] - a.lo[0] < 0.06
    assert a.lo[1] == a.hi[1] == pytest.approx(0.25)  # a constant column has no spread
    assert a.draws.shape == (1000, 2)
    # close to the normal interval of a mean
    se = x[:, 0].std() / math.sqrt(500)
    assert a.hi[0] - a.lo[0] == pytest.approx(2 * 1.96 * se, rel=0.15)
