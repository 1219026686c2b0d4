"""Statistics for paired model comparisons on the same test images (used by the gate).

    d = paired_difference(teacher_correct, student_correct)   # delta, SE, 95% CI, exact McNemar p
    b = paired_bootstrap(per_image_diffs, samples=1000, seed=0)

Sources: McNemar 1947; the paired-proportion SE of ROBUSTNESS.md ("Statistics for a gate that does
not flap"); Wilson 1927; Efron's percentile bootstrap; Holm 1979.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

EPS = 1e-12  # float slack when a value sits exactly on its threshold (3/100 vs 0.03)


def z_value(confidence: float) -> float:
    """Two-sided normal quantile: z = Φ⁻¹(1 − (1 − confidence)/2); 1.959964 for 0.95."""
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus reference accuracy on the same n images (see :func:`paired_difference`)."""

    n: int
    b: int  # reference right, candidate wrong
    c: int  # reference wrong, candidate right
    delta: float  # (c − b)/n = candidate accuracy − reference accuracy
    se: float
    lo: float
    hi: float
    p_mcnemar: float  # exact two-sided McNemar p-value of H0: delta = 0


def paired_difference_from_counts(n: int, b: int, c: int, confidence: float = 0.95) -> PairedDifference:
    """Paired accuracy difference from the discordant counts b, c of n images.

    Δ = (c − b)/n,   SE = √(b + c − (b − c)²/n) / n,   CI = Δ ± z·SE (normal approximation),
    McNemar's exact p = two-sided binomial test of b successes in b + c trials, p = 1/2.
    Source: ROBUSTNESS.md, "Statistics for a gate that does not flap"; the SE is the standard error
    of the mean of the per-image differences d_i ∈ {−1, 0, 1} (Agresti, Categorical Data
    Analysis, §10.1). Example: n=100, b=10, c=4 -> Δ=−0.06, SE=0.036932, CI=[−0.13239, 0.01239].
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n, got n={n}, b={b}, c={c}")
    delta = (c - b) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    z = z_value(confidence)
    return PairedDifference(n, b, c, delta, se, delta - z * se, delta + z * se, mcnemar_exact_p(b, c))


def paired_difference(reference_correct: np.ndarray, candidate_correct: np.ndarray,
                      confidence: float = 0.95) -> PairedDifference:
    """:func:`paired_difference_from_counts` from two boolean per-image correctness vectors."""
    r = np.asarray(reference_correct, bool)
    s = np.asarray(candidate_correct, bool)
    b, c = int(np.sum(r & ~s)), int(np.sum(~r & s))
    return paired_difference_from_counts(len(r), b, c, confidence)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact McNemar test: two-sided binomial p-value of b in b + c trials with p = 1/2.

    p = min(1, 2·Σ_{k ≤ min(b,c)} C(b+c, k)/2^(b+c)); 1 when b + c = 0. (McNemar 1947; ROBUSTNESS.md.)
    """
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (Wilson 1927), sound near 0 and 1.

    centre = (p̂ + z²/2n)/(1 + z²/n),  half = z/(1 + z²/n)·√(p̂(1−p̂)/n + z²/4n²).
    """
    p = k / n
    z = z_value(confidence)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_sample_interval(p1: float, n1: int, p2: float, n2: int,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """Unpaired difference of two proportions p1 − p2 (independent samples): (Δ, lo, hi).

    SE = √(p1(1−p1)/n1 + p2(1−p2)/n2), CI = Δ ± z·SE (Wald). For a mean accuracy over several
    cells of the same images (mCA) p(1−p)/n bounds the variance of the per-image mean from above,
    so the interval is conservative (wider).
    """
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = z_value(confidence)
    d = p1 - p2
    return d, d - z * se, d + z * se


@dataclass(frozen=True)
class Bootstrap:
    """Paired bootstrap of per-image values: ``point``, ``lo``, ``hi`` per column, and ``draws``."""

    point: np.ndarray  # (k,) column means
    lo: np.ndarray
    hi: np.ndarray
    draws: np.ndarray  # (samples, k) resampled means


def paired_bootstrap(per_image: np.ndarray, samples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> Bootstrap:
    """Percentile bootstrap over image indices of the column means of ``per_image`` (n,) or (n, k).

    Each resample draws n image indices with replacement (``np.random.default_rng(seed)``) and
    recomputes every column's mean on the same indices, so the columns (mCA drop, each
    corruption's drop) keep their correlation. CI = the (α/2, 1−α/2) quantiles of the resampled
    means, α = 1 − confidence (Efron & Tibshirani 1993, ch. 13; ROBUSTNESS.md: resample image
    indices ≈1,000 times and recompute the 75-cell mean).
    """
    x = np.asarray(per_image, float)
    x = x[:, None] if x.ndim == 1 else x
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, x.shape[1]))
    chunk = max(1, min(samples, 4_000_000 // max(n, 1)))
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        idx = rng.integers(0, n, size=(k, n))
        # how often each image was drawn in each resample; counts @ x / n = resampled means
        counts = np.bincount((idx + n * np.arange(k)[:, None]).ravel(), minlength=k * n)
        draws[start:start + k] = counts.reshape(k, n) @ x / n
    alpha = 1 - confidence
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return Bootstrap(x.mean(axis=0), lo, hi, draws)


def one_sided_pvalue(per_image_drop: np.ndarray, margin: float) -> float:
    """p-value of H0: mean drop ≤ margin against H1: mean drop > margin (drop beyond the margin).

    z = (d̄ − margin)/SE with SE = sd(d)/√n (population sd, the same SE the McNemar formula gives
    for 0/1 correctness), p = 1 − Φ(z). Used per corruption, then :func:`holm_adjust`.
    """
    d = np.asarray(per_image_drop, float)
    mean = float(d.mean())
    se = float(d.std()) / math.sqrt(len(d))
    if se == 0:
        return 0.0 if mean > margin + EPS else 1.0
    return float(stats.norm.sf((mean - margin) / se))


def holm_adjust(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    Sort p ascending: p_(1) ≤ … ≤ p_(m); adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
    Rejecting where adjusted p < α keeps the family-wise error rate ≤ α.
    Example: [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02].
    """
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
