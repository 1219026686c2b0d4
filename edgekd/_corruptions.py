"""Batched array kernels behind :mod:`edgekd.perturb` (internal; the public API, the parameter tables
and the list of sources live there).

Every corruption takes uint8 images ``(N, H, W, C)``, the table row ``c`` of one severity and an
:class:`Rng`, and returns floats in [0, 1] (``perturb.apply`` clips and truncates them like the
reference's ``np.uint8(x * 255)``) or uint8 where the reference's last step already produces bytes
(JPEG, pixelate, ImageMagick's motion blur, the missing-data ones).

Work is vectorised over the batch with element-wise numpy operations: filters are sums of shifted
views, resampling is gathers with explicit boundary rules. No rounding-sensitive reduction goes
through BLAS or a thread pool (pixelate's matmuls sum exact integers), so an image's bytes do not
depend on the batch it is processed in.
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
from PIL import Image
from scipy.special import gammaln

# ---------------------------------------------------------------- counter-based random numbers

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


# ---------------------------------------------------------------- filters and resampling

def _shifted(xp: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    idx = [slice(None)] * xp.ndim
    idx[axis] = slice(start, start + length)
    return xp[tuple(idx)]


def correlate1d(x: np.ndarray, w: np.ndarray, axis: int, mode: str) -> np.ndarray:
    """Correlate axis 1 or 2 of ``x`` with odd-length weights; ``mode`` is a numpy pad mode
    ('edge' = scipy 'nearest', 'symmetric' = scipy 'reflect', 'reflect' = cv2 REFLECT_101)."""
    r = len(w) // 2
    pads = [(0, 0)] * x.ndim
    pads[axis] = (r, r)
    xp = np.pad(x, pads, mode=mode)
    out = np.zeros_like(x)
    for i, wi in enumerate(w):
        out += wi * _shifted(xp, axis, i, x.shape[axis])
    return out


def correlate2d(x: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """2-D correlation over axes 1, 2 with an odd-sized kernel (zero taps skipped)."""
    ph, pw = k.shape[0] // 2, k.shape[1] // 2
    pads = [(0, 0), (ph, ph), (pw, pw)] + [(0, 0)] * (x.ndim - 3)
    xp = np.pad(x, pads, mode=mode)
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for i, j in zip(*np.nonzero(k)):
        out += k[i, j] * xp[:, i:i + h, j:j + w]
    return out


def gaussian(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` = scipy ``gaussian_filter`` on axes 1 then 2, in float64 with
    scipy's weights and its summation order for symmetric kernels (centre, then outer pairs
    inwards), so results match the reference to the last bit; default border 'nearest'."""
    x = x.astype(np.float64)
    if sigma <= 1e-15:
        return x
    r = int(truncate * float(sigma) + 0.5)
    w = np.exp(-0.5 / (sigma * sigma) * np.arange(-r, r + 1) ** 2)
    w = w / w.sum()
    for axis in (1, 2):
        pads = [(0, 0)] * x.ndim
        pads[axis] = (r, r)
        xp, n = np.pad(x, pads, mode=mode), x.shape[axis]
        out = _shifted(xp, axis, r, n) * w[r]
        for j in range(r, 0, -1):
            out += (_shifted(xp, axis, r - j, n) + _shifted(xp, axis, r + j, n)) * w[r + j]
        x = out
    return x


