"""Batched image operations behind the perturbation kernels (internal; see :mod:`edgekd.perturb`):
filters, resampling, colour conversions and the OpenCV steps spatter needs, each matching the
reference's library (scipy, scikit-image, Pillow, OpenCV, ImageMagick) as its docstring says.

Images are ``(N, H, W, C)`` arrays. Work is vectorised over the batch: where the reference's own
library has a batched call that releases the GIL, it is used as it is (scipy.ndimage's Gaussian
filter and float64 correlation on axes 1, 2; Pillow's BOX resize on the images stacked so that no
row or column mixes two of them); the rest is element-wise numpy (float32 filters as sums of
shifted views, resampling as gathers with explicit boundary rules), and torch where it is
faster (``grid_sample``; zoom_blur's zooms as matrix products). No rounding-sensitive reduction
depends on the batch (elastic_transform's ``grid_sample`` works per output pixel, its displacement
filter is one matrix product per image, a zoom's products sum each output over one row or column
of one image), so an image's bytes do not depend on the batch it is processed in.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
from PIL import Image
from scipy import ndimage

from ._rng import Rng

# ---------------------------------------------------------------- filters and resampling

def _shifted(xp: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    idx = [slice(None)] * xp.ndim
    idx[axis] = slice(start, start + length)
    return xp[tuple(idx)]


def neighbours(p: np.ndarray, h: int, w: int):
    """For ``p``, a batch (N, h + 2, w + 2, ...) padded by one pixel on axes 1 and 2: ``v(dy, dx)``,
    the (N, h, w, ...) view whose every pixel is its neighbour at offset (dy, dx), each in -1..1."""
    return lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def take_pixels(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``np.take(x, idx, axis)`` along an axis before the last (channel) axis of a C-contiguous
    array, each pixel's C values taken as one item: numpy copies a pixel per index, not C values."""
    pixels = x.view(np.dtype((np.void, x.shape[-1] * x.itemsize)))[..., 0]
    out = np.take(pixels, idx, axis=axis)
    return out.view(x.dtype).reshape(*out.shape, x.shape[-1])


def pad_axis(x: np.ndarray, axis: int, r: int | tuple[int, int], mode: str) -> np.ndarray:
    """``np.pad`` of one axis by ``r`` on both sides, or by ``(before, after)`` (any numpy mode that
    maps to source indices: 'edge', 'symmetric', 'reflect', 'wrap'), as one take of whole rows or
    pixels: the same values, without np.pad's per-call Python work. Padding axis 1 then axis 2 is
    np.pad of both."""
    idx = np.pad(np.arange(x.shape[axis]), r, mode=mode)
    if axis == x.ndim - 2 and x.ndim == 4 and x.flags.c_contiguous:
        return take_pixels(x, idx, axis)
    return np.take(x, idx, axis=axis)


def _weighted_sum(terms, dtype, weights: np.ndarray, shape) -> np.ndarray:
    """sum of w * v over ``terms`` (weight, view) in that order into ``dtype``, each product
    rounded (in numpy's type for weights times views) before it is added, like ``out += w * v``,
    without a temporary array per term."""
    out, tmp = np.zeros(shape, dtype), np.empty(shape, np.result_type(weights, dtype))
    for wt, v in terms:
        np.multiply(v, wt, out=tmp)
        out += tmp
    return out


def correlate1d(x: np.ndarray, w: np.ndarray, axis: int, mode: str) -> np.ndarray:
    """Correlate axis 1 or 2 of ``x`` with odd-length weights; ``mode`` is a numpy pad mode
    ('edge' = scipy 'nearest', 'symmetric' = scipy 'reflect', 'reflect' = cv2 REFLECT_101)."""
    r = len(w) // 2
    xp, n = pad_axis(x, axis, r, mode), x.shape[axis]
    return _weighted_sum([(wi, _shifted(xp, axis, i, n)) for i, wi in enumerate(w)], x.dtype, w, x.shape)


# numpy pad modes -> scipy.ndimage modes with the same source indices
_SCIPY_MODE = {"edge": "nearest", "symmetric": "reflect", "reflect": "mirror"}


# nonzero taps from which a float64 correlation goes through an FFT (fft_correlate2d): the direct
# sums' cost grows with the taps, the FFT's barely (5 images at 128 px: 4.7 ms direct against 10.3
# for the FFT with ImageNet-C defocus's 61 taps, 12.7 against 10.7 ms with 89, 60 against 14 with 429)
FFT_MIN_TAPS = 80


