"""Counter-based random numbers for the perturbation kernels (internal; see :mod:`edgekd.perturb`).

Each image draws from its own splitmix64 stream keyed by a 64-bit key (``perturb.image_keys``: a hash
of seed, name and dataset index) and a tag per draw, so an image's numbers never depend on the batch
it is in, and any subset of elements can be drawn alone. An ``Rng`` makes each draw once: the
severities of one chunk of images share it.
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
        z = z ^ (z >> _U(30))  # a new array: the caller's is never written
        t = np.empty_like(z)
        for shift, mul in ((27, 0xBF58476D1CE4E5B9), (31, 0x94D049BB133111EB)):
            z *= _U(mul)
            z ^= np.right_shift(z, _U(shift), out=t)
        return z


def hash_text(text: str) -> np.uint64:
    return _U(zlib.crc32(text.encode()))


class Rng:
    """Random numbers for a batch; element ``j`` of draw ``tag`` for image ``n`` is
    ``mix64(key[n] + mix64(crc32(tag)) + GOLDEN * (j + 1))`` - a splitmix64 stream per (image, tag),
    so any subset of elements can be drawn alone and the values never depend on the batch."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=_U)
        self.n = len(self.keys)
        self._memo: dict[tuple, np.ndarray] = {}  # (kind, tag, shape) -> read-only draw

    def _memoised(self, kind: str, tag: str, shape: tuple, make) -> np.ndarray:
        """Each draw is made once per Rng: the severities of one chunk (perturb.apply_severities)
        reuse it. Returned read-only, so a kernel cannot change what the next severity reads."""
        key = (kind, tag, tuple(shape))
        if key not in self._memo:
            v = make()
            v.flags.writeable = False
            self._memo[key] = v
        return self._memo[key]

    def _bits_at(self, tag: str, n: np.ndarray, j: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            start = self.keys[n] + mix64(np.array([hash_text(tag)], dtype=_U))[0]
            return mix64(start + (np.asarray(j).astype(_U) + _U(1)) * _GOLDEN)

    def uniform_at(self, tag: str, n: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Uniforms in the open interval (0, 1) at image ``n``, element ``j`` (broadcast)."""
        return ((self._bits_at(tag, n, j) >> _U(11)).astype(np.float64) + 0.5) * 2.0**-53

    def uniform(self, tag: str, shape: tuple, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        u = self._memoised("u", tag, shape, lambda: self._fresh_uniform(tag, shape))
        return u.copy() if (low, high) == (0.0, 1.0) else low + (high - low) * u

    def _fresh_uniform(self, tag: str, shape: tuple) -> np.ndarray:
        """``uniform(tag, shape)`` as a new writable array, not kept."""
        u = self.uniform_at(tag, np.arange(self.n)[:, None], np.arange(math.prod(shape))[None, :])
        return u.reshape((self.n, *shape))

    def normal(self, tag: str, shape: tuple, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
        """Box-Muller from two uniform streams: sqrt(-2 log u) cos(2 pi t), in place. The cosine is
        torch's (vectorised; numpy's float64 cosine is libm's, one value at a time: 13 against 0.8 ns
        per value here), within an ulp of libm's."""
        import torch

        def make():
            r = self._fresh_uniform(tag + "/r", shape)
            np.log(r, out=r)
            r *= -2.0
            np.sqrt(r, out=r)
            t = self._fresh_uniform(tag + "/t", shape)
            t *= 2.0 * np.pi
            torch.cos(torch.from_numpy(t), out=torch.from_numpy(t))
            r *= t
            return r
        z = self._memoised("n", tag, shape, make)
        out = z * scale if scale != 1.0 else z.copy()  # loc + scale * z, without the no-op passes
        if loc != 0.0:
            out += loc
        return out

    def integers(self, tag: str, shape: tuple, low: int, high: int) -> np.ndarray:
        """Integers in [low, high) like ``np.random.randint(low, high)``."""
        return low + np.floor(self.uniform(tag, shape) * (high - low)).astype(np.int64)

    def poisson(self, tag: str, level: np.ndarray, lam_of_level: np.ndarray) -> np.ndarray:
        """Exact Poisson variates with mean ``lam_of_level[level]`` for integer ``level`` (N, ...), by
        inversion of each mean's CDF at one uniform per element (``poisson_many`` with one table)."""
        return self.poisson_many(tag, level, [lam_of_level])[0]

    def poisson_many(self, tag: str, level: np.ndarray, lams: list[np.ndarray]) -> list[np.ndarray]:
        """``poisson(tag, level, lam)`` for each of ``lams``: the uniform is the same whatever the
        means (and a brighter pixel never draws fewer counts than a darker one with the same
        uniform), so the severities of shot noise share it, and its cell in the tables
        (``poisson_table``: the level's row, the uniform's bin) is found once. A cell holds the
        count itself where the CDF takes no step inside the bin (nearly every element); elsewhere
        the count is searched between the bin's two edges."""
        u = self.uniform(tag, level.shape[1:]).ravel()
        lv = level.ravel().astype(np.intp)
        cell = lv * _BINS + (u * _BINS).astype(np.intp)  # exact: _BINS is a power of 2
        outs = []
        for lam in lams:
            cdf, guide = poisson_table(np.asarray(lam, np.float64))
            k = guide.ravel().take(cell)
            open_ = np.flatnonzero(k < 0)  # a CDF step inside the bin: between its edges' counts
            if open_.size:
                k[open_] = _search(cdf, lv[open_], u[open_], -k[open_] - 1)
            outs.append(k.reshape(level.shape))  # counts
        return outs


def _search(cdf: np.ndarray, lv: np.ndarray, u: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The first count whose CDF (row ``lv``) reaches ``u``, at or above ``k`` (a count whose CDF is
    below or at it): a step or two for nearly all, else bisection up to the last entry (2)."""
    n_k = cdf.shape[1]
    flat, start = cdf.ravel(), lv * n_k
    k = k.astype(np.int64)
    live = np.flatnonzero(flat.take(start + k) < u)
    for _ in range(4):
        if not live.size:
            break
        k[live] += 1
        live = live[flat.take(start[live] + k[live]) < u[live]]
    if live.size:  # the few far in a tail (u next to 1): bisect between CDF < u and the last entry, 2
        lo, hi, ul, sl = k[live], np.full(live.size, n_k - 1), u[live], start[live]
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            below = open_ & (flat.take(sl + mid) < ul)
            lo, hi = np.where(below, mid, lo), np.where(open_ & ~below, mid, hi)
        k[live] = hi
    return k


_BINS = 2048  # uniform bins of the Poisson tables: a CDF step falls inside few of them


_TABLES: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def poisson_table(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per mean: the CDF over k = 0..K-1 (K past mean + 14 sd, so the tail beyond holds < 1e-40;
    the last entry is set to 2 so a search always stops) and a guide over ``_BINS`` bins of the
    uniform: the count every u of bin b gives (the first k with CDF >= b / bins equals the first
    with CDF >= (b + 1) / bins), else -1 - that first k (a step inside the bin). int32. Kept for
    the means already seen (one table per shot-noise severity)."""
    key = lam.tobytes()
    table = _TABLES.get(key)  # read once: another thread may clear the dict meanwhile
    if table is None:
        top = float(lam.max(initial=0.0))
        k = np.arange(int(top + 14 * math.sqrt(top) + 30))
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = k * np.log(lam)[:, None] - lam[:, None] - gammaln(k + 1)
        pmf = np.where(lam[:, None] > 0, np.exp(logp), (k == 0).astype(np.float64))
        cdf = np.cumsum(pmf, axis=1)
        cdf[:, -1] = 2.0
        # the first k with CDF >= b / bins, for every bin edge b: the number of k with CDF < b / bins,
        # i.e. with floor(CDF * bins) < b (exact: bins is a power of 2), counted for every row at once
        # (a searchsorted per row took half of the 0.05 s the five shot-noise tables cost)
        rows = len(cdf)
        v = np.minimum(np.floor(cdf * _BINS), _BINS).astype(np.intp)  # bins: counted from edge v + 1 on
        v += (np.arange(rows) * (_BINS + 1))[:, None]
        counts = np.bincount(v.ravel(), minlength=rows * (_BINS + 1)).reshape(rows, _BINS + 1)
        first = np.zeros((rows, _BINS + 1), np.int32)
        np.cumsum(counts[:, :_BINS], axis=1, out=first[:, 1:])
        guide = np.where(first[:, :-1] == first[:, 1:], first[:, :-1], -1 - first[:, :-1])
        if len(_TABLES) > 64:
            _TABLES.clear()
        table = _TABLES[key] = (cdf, guide)
    return table