def _border_index(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    if mode == "symmetric":  # scipy map_coordinates 'reflect': d c b a | a b c d
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":  # cv2 BORDER_REFLECT_101: d c b | a b c d
        if n == 1:
            return np.zeros_like(i)
        i = np.mod(i, 2 * n - 2)
        return np.where(i >= n, 2 * n - 2 - i, i)
    return np.clip(i, 0, n - 1)  # 'edge'


def gather(x: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """``out[n, a, b] = x[n, iy[n, a, b], ix[n, a, b]]`` for x of shape (N, H, W, C)."""
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    idx = (iy * w + ix).reshape(n, -1)
    return flat[np.arange(n)[:, None], idx].reshape(*iy.shape, c)


def bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, mode: str) -> np.ndarray:
    """Sample x (N, H, W, C) at float rows ``ys`` and columns ``xs`` (N, h, w), order 1."""
    h, w = x.shape[1:3]
    y0, x0 = np.floor(ys), np.floor(xs)
    wy, wx = (ys - y0)[..., None].astype(x.dtype), (xs - x0)[..., None].astype(x.dtype)
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    ya, yb = _border_index(y0, h, mode), _border_index(y0 + 1, h, mode)
    xa, xb = _border_index(x0, w, mode), _border_index(x0 + 1, w, mode)
    top = gather(x, ya, xa) * (1 - wx) + gather(x, ya, xb) * wx
    bottom = gather(x, yb, xa) * (1 - wx) + gather(x, yb, xb) * wx
    return top * (1 - wy) + bottom * wy


def _zoom_taps(n: int, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of the reference's ``clipped_zoom``: centre crop of ceil(n / z), scipy
    ``zoom(order=1)`` to round(crop * z) (coordinate o * (crop-1)/(out-1), weights 1-t and
    1-(1-t) as scipy computes them), centre trim back to n."""
    ch = int(np.ceil(n / z))
    top = (n - ch) // 2
    out = int(round(ch * z))
    trim = (out - n) // 2
    coord = np.arange(trim, trim + n) * ((ch - 1) / (out - 1) if out > 1 else 0.0)
    i0 = np.minimum(np.floor(coord).astype(np.int64), ch - 1)
    w0 = 1.0 - (coord - np.floor(coord))
    return top + i0, top + np.minimum(i0 + 1, ch - 1), w0, 1.0 - w0


def clipped_zoom(x: np.ndarray, z: float) -> np.ndarray:
    """Bilinear zoom of axes 1, 2 in float64, corners summed in scipy's order, cast back to x's
    dtype like scipy's output array."""
    r0, r1, ry0, ry1 = _zoom_taps(x.shape[1], z)
    c0, c1, cx0, cx1 = _zoom_taps(x.shape[2], z)
    ry0, ry1, cx0, cx1 = ry0[:, None, None], ry1[:, None, None], cx0[:, None], cx1[:, None]
    if all(np.array_equal(i, np.arange(len(i))) and not wt.any() for i, wt in ((r0, ry1), (c0, cx1))):
        return x.copy()  # zoom to the same size: v * 1 * 1 + 0-weighted terms == v
    dtype, x = x.dtype, x.astype(np.float64)
    top, bottom = np.take(x, r0, axis=1), np.take(x, r1, axis=1)
    out = np.take(top, c0, axis=2) * ry0 * cx0 + np.take(top, c1, axis=2) * ry0 * cx1
    out += np.take(bottom, c0, axis=2) * ry1 * cx0
    out += np.take(bottom, c1, axis=2) * ry1 * cx1
    return out.astype(dtype)


def motion_blur_kernel(radius: float, sigma: float, angle_deg: np.ndarray):
    """ImageMagick's MotionBlurImage kernel (as ported by the imagecorruptions package): width
    2*ceil(radius)+1, one-sided Gaussian weights exp(-i^2 / 2 sigma^2) normalised, tap i at
    offset (ceil(i cos a - 0.5), ceil(i sin a - 0.5)) along the angle; per-image angles."""
    width = 2 * int(math.ceil(radius)) + 1
    i = np.arange(width)
    k = np.exp(-(i**2) / (2.0 * sigma**2))
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[:, None]
    ox = np.ceil(i * np.cos(a) - 0.5).astype(np.int64)  # hypot(point) == width cancels
    oy = np.ceil(i * np.sin(a) - 0.5).astype(np.int64)
    return k / k.sum(), ox, oy


def motion_blur_255(x: np.ndarray, radius: float, sigma: float, angle_deg: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) in 0..255 -> rounded 0..255 float64 (IM reads and writes bytes; 'edge' pixels)."""
    n, h, w, _ = x.shape
    k, ox, oy = motion_blur_kernel(radius, sigma, angle_deg)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    out = np.zeros(x.shape)
    for t in range(len(k)):
        iy = np.broadcast_to(np.clip(rows + oy[:, t, None, None], 0, h - 1), (n, h, w))
        ix = np.broadcast_to(np.clip(cols + ox[:, t, None, None], 0, w - 1), (n, h, w))
        out += k[t] * gather(x, iy, ix)
    return np.clip(np.rint(out), 0, 255)


def pil_box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling coefficients (Resample.c precompute_coeffs + 22-bit fixed point)."""
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 0.5 * fs
    kk = np.zeros((n_out, n_in), np.int64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        t = (np.arange(lo, hi) - center + 0.5) / fs
        wts = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if wts.sum():
            wts /= wts.sum()
        kk[o, lo:hi] = (wts * (1 << 22) + 0.5).astype(np.int64)
    return kk


def pil_box_resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Byte-exact ``Image.resize((w, h), Image.BOX)`` for uint8 (N, H, W, C): horizontal pass, uint8,
    vertical pass, each ``(sum + 2^21) >> 22``. Float64 products are exact integers (< 2^53)."""
    def one_pass(v, kk, axis):
        t = np.moveaxis(np.moveaxis(v.astype(np.float64), axis, -1) @ kk.T.astype(np.float64), -1, axis)
        return np.clip((t.astype(np.int64) + (1 << 21)) >> 22, 0, 255)
    y = one_pass(x, pil_box_matrix(x.shape[2], w), 2)
    return one_pass(y, pil_box_matrix(x.shape[1], h), 1).astype(np.uint8)


def plasma_fractal(rng: Rng, tag: str, mapsize: int, decay: float) -> np.ndarray:
    """The reference's diamond-square ``plasma_fractal``, one map per image: (N, m, m) in [0, 1]."""
    m = np.zeros((rng.n, mapsize, mapsize))
    step, wibble, level = mapsize, 100.0, 0

    def wibbled(a, part):
        return a / 4 + wibble * rng.uniform(f"{tag}/{level}{part}", a.shape[1:], -wibble, wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half::step, half::step] = wibbled(sq, "s")
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        m[:, 0::step, half::step] = wibbled(lt, "l")
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, half::step, 0::step] = wibbled(tt, "t")
        step, wibble, level = half, wibble / decay, level + 1
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _f(u8: np.ndarray, dtype=np.float64) -> np.ndarray:
    """u8 / 255. in the dtype the reference computes in (float64 unless it casts to float32)."""
    return u8.astype(dtype) / dtype(255.0)


def _gray(x: np.ndarray) -> np.ndarray:
    """cv2 RGB2GRAY weights; a 1-channel image is its own grey."""
    if x.shape[-1] == 1:
        return x
    return (0.299 * x[..., 0:1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]).astype(x.dtype)


def _tint(rgb: tuple, c: int) -> np.ndarray:
    """An RGB colour in 0..1 as a C-channel vector (grey via 0.2989/0.5870/0.1140 for C = 1)."""
    v = np.asarray(rgb, np.float32) / 255.0
    return v if c == 3 else np.array([v @ np.array([0.2989, 0.5870, 0.1140], np.float32)])


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hsv`` (later channel wins ties for the hue branch)."""
    v = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=delta != 0)
    d = np.where(delta == 0, 1.0, delta)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.zeros_like(v)
    h = np.where(r == v, (g - b) / d, h)
    h = np.where(g == v, 2.0 + (b - r) / d, h)
    h = np.where(b == v, 4.0 + (r - g) / d, h)
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """``skimage.color.hsv2rgb``."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(np.int64) % 6
    # sector -> (r, g, b) among (v, t, p, q): (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    pick = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])
    return np.take_along_axis(np.stack([v, t, p, q], -1), pick[hi], axis=-1)


def _hsv_op(u8: np.ndarray, channel: int, fn) -> np.ndarray:
    """Apply ``fn`` to one HSV channel; 1-channel images go through RGB and back (channel 0), which
    is what the imagecorruptions package does for grey input."""
    x = _f(u8, np.float64)
    rgb = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    hsv = rgb2hsv(rgb)
    hsv[..., channel] = fn(hsv[..., channel])
    out = hsv2rgb(hsv)
    return out[..., :1] if x.shape[-1] == 1 else out


# ---------------------------------------------------------------- canny / distance (spatter)

def _canny(img: np.ndarray, low: int, high: int) -> np.ndarray:
    """cv2.Canny(img, low, high) with its defaults (3x3 Sobel on replicated borders, L1 magnitude,
    4-direction non-maximum suppression with tan 22.5 deg in 15-bit fixed point, 8-connected
    hysteresis). img (N, H, W) int."""
    n, h, w = img.shape
    p = np.pad(img.astype(np.int64), ((0, 0), (1, 1), (1, 1)), mode="edge")
    s = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    gx = s(-1, 1) + 2 * s(0, 1) + s(1, 1) - s(-1, -1) - 2 * s(0, -1) - s(1, -1)
    gy = s(1, -1) + 2 * s(1, 0) + s(1, 1) - s(-1, -1) - 2 * s(-1, 0) - s(-1, 1)
    mag = np.abs(gx) + np.abs(gy)
    mp = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    m = lambda dy, dx: mp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    ax, ay = np.abs(gx), np.abs(gy) << 15
    tg22 = ax * 13573  # round(tan(22.5 deg) * 2^15)
    horiz = ay < tg22
    vert = ~horiz & (ay > tg22 + (ax << 16))
    same_sign = (gx ^ gy) >= 0
    diag = np.where(same_sign, (mag > m(-1, -1)) & (mag > m(1, 1)), (mag > m(-1, 1)) & (mag > m(1, -1)))
    keep = (mag > low) & np.where(horiz, (mag > m(0, -1)) & (mag >= m(0, 1)),
                                  np.where(vert, (mag > m(-1, 0)) & (mag >= m(1, 0)), diag))
    edges = keep & (mag > high)
    while True:
        e = np.pad(edges, ((0, 0), (1, 1), (1, 1)))
        grown = keep & np.any([e[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)
        if np.array_equal(grown, edges):
            return edges
        edges = grown


def _chamfer_distance(zero: np.ndarray) -> np.ndarray:
    """cv2.distanceTransform(src, DIST_L2, 5) where ``zero`` marks src == 0: OpenCV's two-pass 5x5
    chamfer (a, b, c = 1, 1.4, 2.1969 in 16-bit fixed point). Each row's left/right recurrence
    t[j] = min(v[j], t[j -/+ 1] + a) is a running minimum, so rows are vectorised."""
    n, h, w = zero.shape
    hv, dg, lg = 65536, 91750, 143976  # cvRound(metric * 2^16)
    big = (2**31 - 1) >> 2  # INIT_DIST0 on the 2-pixel border
    t = np.full((n, h + 4, w + 4), big, np.int64)
    ramp = hv * np.arange(w)

    def scan(v, reverse):
        v = v[:, ::-1] if reverse else v
        out = ramp + np.minimum.accumulate(v - ramp, axis=1)
        return out[:, ::-1] if reverse else out

    for i in range(2, h + 2):  # forward: rows above, then left neighbour
        r1, r2 = t[:, i - 1], t[:, i - 2]
        v = np.minimum.reduce([r2[:, 1:w + 1] + lg, r2[:, 3:w + 3] + lg, r1[:, 0:w] + lg, r1[:, 1:w + 1] + dg,
                               r1[:, 2:w + 2] + hv, r1[:, 3:w + 3] + dg, r1[:, 4:w + 4] + lg])
        v = np.minimum(v, t[:, i, 1:w + 1] + hv)  # left border column (INIT_DIST0)
        t[:, i, 2:w + 2] = np.where(zero[:, i - 2], 0, scan(np.where(zero[:, i - 2], 0, v), False))
    for i in range(h + 1, 1, -1):  # backward: rows below, then right neighbour
        r1, r2 = t[:, i + 1], t[:, i + 2]
        v = np.minimum.reduce([t[:, i, 2:w + 2], r2[:, 3:w + 3] + lg, r2[:, 1:w + 1] + lg, r1[:, 4:w + 4] + lg,
                               r1[:, 3:w + 3] + dg, r1[:, 2:w + 2] + hv, r1[:, 1:w + 1] + dg, r1[:, 0:w] + lg])
        v = np.minimum(v, t[:, i, w + 2:w + 3] + hv)
        t[:, i, 2:w + 2] = scan(v, True)
    return t[:, 2:h + 2, 2:w + 2].astype(np.float32) * np.float32(1.0 / 65536)  # (float)t0 * scale


def _equalize_hist(u: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist on (N, H, W) integers 0..255."""
    n = u.shape[0]
    total = u[0].size
    hist = np.bincount((u.reshape(n, -1) + 256 * np.arange(n)[:, None]).ravel(),
                       minlength=256 * n).reshape(n, 256)
    first = np.argmax(hist > 0, axis=1)
    h_first = hist[np.arange(n), first]
    scale = (np.float32(255.0) / np.maximum(total - h_first, 1).astype(np.float32))[:, None]
    lut = np.clip(np.rint((np.cumsum(hist, 1) - h_first[:, None]).astype(np.float32) * scale), 0, 255)
    lut = np.where(np.arange(256)[None] <= first[:, None], 0, lut)
    lut = np.where((h_first == total)[:, None], first[:, None], lut)
    return np.take_along_axis(lut, u.reshape(n, -1), axis=1).reshape(u.shape)


# ---------------------------------------------------------------- the corruptions

def gaussian_noise(u8, c, rng):
    x = _f(u8, np.float64)
    return x + rng.normal("g", x.shape[1:], scale=c)


def shot_noise(u8, c, rng):
    return rng.poisson("p", u8, np.arange(256) / 255.0 * c) / c  # Poisson(x * c) / c


def impulse_noise(u8, c, rng):
    x = _f(u8, np.float64)
    flipped = rng.uniform("flip", x.shape[1:]) < c
    salt = rng.uniform("salt", x.shape[1:]) < 0.5
    return np.where(flipped, np.where(salt, 1.0, 0.0), x)


def speckle_noise(u8, c, rng):
    x = _f(u8, np.float64)
    return x + x * rng.normal("s", x.shape[1:], scale=c)


def gaussian_blur(u8, c, rng):
    return gaussian(_f(u8), c)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    big = radius > 8
    L = np.arange(-radius, radius + 1) if big else np.arange(-8, 8 + 1)
    xx, yy = np.meshgrid(L, L)
    d = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    d /= d.sum()
    ks = 5 if big else 3  # cv2.GaussianBlur(ksize, sigma) on the aliased disk, REFLECT_101
    g = np.exp(-((np.arange(ks) - ks // 2) ** 2) / (2.0 * alias_blur**2))
    g = (g / g.sum()).astype(np.float32)
    k = correlate1d(correlate1d(d[None], g, 1, "reflect"), g, 2, "reflect")[0]
    mid = len(L) // 2
    r = int(np.abs(np.argwhere(k) - mid).max())  # crop the all-zero rim (exact)
    return k[mid - r:mid + r + 1, mid - r:mid + r + 1]


def defocus_blur(u8, c, rng):
    return correlate2d(_f(u8), _disk(*c), "reflect")


def _glass_shuffle(x: np.ndarray, d: int, dxy: np.ndarray) -> np.ndarray:
    """The reference's 'swap' ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views is a copy
    ``x[h, w] = x[h', w']`` (the second assignment reads the already overwritten view). Positions run
    h = H-d .. d+1, w = W-d .. d+1 descending. With d = 1 the offsets are in {-1, 0}, every source
    is still unvisited, so a single gather gives the same result as the sequential loop."""
    n, h, w, _ = x.shape
    hs, ws = np.arange(d + 1, h - d + 1), np.arange(d + 1, w - d + 1)
    dx, dy = dxy[..., 0], dxy[..., 1]
    if d == 1:
        iy = hs[None, :, None] + dy[:, hs][:, :, ws]
        ix = ws[None, None, :] + dx[:, hs][:, :, ws]
        x = x.copy()
        x[:, hs[0]:hs[-1] + 1, ws[0]:ws[-1] + 1] = gather(x, iy, ix)
        return x
    return glass_shuffle_sequential(x, d, dxy)


def glass_shuffle_sequential(x: np.ndarray, d: int, dxy: np.ndarray) -> np.ndarray:
    """The literal loop (used for max_delta > 1), each step vectorised over the batch."""
    x = x.copy()
    n, h, w, _ = x.shape
    b = np.arange(n)
    for hh in range(h - d, d, -1):
        for ww in range(w - d, d, -1):
            x[:, hh, ww] = x[b, hh + dxy[:, hh, ww, 1], ww + dxy[:, hh, ww, 0]]
    return x


def glass_blur(u8, c, rng):
    sigma, d, iterations = c
    x = np.floor(gaussian(_f(u8), sigma) * 255)  # np.uint8(...), kept as float
    for it in range(iterations):
        x = _glass_shuffle(x, d, rng.integers(f"d{it}", (*u8.shape[1:3], 2), -d, d))
    return gaussian(x / 255.0, sigma)


def motion_blur(u8, c, rng):
    angle = rng.uniform("angle", (), -45, 45)
    return motion_blur_255(u8.astype(np.float64), c[0], c[1], angle).astype(np.uint8)


def zoom_blur(u8, c, rng):
    zooms = np.arange(1, c[0], c[1])
    out = np.empty(u8.shape, np.float32)
    step = max(1, (1 << 16) // u8[0].size)  # blocks that stay in cache across the zooms
    for s in range(0, len(u8), step):
        x = _f(u8[s:s + step], np.float32)
        acc = np.zeros_like(x)
        for z in zooms:
            acc += clipped_zoom(x, z)
        out[s:s + step] = (x + acc) / (len(zooms) + 1)
    return out


def snow(u8, c, rng):
    x = _f(u8, np.float32)
    n, h, w, _ = x.shape
    layer = rng.normal("layer", (h, w, 1), loc=c[0], scale=c[1])
    layer = clipped_zoom(layer, c[2])
    layer[layer < c[3]] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255)  # PIL 'L' via astype(np.uint8)
    layer = motion_blur_255(layer, c[4], c[5], rng.uniform("angle", (), -135, -45)) / 255.0
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer[:, ::-1, ::-1]


def frost_texture(rng: Rng, h: int, w: int) -> np.ndarray:
    """Synthetic frost (N, H, W, 3) in 0..255 standing in for the reference's six frost photographs:
    a soft plasma field for patchy coverage plus thin bright 'crystal' ridges along the mid-level set
    of a rough plasma field, tinted pale blue-white. Mean about 0.47, std about 0.16 (in 0..1)."""
    s = _pow2(max(h, w))
    cover = plasma_fractal(rng, "cover", s, 2.2)[:, :h, :w]
    rough = plasma_fractal(rng, "rough", s, 1.4)[:, :h, :w]
    ridges = (1 - np.abs(2 * rough - 1)) ** 6
    ice = np.clip(0.15 + 0.45 * cover + 0.6 * ridges * (0.4 + cover), 0, 1)
    return np.floor(ice[..., None] * np.array([0.86, 0.94, 1.0]) * 255)  # a uint8 photo's values


def frost(u8, c, rng):
    tex = frost_texture(rng, *u8.shape[1:3])
    tex = _gray(tex) if u8.shape[-1] == 1 else tex
    return np.clip(c[0] * u8.astype(np.float64) + c[1] * tex, 0, 255).astype(np.uint8)


def fog(u8, c, rng):
    x = _f(u8, np.float64)
    h, w = x.shape[1:3]
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * plasma_fractal(rng, "plasma", _pow2(max(h, w)), c[1])[:, :h, :w, None]
    return x * max_val / (max_val + c[0])


def brightness(u8, c, rng):
    return _hsv_op(u8, 2, lambda v: np.clip(v + c, 0, 1))


def contrast(u8, c, rng):
    x = _f(u8, np.float64)
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def saturate(u8, c, rng):
    return _hsv_op(u8, 1, lambda s: np.clip(s * c[0] + c[1], 0, 1))


def elastic_transform(u8, c, rng):
    """c = (alpha, sigma, affine) in pixels. cv2 warpAffine (bilinear, REFLECT_101) by the random
    affine, then scipy map_coordinates(order=1, mode='reflect') by the smoothed displacement."""
    alpha, sigma, aff = c
    x = _f(u8, np.float32)
    n, h, w, _ = x.shape
    cs, sq = np.array([h // 2, w // 2], np.float64), min(h, w) // 3
    pts1 = np.array([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq])  # (x, y) as cv2 reads them
    pts2 = pts1 + rng.uniform("affine", (3, 2), -aff, aff).astype(np.float32)
    inv_a = np.linalg.inv(np.hstack([pts1, np.ones((3, 1))]))  # same for every image
    mt = sum(inv_a[:, k, None] * pts2[:, None, k, :] for k in range(3))  # (N, 3, 2): pts2 = [p 1] @ mt
    a, b, tx, cc, d, ty = mt[:, 0, 0], mt[:, 1, 0], mt[:, 2, 0], mt[:, 0, 1], mt[:, 1, 1], mt[:, 2, 1]
    det = a * d - b * cc
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    u = xx[None] - tx[:, None, None]
    v = yy[None] - ty[:, None, None]
    src_x = (d[:, None, None] * u - b[:, None, None] * v) / det[:, None, None]
    src_y = (-cc[:, None, None] * u + a[:, None, None] * v) / det[:, None, None]
    x = bilinear(x, src_y, src_x, "reflect101")
    dx = gaussian(rng.uniform("dx", (h, w), -1, 1), sigma, "symmetric", 3.0) * alpha
    dy = gaussian(rng.uniform("dy", (h, w), -1, 1), sigma, "symmetric", 3.0) * alpha
    return bilinear(x, yy[None] + dy.astype(np.float32), xx[None] + dx.astype(np.float32), "symmetric")


def pixelate(u8, c, rng):
    h, w = u8.shape[1:3]
    return pil_box_resize(pil_box_resize(u8, int(h * c), int(w * c)), h, w)


def jpeg_compression(u8, c, rng):
    out = np.empty_like(u8)
    for i, img in enumerate(u8):  # the encoder is per image
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return out


def spatter(u8, c, rng):
    loc, scale, sigma, thresh, intensity, mud = c
    x = _f(u8, np.float32)
    n, h, w, ch = x.shape
    liquid = gaussian(rng.normal("liquid", (h, w), loc=loc, scale=scale), sigma)
    liquid[liquid < thresh] = 0
    if not mud:  # water: cv2 Canny -> distanceTransform -> ... -> emboss, re-implemented exactly
        liq = np.mod(np.floor(liquid * 255), 256)  # (x * 255).astype(np.uint8) wraps values > 1
        dist = np.minimum(_chamfer_distance(_canny(liq.astype(np.int64), 50, 150)), np.float32(20))
        dist = np.floor(correlate2d(dist[..., None], np.full((3, 3), 1 / 9, np.float32), "reflect"))
        dist = _equalize_hist(dist[..., 0].astype(np.int64)).astype(np.float32)[..., None]
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
        dist = np.clip(correlate2d(dist, emboss, "reflect"), 0, 255)
        dist = np.rint(correlate2d(dist, np.ones((3, 3), np.float32), "reflect") / 9)
        m = liq[..., None].astype(np.float32) * dist
        top = m.max(axis=(1, 2, 3), keepdims=True)
        m = np.divide(m, top, out=np.zeros_like(m), where=top > 0) * intensity
        return x + m * _tint((175, 238, 238), ch)
    m = gaussian((liquid > thresh).astype(np.float32), intensity).astype(np.float32)
    m[m < 0.8] = 0
    m = m[..., None]
    return x * (1 - m) + m * _tint((63, 42, 20), ch)


# ---------------------------------------------------------------- missing data

def occlusion(u8, frac, rng):
    """Two black squares, one in each half of the image (halves split left/right or top/bottom at
    random), each of area frac/2, so they never overlap: total area ~= frac."""
    n, h, w, _ = u8.shape
    side = max(1, int(round(math.sqrt(frac * h * w / 2))))
    vertical = rng.uniform("orient", ()) < 0.5  # split into left | right halves
    u = rng.uniform("pos", (2, 2))
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    mask = np.zeros((n, h, w), bool)
    for k in range(2):
        span_w = np.where(vertical, w // 2, w)  # free room along each axis for patch k
        span_h = np.where(vertical, h, h // 2)
        x0 = np.where(vertical, k * (w // 2), 0) + np.floor(u[:, k, 0] * np.maximum(span_w - side + 1, 1))
        y0 = np.where(vertical, 0, k * (h // 2)) + np.floor(u[:, k, 1] * np.maximum(span_h - side + 1, 1))
        x0, y0 = x0.astype(np.int64)[:, None, None], y0.astype(np.int64)[:, None, None]
        mask |= (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)
    return np.where(mask[..., None], np.uint8(0), u8)


def pixel_dropout(u8, frac, rng):
    drop = rng.uniform("drop", u8.shape[1:3]) < frac
    return np.where(drop[..., None], np.uint8(0), u8)
