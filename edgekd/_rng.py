"""Counter-based random numbers for the perturbation kernels (internal; see :mod:`edgekd.perturb`).

Each image draws from its own splitmix64 stream keyed by a 64-bit key (``perturb.image_keys``: a hash
of seed, name, severity and dataset index) and a tag per draw, so an image's numbers never depend on
the batch it is in, and any subset of elements can be drawn alone.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from scipy.special import gammaln

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al. 2014): a bijective 64-bit hash, element-wise."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
        return z ^ (z >> _U(31))


def hash_text(text: str) -> np.uint64:
    return _U(zlib.crc32(text.encode()))


class Rng:
    """Random numbers for a batch; element ``j`` of draw ``tag`` for image ``n`` is
    ``mix64(key[n] + mix64(crc32(tag)) + GOLDEN * (j + 1))`` - a splitmix64 stream per (image, tag),
    so any subset of elements can be drawn alone and the values never depend on the batch."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=_U)
        self.n = len(self.keys)

    def _bits_at(self, tag: str, n: np.ndarray, j: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            start = self.keys[n] + mix64(np.array([hash_text(tag)], dtype=_U))[0]
            return mix64(start + (np.asarray(j).astype(_U) + _U(1)) * _GOLDEN)

    def uniform_at(self, tag: str, n: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Uniforms in the open interval (0, 1) at image ``n``, element ``j`` (broadcast)."""
        return ((self._bits_at(tag, n, j) >> _U(11)).astype(np.float64) + 0.5) * 2.0**-53

    def uniform(self, tag: str, shape: tuple, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        m = math.prod(shape)
        u = self.uniform_at(tag, np.arange(self.n)[:, None], np.arange(m)[None, :])
        return (low + (high - low) * u).reshape((self.n, *shape))

    def normal(self, tag: str, shape: tuple, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
        """Box-Muller from two uniform streams."""
        r = np.sqrt(-2.0 * np.log(self.uniform(tag + "/r", shape)))
        return loc + scale * r * np.cos(2.0 * np.pi * self.uniform(tag + "/t", shape))

    def integers(self, tag: str, shape: tuple, low: int, high: int) -> np.ndarray:
        """Integers in [low, high) like ``np.random.randint(low, high)``."""
        return low + np.floor(self.uniform(tag, shape) * (high - low)).astype(np.int64)

    def poisson(self, tag: str, level: np.ndarray, lam_of_level: np.ndarray) -> np.ndarray:
        """Exact Poisson variates with mean ``lam_of_level[level]`` for integer ``level`` (N, ...):
        inversion below a mean of 10, Hormann's PTRS transformed rejection (1993, as numpy) above.
        Rejected elements redraw from the next round's stream, so each element's value depends only
        on its own (image, position) stream. Per-mean constants come from tables over the levels."""
        lam = np.asarray(lam_of_level, np.float64)
        lv = level.reshape(self.n, -1)
        m = lv.shape[1]
        out = np.zeros(lv.size)
        flat = lv.ravel()
        idx = np.flatnonzero(((lam > 0) & (lam < 10))[flat])
        if idx.size:
            lvl, u = flat[idx], self.uniform_at(tag + "/inv", idx // m, idx % m)
            p = np.exp(-lam)  # cdf table: the same float ops as a sequential search per element
            cdf = [p.copy()]
            for k in range(1, 200):
                p = p * lam / k
                cdf.append(cdf[-1] + p)
            cdf = np.stack(cdf, axis=1)
            k, live = np.zeros(idx.size), np.flatnonzero(u > cdf[lvl, 0])
            for step in range(1, 200):  # cdf may stall below u by rounding: stop at 200 >> any draw
                if not live.size:
                    break
                k[live] = step
                live = live[u[live] > cdf[lvl[live], step]]
            out[idx] = k
        idx = np.flatnonzero((lam >= 10)[flat])
        if idx.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                slam, loglam = np.sqrt(lam), np.log(lam)
                b = 0.931 + 2.53 * slam
                a = -0.059 + 0.02483 * b
                log_invalpha = np.log(1.1239 + 1.1328 / (b - 3.4))
                vr = 0.9277 - 3.6224 / (b - 2)
            lvl, rnd = flat[idx], 0
            while idx.size:
                uu = self.uniform_at(f"{tag}/u{rnd}", idx // m, idx % m) - 0.5
                vv = self.uniform_at(f"{tag}/v{rnd}", idx // m, idx % m)
                us = 0.5 - np.abs(uu)
                a_, b_ = a[lvl], b[lvl]
                k = np.floor((2 * a_ / us + b_) * uu + lam[lvl] + 0.43)
                done = (us >= 0.07) & (vv <= vr[lvl])
                t = np.flatnonzero(~done & (k >= 0) & ~((us < 0.013) & (vv > us)))
                lt = lvl[t]
                done[t] = (np.log(vv[t]) + log_invalpha[lt] - np.log(a_[t] / (us[t] * us[t]) + b_[t])
                           <= -lam[lt] + k[t] * loglam[lt] - gammaln(k[t] + 1))
                out[idx[done]] = k[done]
                idx, lvl, rnd = idx[~done], lvl[~done], rnd + 1
        return out.reshape(level.shape)