def correlate2d(x: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """2-D correlation over axes 1, 2 with an odd-sized kernel, in x's float dtype (zero taps
    skipped). float64 goes through ``scipy.ndimage.correlate``, which sums the taps' products in
    double in the same row-major order (bit for bit, 1.5-4x faster), or, from FFT_MIN_TAPS nonzero
    taps (defocus's disks in ImageNet-C's table; CIFAR's have at most 25), ``fft_correlate2d``;
    float32 (spatter's 3x3 steps, cv2's float arithmetic) keeps its float32 sums of shifted views."""
    if x.dtype == np.float64 and np.count_nonzero(k) >= FFT_MIN_TAPS:
        return fft_correlate2d(x, k, mode)
    if x.dtype == np.float64:
        return ndimage.correlate(x, k.astype(np.float64).reshape(1, *k.shape, *(1,) * (x.ndim - 3)),
                                 mode=_SCIPY_MODE[mode])
    ph, pw = k.shape[0] // 2, k.shape[1] // 2
    xp = pad_axis(pad_axis(x, 1, ph, mode), 2, pw, mode)
    h, w = x.shape[1:3]
    return _weighted_sum([(k[i, j], xp[:, i:i + h, j:j + w]) for i, j in zip(*np.nonzero(k))], x.dtype, k, x.shape)


def fft_correlate2d(x: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """``correlate2d`` of float64 images (N, H, W, C) through real FFTs of the padded block, as
    cv2.filter2D itself filters with kernels of 50 or more entries (the reference's defocus blur):
    equal to the direct sums within a few 1e-15 (tests/test_perturb.py); defocus at 128 px, 153
    images, 5 severities: 4.37 -> 1.25 s (benchmarks/RESULTS.md, issue 21)."""
    from scipy import fft

    ph, pw = k.shape[0] // 2, k.shape[1] // 2
    xp = pad_axis(pad_axis(x, 1, ph, mode), 2, pw, mode)
    hp, wp = xp.shape[1:3]
    size = (fft.next_fast_len(hp, real=True), fft.next_fast_len(wp, real=True))
    # correlation = convolution with the flipped kernel; the circular wrap of a transform of at
    # least the padded size reaches only the first rows and columns, outside the valid part
    kf = fft.rfft2(k[::-1, ::-1].astype(np.float64), size)
    y = fft.irfft2(fft.rfft2(xp, size, axes=(1, 2)) * kf[None, :, :, None], size, axes=(1, 2))
    return np.ascontiguousarray(y[:, 2 * ph:2 * ph + x.shape[1], 2 * pw:2 * pw + x.shape[2]])


def _has_taps(sigma: float, truncate: float) -> bool:
    """Whether scipy's Gaussian kernel has taps beside its centre (radius int(truncate * sigma + 0.5)
    above 0); without them the filter multiplies by 1.0, a copy."""
    return sigma > 1e-15 and int(truncate * float(sigma) + 0.5) > 0


def gaussian(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0,
             dtype=np.float64) -> np.ndarray:
    """``skimage.filters.gaussian``: scipy's ``gaussian_filter`` on axes 1 then 2 of x (N, H, W[, C]),
    summed in double and written as ``dtype`` after each axis (skimage's float32 path; the
    reference's float64 one to the last bit); default border 'nearest'. One compiled pass per axis
    that releases the GIL: 3-4x faster than sums of shifted views."""
    if not _has_taps(sigma, truncate):
        return x.astype(dtype)
    sigmas = [0.0] * x.ndim
    sigmas[1] = sigmas[2] = float(sigma)
    return ndimage.gaussian_filter(x, sigmas, mode=_SCIPY_MODE[mode], truncate=truncate, output=dtype)


@functools.lru_cache(maxsize=64)
def gaussian_matrix(n: int, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """(n, n) float64 matrix G of scipy's ``gaussian_filter1d`` along an axis of length n, borders
    folded in (its columns are the filter's responses to unit impulses): G @ v filters v. For
    random fields (elastic_transform's displacements), where a matrix product per image is 3-6x
    faster than the line-by-line filter and equal to it within a few units of the last bit."""
    g = np.eye(n)
    if _has_taps(sigma, truncate):
        g = ndimage.gaussian_filter1d(g, float(sigma), axis=0, mode=_SCIPY_MODE[mode], truncate=truncate)
    g.flags.writeable = False
    return g


def sample_planes(planes, ys: np.ndarray, xs: np.ndarray, mode: str):
    """Sample images held as a torch tensor (N, C, H, W) at float rows ``ys`` and columns ``xs``
    (N, h, w), order 1, in their dtype, with torch's ``grid_sample`` (one pass instead of four
    gathers); returns (N, C, h, w). Reflection about the edge pixels' centres
    (``align_corners=True``) is cv2's BORDER_REFLECT_101 ('reflect101': d c b | a b c d), about
    their outer edges (``align_corners=False``) scipy's 'reflect' ('symmetric': d c b a | a b c d)."""
    import torch
    import torch.nn.functional as F

    if mode not in ("reflect101", "symmetric"):
        raise ValueError(f"sample_planes: mode must be reflect101 or symmetric, got {mode!r}")
    h, w = planes.shape[2:]
    grid = np.empty((*np.broadcast_shapes(xs.shape, ys.shape), 2), planes.numpy().dtype)  # (x, y), in float64
    for k, (v, size) in enumerate(((xs, w), (ys, h))):
        if mode == "reflect101":  # pixel i at -1 + 2 i / (size - 1)
            np.subtract(v * (2.0 / max(size - 1, 1)), 1, out=grid[..., k])
        else:  # pixel i at -1 + (2 i + 1) / size
            np.subtract((2 * v + 1) / size, 1, out=grid[..., k])
    return F.grid_sample(planes, torch.from_numpy(grid), mode="bilinear", padding_mode="reflection",
                         align_corners=mode == "reflect101")


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


@functools.lru_cache(maxsize=256)
def zoom_matrix(n: int, z: float) -> np.ndarray:
    """(n, n) float64 matrix Z of one axis of ``clipped_zoom``: row i holds the two weights of output
    pixel i at its two source pixels (``_zoom_taps``; where both are one pixel the second weight is
    0), so Z @ v zooms v along that axis."""
    i0, i1, w0, w1 = _zoom_taps(n, z)
    m = np.zeros((n, n))
    m[np.arange(n), i1] = w1
    m[np.arange(n), i0] += w0  # i0 == i1 only with w1 == 0: w0 itself
    m.flags.writeable = False
    return m


def zoom_planes(planes: np.ndarray, width: int, zooms: list[float]) -> np.ndarray:
    """``clipped_zoom`` at each of ``zooms`` of float64 images laid out (H, N * C * W) (the rows of
    every image and channel side by side), returned float32 (len(zooms), H, N * C * W): the rows by
    ``zoom_matrix(H)`` from the left, all zooms in one matrix product (their matrices stacked), then
    the columns by each zoom's ``zoom_matrix(W)`` from the right, one batched product, with torch's
    BLAS (one thread in the sweep's workers); zoom 1 is the image itself. Each output sums the same
    two products per axis as ``clipped_zoom`` (the matrices' other entries are 0), with fused
    multiply-adds: the float64 results differ from scipy's in the last bit a little more often (48
    against 25 float32 values in 16 million after the cast, on 200 CIFAR-10 images at CIFAR's 26
    zooms; zoom_blur's bytes unchanged on 1,000 CIFAR-10 images and 100 at 64 px). The products
    of zoom_blur's 5 severities of 1,000 CIFAR images: 0.41 s two per zoom, 0.33 s batched (one
    thread; benchmarks/RESULTS.md, issue 21)."""
    import torch

    h = planes.shape[0]
    out = np.empty((len(zooms), *planes.shape), np.float32)
    moved = [k for k, z in enumerate(zooms) if z != 1.0]
    for k, z in enumerate(zooms):
        if z == 1.0:  # the identity: 1 * v plus zeros is v (float32 values, exactly)
            out[k] = planes
    if moved:
        m, size = len(moved), len(moved) * planes.size
        left = torch.from_numpy(np.concatenate([zoom_matrix(h, zooms[k]) for k in moved]))
        rows = torch.mm(left, torch.from_numpy(planes), out=_scratch("zoom rows", size).view(m * h, -1))
        right = torch.from_numpy(np.stack([zoom_matrix(width, zooms[k]).T for k in moved]))
        prod = torch.bmm(rows.view(m, -1, width), right, out=_scratch("zoom cols", size).view(m, -1, width))
        done = torch.from_numpy(out.reshape(len(zooms), -1))
        if moved == list(range(moved[0], moved[0] + m)):  # rounded to float32 straight into out
            done[moved[0]:moved[0] + m].copy_(prod.view(m, -1))
        else:
            done[moved] = prod.view(m, -1).float()
    return out


_SCRATCH = threading.local()  # per thread: {name: float64 torch buffer} (scratch)


def _scratch(name: str, size: int):
    """A float64 torch tensor of ``size`` values, reused by the calls of this thread that ask for
    ``name`` (grown when too small): the kernels' large temporaries are allocated once, not per
    chunk, so a new generating process faults fewer fresh pages in (zoom_blur's first call in one
    took 0.5 s against 0.33 s for the next)."""
    import torch

    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.numel() < size:
        buf = bufs[name] = torch.empty(size, dtype=torch.float64)
    return buf[:size]


def clipped_zoom(x: np.ndarray, z: float, dtype=None) -> np.ndarray:
    """Bilinear zoom of axes 1, 2 in float64, cast to ``dtype`` (default x's) like scipy's output
    array; x may already be float64 (zoom_blur converts once for all its zooms).
    Separable (rows, then columns): the float64 sums differ from scipy's corner order in the last
    bit at most, which the cast to float32 removes (tests/test_perturb.py compares with
    scipy.ndimage.zoom; the zoom_blur and snow bytes of all 5 severities were unchanged on 1,000
    CIFAR-10 images and 100 at 64 px)."""
    dtype = x.dtype if dtype is None else dtype
    r0, r1, ry0, ry1 = _zoom_taps(x.shape[1], z)
    c0, c1, cx0, cx1 = _zoom_taps(x.shape[2], z)
    if all(np.array_equal(i, np.arange(len(i))) and not wt.any() for i, wt in ((r0, ry1), (c0, cx1))):
        return x.astype(dtype)  # zoom to the same size: v * 1 * 1 + 0-weighted terms == v
    x = x.astype(np.float64, copy=False)
    rows = np.take(x, r0, axis=1)
    rows *= ry0[:, None, None]
    rows += np.take(x, r1, axis=1) * ry1[:, None, None]
    # columns: takes of whole pixels, weights repeated per channel, so numpy's loops run over
    # W * C contiguous values rather than C at a time
    c = x.shape[3]
    out = take_pixels(rows, c0, 2)
    out *= np.repeat(cx0[:, None], c, axis=1)
    right = take_pixels(rows, c1, 2)
    right *= np.repeat(cx1[:, None], c, axis=1)
    out += right
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


def _taps_that_count(k: np.ndarray, dtype) -> int:
    """How many of a decreasing kernel's first taps can change a rounded 0..255 result summed in
    ``dtype``, tap by tap, over values in 0..255: the taps after them each add at most k * 255 (the
    product rounded), under a quarter of an ulp of 0.25. Such a term leaves a running sum of 0.25 or
    more as it is (round to nearest), and a sum under 0.25 stays under 0.5 with them (in float32
    each adds under 2^-27) and rounds to 0 either way: the bytes are those of the whole kernel.
    CIFAR's motion blur keeps 62 of its 75 taps (sigma 1: 7 of 13); ImageNet's and snow's keep all."""
    tiny = 0.25 * np.finfo(dtype).eps / 4  # a quarter of ulp(0.25)
    small = np.asarray(k, dtype).astype(np.float64) * 255 < tiny
    if not small.any() or np.any(np.diff(k) > 0):
        return len(k)
    return max(1, int(np.argmax(small)))  # the first small tap: every later one is smaller


def motion_blur_255(x: np.ndarray, radius: float, sigma: float, angle_deg: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) in 0..255 -> rounded 0..255 (IM reads and writes bytes; 'edge' pixels), in
    x's float dtype. Images are sorted by angle, so for each tap the images with the same offset
    are a run: the tap is a slice of the edge-padded batch per run, not a gather per pixel."""
    return motion_blurs_255(x, [(radius, sigma)], angle_deg)[0]


def motion_blurs_255(x: np.ndarray, kernels: list[tuple[float, float]], angle_deg: np.ndarray) -> list[np.ndarray]:
    """``motion_blur_255`` of x with each ``(radius, sigma)`` of ``kernels`` at the same angles: the
    images are sorted and edge-padded once, by the largest offsets (a wider edge padding holds the
    same values where a narrower one has any)."""
    n, h, w, _ = x.shape
    made = []
    for radius, sigma in kernels:
        k, ox, oy = motion_blur_kernel(radius, sigma, angle_deg)
        taps = _taps_that_count(k, x.dtype)
        made.append((k[:taps], np.broadcast_to(ox[:, :taps], (n, taps)), np.broadcast_to(oy[:, :taps], (n, taps))))
    order = np.argsort(np.broadcast_to(angle_deg, (n,)), kind="stable")
    # edge padding by the offsets that occur on each side only (not the kernels' full width)
    top = max(0, *(-int(oy.min()) for _, _, oy in made))
    left = max(0, *(-int(ox.min()) for _, ox, _ in made))
    xp = pad_axis(x[order], 1, (top, max(0, *(int(oy.max()) for _, _, oy in made))), "edge")
    xp = pad_axis(xp, 2, (left, max(0, *(int(ox.max()) for _, ox, _ in made))), "edge")
    outs = []
    for k, ox, oy in made:
        ox, oy = ox[order], oy[order]
        # per tap, where the offset changes along the images sorted by angle: the runs' boundaries
        changes = ((np.diff(ox, axis=0) != 0) | (np.diff(oy, axis=0) != 0)).T.copy()
        out = np.zeros(x.shape, x.dtype)
        for t in range(len(k)):
            cut = np.flatnonzero(changes[t]) + 1
            for a0, a1 in zip([0, *cut], [*cut, n]):
                dy, dx = top + oy[a0, t], left + ox[a0, t]
                out[a0:a1] += x.dtype.type(k[t]) * xp[a0:a1, dy:dy + h, dx:dx + w]
        back = np.empty_like(out)
        back[order] = out
        outs.append(np.clip(np.rint(back), 0, 255))
    return outs


def _pil_resize(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One PIL BOX resize of a 2-D uint8 array of pixels (rows, cols, C) to ``size`` (cols, rows)."""
    img = Image.fromarray(planes[..., 0] if planes.shape[-1] == 1 else planes)
    out = np.asarray(img.resize(size, Image.Resampling.BOX))
    return out.reshape(size[1], size[0], planes.shape[-1])


def pil_box_resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``Image.resize((w, h), Image.BOX)`` of every uint8 image (N, H, W, C), by PIL itself in two
    calls for the whole batch. PIL resizes horizontally, then vertically through an 8-bit image, and
    each pass's coefficients depend only on the sizes along its axis: so the horizontal pass runs on
    the images stacked one above another (rows never mix), the vertical pass on them side by side
    (columns never mix), and each image gets the bytes of its own resize (3x faster than per image,
    or than the fixed-point sums in numpy)."""
    n, hh, ww, c = x.shape
    if w != ww:
        x = _pil_resize(np.ascontiguousarray(x).reshape(n * hh, ww, c), (w, n * hh)).reshape(n, hh, w, c)
    if h != hh:
        side = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(hh, n * w, c)
        x = _pil_resize(side, (n * w, h)).reshape(h, n, w, c).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(x)


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


def pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def to_unit(u8: np.ndarray, dtype=np.float64) -> np.ndarray:
    """u8 / 255. in the dtype the reference computes in (float64 unless it casts to float32)."""
    return u8.astype(dtype) / dtype(255.0)


def unit_bytes(x: np.ndarray) -> np.ndarray:
    """The reference's ``np.uint8(np.clip(x, 0, 1) * 255)`` (truncation), as ``perturb.apply``
    finishes a float result: for kernels that make bytes themselves (tables per level)."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def gray(x: np.ndarray) -> np.ndarray:
    """cv2 RGB2GRAY weights; a 1-channel image is its own grey."""
    if x.shape[-1] == 1:
        return x
    return (0.299 * x[..., 0:1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]).astype(x.dtype)


def tint(rgb: tuple, c: int) -> np.ndarray:
    """An RGB colour in 0..1 as a C-channel vector (grey via 0.2989/0.5870/0.1140 for C = 1)."""
    v = np.asarray(rgb, np.float32) / 255.0
    return v if c == 3 else np.array([v @ np.array([0.2989, 0.5870, 0.1140], np.float32)])


def rgb2hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``skimage.color.rgb2hsv`` (later channel wins ties for the hue branch) as planes (h, s, v):
    the channels are made contiguous first, so every step is a contiguous element-wise pass."""
    r, g, b = (np.ascontiguousarray(rgb[..., k]) for k in range(3))
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    s = np.divide(delta, v, out=np.zeros_like(v), where=delta != 0)
    d = np.where(delta == 0, 1.0, delta)
    h = np.zeros_like(v)
    h = np.where(r == v, (g - b) / d, h)
    h = np.where(g == v, 2.0 + (b - r) / d, h)
    h = np.where(b == v, 4.0 + (r - g) / d, h)
    # (h / 6) % 1.0: h / 6 is in [-1/6, 5/6], where numpy's remainder (fmod, then + 1.0 where
    # negative) is the same sum as this masked add (a third of hsv_op's time in the remainder)
    h /= 6.0
    h[h < 0] += 1.0
    h[delta == 0] = 0.0
    return h, s, v


def _hsv_sectors(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``skimage.color.hsv2rgb``'s sector (0..5) of each hue and the position in it."""
    h6 = h * 6
    hi = np.floor(h6)
    sector = hi.astype(np.int64)
    if sector.size and (sector.min() < 0 or sector.max() > 5):  # rgb2hsv's h is 1.0 where a hue just
        sector %= 6  # below 0 rounds up (sector 6, i.e. 0); other callers' h may be anything
    return sector, h6 - hi


# sector -> which of (v, t, p, q) is r, g and b: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
_SECTOR_PICK = ((0, 3, 2, 2, 1, 0), (1, 0, 0, 3, 2, 2), (2, 2, 1, 0, 0, 3))


def _per_channel(hi: np.ndarray, vtpq: tuple) -> list[np.ndarray]:
    """For r, g and b: each pixel's pick of the four ``vtpq`` planes by its hue sector."""
    return [np.choose(hi, [vtpq[k] for k in pick]) for pick in _SECTOR_PICK]


def hsv_op(u8: np.ndarray, channel: int, fns: list) -> list[np.ndarray]:
    """Apply each of ``fns`` to one HSV channel (1 = saturation, 2 = value), one output per fn, with
    ``skimage.color.hsv2rgb``'s arithmetic: r, g, b are v, t = v (1 - (1 - f) s), p = v (1 - s) or
    q = v (1 - f s) by hue sector. What does not depend on the fn is computed once: the conversion
    to HSV and, per channel, the sector's factor of v (value) or the factor of s in 1 - ... s
    (saturation; 1 + (-a) s is 1 - a s exactly, and v * 1 is v). 1-channel images go through RGB
    and back, which is what the imagecorruptions package does for grey input."""
    x = to_unit(u8, np.float64)
    rgb = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    h, s, v = rgb2hsv(rgb)
    hi, f = _hsv_sectors(h)
    outs = []
    if channel == 2:  # r = v' * (1, 1 - (1 - f) s, 1 - s or 1 - f s)
        factors = _per_channel(hi, (np.ones_like(s), 1 - (1 - f) * s, 1 - s, 1 - f * s))
        for fn in fns:
            v2 = fn(v)
            outs.append(np.stack([v2 * fc for fc in factors], axis=-1))
    elif channel == 1:  # r = v * (1 + b s'), b = 0, -(1 - f), -1 or -f
        slopes = _per_channel(hi, (np.zeros_like(s), -(1 - f), -np.ones_like(s), -f))
        for fn in fns:
            s2 = fn(s)
            outs.append(np.stack([v * (1 + b * s2) for b in slopes], axis=-1))
    else:
        raise ValueError(f"hsv_op: channel must be 1 or 2, got {channel}")
    return [o[..., :1] for o in outs] if x.shape[-1] == 1 else outs


# ---------------------------------------------------------------- canny / distance (spatter)

def canny(img: np.ndarray, low: int, high: int) -> np.ndarray:
    """cv2.Canny(img, low, high) with its defaults (3x3 Sobel on replicated borders, L1 magnitude,
    4-direction non-maximum suppression with tan 22.5 deg in 15-bit fixed point, 8-connected
    hysteresis). img (N, H, W) int."""
    n, h, w = img.shape
    p = pad_axis(pad_axis(img.astype(np.int32), 1, 1, "edge"), 2, 1, "edge")  # |terms| < 2^31
    s = neighbours(p, h, w)
    gx = s(-1, 1) + 2 * s(0, 1) + s(1, 1) - s(-1, -1) - 2 * s(0, -1) - s(1, -1)
    gy = s(1, -1) + 2 * s(1, 0) + s(1, 1) - s(-1, -1) - 2 * s(-1, 0) - s(-1, 1)
    mag = np.abs(gx) + np.abs(gy)
    mp = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    m = neighbours(mp, h, w)
    ax, ay = np.abs(gx), np.abs(gy) << 15
    tg22 = ax * 13573  # round(tan(22.5 deg) * 2^15)
    horiz = ay < tg22
    vert = ~horiz & (ay > tg22 + (ax << 16))
    same_sign = (gx ^ gy) >= 0
    diag = np.where(same_sign, (mag > m(-1, -1)) & (mag > m(1, 1)), (mag > m(-1, 1)) & (mag > m(1, -1)))
    keep = (mag > low) & np.where(horiz, (mag > m(0, -1)) & (mag >= m(0, 1)),
                                  np.where(vert, (mag > m(-1, 0)) & (mag >= m(1, 0)), diag))
    # hysteresis: the 8-connected components of kept pixels (within each image) with a strong one
    from scipy import ndimage

    labels, _ = ndimage.label(keep, structure=np.pad(np.ones((1, 3, 3), bool), ((1, 1), (0, 0), (0, 0))))
    strong = np.zeros(labels.max() + 1, bool)
    strong[labels[keep & (mag > high)]] = True
    strong[0] = False
    return strong[labels]


def _least(first: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    """Element-wise minimum of arrays of one shape (or broadcast to the first's), into ``first``."""
    for a in rest:
        np.minimum(first, a, out=first)
    return first


def chamfer_distance(zero: np.ndarray) -> np.ndarray:
    """cv2.distanceTransform(src, DIST_L2, 5) where ``zero`` marks src == 0: OpenCV's two-pass 5x5
    chamfer (a, b, c = 1, 1.4, 2.1969 in 16-bit fixed point). Each row's left/right recurrence
    t[j] = min(v[j], t[j -/+ 1] + a) is a running minimum, so rows are vectorised."""
    n, h, w = zero.shape
    hv, dg, lg = 65536, 91750, 143976  # cvRound(metric * 2^16)
    big = (2**31 - 1) >> 2  # INIT_DIST0 on the 2-pixel border
    t = np.full((n, h + 4, w + 4), big, np.int32)  # big + lg and the ramp (w < 24,000) fit
    ramp = hv * np.arange(w, dtype=np.int32)

    def scan(v, reverse):
        v = v[:, ::-1] if reverse else v
        out = ramp + np.minimum.accumulate(v - ramp, axis=1)
        return out[:, ::-1] if reverse else out

    for i in range(2, h + 2):  # forward: rows above, then left neighbour
        r1, r2 = t[:, i - 1], t[:, i - 2]
        v = _least(r2[:, 1:w + 1] + lg, r2[:, 3:w + 3] + lg, r1[:, 0:w] + lg, r1[:, 1:w + 1] + dg,
                   r1[:, 2:w + 2] + hv, r1[:, 3:w + 3] + dg, r1[:, 4:w + 4] + lg,
                   t[:, i, 1:w + 1] + hv)  # the last: left border column (INIT_DIST0)
        t[:, i, 2:w + 2] = np.where(zero[:, i - 2], 0, scan(np.where(zero[:, i - 2], 0, v), False))
    for i in range(h + 1, 1, -1):  # backward: rows below, then right neighbour
        r1, r2 = t[:, i + 1], t[:, i + 2]
        v = _least(t[:, i, 2:w + 2].copy(), r2[:, 3:w + 3] + lg, r2[:, 1:w + 1] + lg, r1[:, 4:w + 4] + lg,
                   r1[:, 3:w + 3] + dg, r1[:, 2:w + 2] + hv, r1[:, 1:w + 1] + dg, r1[:, 0:w] + lg,
                   t[:, i, w + 2:w + 3] + hv)
        t[:, i, 2:w + 2] = scan(v, True)
    return t[:, 2:h + 2, 2:w + 2].astype(np.float32) * np.float32(1.0 / 65536)  # (float)t0 * scale


def equalize_hist(u: np.ndarray) -> np.ndarray:
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
