"""The perturbation kernels (internal; the public API, the parameter tables and the list of sources
live in :mod:`edgekd.perturb`). Each registers itself with ``@perturbation`` where it is defined.

Every kernel takes uint8 images ``(N, H, W, C)``, the table row ``c`` of one severity and an
:class:`~edgekd._rng.Rng`, and returns floats in [0, 1] (``perturb.apply`` clips and truncates them
like the reference's ``np.uint8(x * 255)``) or uint8 where the reference's last step already
produces bytes (JPEG, pixelate, ImageMagick's motion blur, frost, the missing-data ones). The
building blocks (filters, resampling, colour, OpenCV steps) are in ``_imageops.py``, the random
numbers in ``_rng.py``. Registration order: the 15 common corruptions by category, the extras,
missing data.
"""

from __future__ import annotations

import functools
import io
import math
import sys

import numpy as np
from PIL import Image

from ._imageops import (
    canny,
    chamfer_distance,
    clipped_zoom,
    correlate1d,
    correlate2d,
    equalize_hist,
    gaussian,
    gaussian_matrix,
    gray,
    hsv_op,
    motion_blur_255,
    motion_blurs_255,
    neighbours,
    pad_axis,
    pil_box_resize,
    plasma_fractal,
    pow2,
    sample_planes,
    take_pixels,
    tint,
    to_unit,
    unit_bytes,
    zoom_planes,
)
from . import _frost
from ._rng import Rng
from .perturb_registry import CIFAR_TABLE_MAX_PX, perturbation

# the chunk size (N * H * W * C values) of the kernels faster away from perturb's default (1 << 18),
# per benchmarks/perturb_chunks.py (RESULTS.md, issue 21): element-wise float64 kernels that hold the
# five severities' outputs and their draws at once (and zoom_blur's sums) run 10-25 % faster in
# chunks a quarter the size, their arrays in a core's cache, at 32, 64 and 128 px alike; spatter,
# whose steps are on single-channel maps and whose chamfer distance has a numpy step per row of a
# chunk, in chunks four times larger (32 px: 0.51 -> 0.49 s, 64: 0.30 -> 0.29, 128: 1.63 -> 1.33)
SMALL_CHUNK, LARGE_CHUNK = 1 << 16, 1 << 20

# ---------------------------------------------------------------- the 15 common corruptions: noise

@perturbation("gaussian_noise", "common", "x + N(0, sigma) per pixel and channel", many=True,
              chunk_elements=SMALL_CHUNK)
def gaussian_noise(u8, rows, rng):
    x = to_unit(u8, np.float64)
    return [x + rng.normal("g", x.shape[1:], scale=c) for c in rows]


@perturbation("shot_noise", "common", "Poisson(x * lambda) / lambda (exact Poisson, counter-based RNG)", many=True)
def shot_noise(u8, rows, rng):
    ks = rng.poisson_many("p", u8, [np.arange(256) / 255.0 * c for c in rows])  # Poisson(x * c) counts
    # the reference's np.uint8(np.clip(k / c, 0, 1) * 255), computed once per count, then looked up
    return [(np.clip(np.arange(int(k.max(initial=0)) + 1) / c, 0, 1) * 255).astype(np.uint8).take(k)
            for k, c in zip(ks, rows)]


@perturbation("impulse_noise", "common",
              "salt & pepper on a fraction of values (per element, scikit-image >= 0.19 style)", many=True,
              chunk_elements=SMALL_CHUNK)
def impulse_noise(u8, rows, rng):
    """In bytes: a flipped value is 255 (salt) or 0 (pepper), any other the byte the reference's
    np.uint8(np.clip(u8 / 255, 0, 1) * 255) gives back, looked up per level."""
    u = rng.uniform("flip", u8.shape[1:])
    salt = np.where(rng.uniform("salt", u8.shape[1:]) < 0.5, np.uint8(255), np.uint8(0))
    kept = unit_bytes(to_unit(np.arange(256, dtype=np.uint8))).take(u8)
    return [np.where(u < c, salt, kept) for c in rows]


# ---------------------------------------------------------------- blur

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


@perturbation("defocus_blur", "common", "anti-aliased disk kernel, cv2 REFLECT_101 borders")
def defocus_blur(u8, c, rng):
    return correlate2d(to_unit(u8), _disk(*c), "reflect")


def _glass_shuffle(x: np.ndarray, d: int, dxy: np.ndarray) -> np.ndarray:
    """The reference's 'swap' ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views is a copy
    ``x[h, w] = x[h', w']`` (the second assignment reads the already overwritten view), at positions
    h = H-d .. d+1, w = W-d .. d+1 in descending raster order: what ``glass_shuffle_sequential``
    does one position at a time, as a few whole-batch steps.

    A position p reads its source s(p) as it is at p's turn: already overwritten when s(p) is a
    position of the loop visited earlier (a larger raster index), so p ends with s(p)'s final
    value; else with s(p)'s original one. Following those links (pointer jumping: each step
    doubles the links followed, for the positions still linked only) gives, for every pixel, the
    original pixel its final value comes from, and one gather makes the image (128 px, d = 2-4:
    3.6 -> 1.5 ms per 5 images). With d = 1 (offsets -1 or 0) no link is followed."""
    n, h, w, _ = x.shape
    hs, ws = np.arange(d + 1, h - d + 1), np.arange(d + 1, w - d + 1)
    loop = (slice(None), slice(hs[0], hs[-1] + 1), slice(ws[0], ws[-1] + 1))  # the loop's positions
    src_y = hs[None, :, None] + dxy[loop + (1,)]
    src_x = ws[None, None, :] + dxy[loop + (0,)]
    raster = np.arange(h * w).reshape(h, w)
    frm = np.broadcast_to(raster, (n, h, w)).copy()  # pixel -> the pixel its value comes from
    frm[loop] = src_y * w + src_x
    frm = (frm + (np.arange(n) * (h * w))[:, None, None]).ravel()  # indices into the whole batch
    if d > 1:  # (d = 1: offsets -1 or 0 never reach a position moved before)
        link = np.zeros((n, h, w), bool)  # ... that pixel's final value (True) or its original (False)
        link[loop] = (src_y >= hs[0]) & (src_y <= hs[-1]) & (src_x >= ws[0]) & (src_x <= ws[-1]) \
            & (src_y * w + src_x > raster[loop[1:]])
        link = link.ravel()
        live = np.flatnonzero(link)  # only the positions still linked jump (fewer every step)
        while live.size:
            src = frm[live]
            frm[live], link[live] = frm[src], link[src]  # every read before any write
            live = live[link[live]]
    return take_pixels(np.ascontiguousarray(x).reshape(n * h * w, -1), frm, 0).reshape(x.shape)


def glass_shuffle_sequential(x: np.ndarray, d: int, dxy: np.ndarray) -> np.ndarray:
    """The reference's literal loop, each step vectorised over the batch (what ``_glass_shuffle``
    must equal: tests/test_perturb.py)."""
    x = x.copy()
    n, h, w, _ = x.shape
    b = np.arange(n)
    for hh in range(h - d, d, -1):
        for ww in range(w - d, d, -1):
            x[:, hh, ww] = x[b, hh + dxy[:, hh, ww, 1], ww + dxy[:, hh, ww, 0]]
    return x


@perturbation("glass_blur", "common",
              "Gaussian blur, local pixel moves (the reference's copy-not-swap), Gaussian blur", many=True)
def glass_blur(u8, rows, rng):
    """Severities with the same sigma and max delta share the first blur and their common
    iterations of moves (the moves of iteration k are one draw for every severity): CIFAR's 4 and 5
    continue 2 and 3."""
    done: dict[tuple, np.ndarray] = {}  # (sigma, d, iterations done) -> the image after them
    outs = []
    for sigma, d, iterations in rows:
        k = max((k for s_, d_, k in done if (s_, d_) == (sigma, d) and k <= iterations), default=None)
        if k is None:  # the reference's np.uint8(gaussian(...) * 255): the moves shift bytes, not floats
            k, done[sigma, d, 0] = 0, (gaussian(to_unit(u8), sigma) * 255).astype(np.uint8)
        x = done[sigma, d, k]
        for it in range(k, iterations):
            x = done[sigma, d, it + 1] = _glass_shuffle(x, d, rng.integers(f"d{it}", (*u8.shape[1:3], 2), -d, d))
        outs.append(gaussian(x / 255.0, sigma))
    return outs


@perturbation("motion_blur", "common",
              "ImageMagick motion kernel as ported by imagecorruptions (one-sided Gaussian line, "
              "random angle); approximates ImageMagick", many=True)
def motion_blur(u8, rows, rng):
    """Severities share the angles and the images sorted by them and padded (motion_blurs_255)."""
    angle = rng.uniform("angle", (), -45, 45)
    return [y.astype(np.uint8) for y in motion_blurs_255(u8.astype(np.float32), [c[:2] for c in rows], angle)]


@perturbation("zoom_blur", "common", "mean of centre zooms (scipy order-1 zoom, central crop)", many=True,
              chunk_elements=SMALL_CHUNK)
def zoom_blur(u8, rows, rng):
    """Severities share their zooms: each distinct zoom is made once per block of images, and a
    severity whose zooms start with another's (CIFAR's are prefixes of one another) continues that
    one's running float32 sum, so each severity's sum is the one of its own loop (ascending zooms
    added to zeros, like the reference). Up to CIFAR_TABLE_MAX_PX the zooms are matrix products on
    the block laid out as rows of planes, all zooms at once (``zoom_planes``; the 5 severities of
    1,000 CIFAR images, one thread: 0.56 s with clipped_zoom, 0.38 now); above, where a dense
    matrix costs more per pixel than it saves (1.1 against 1.8 s at 128 px), the separable
    ``clipped_zoom``; the same bytes either way."""
    zooms = [tuple(float(z) for z in np.arange(1, stop, step)) for stop, step in rows]
    distinct = sorted(set().union(*zooms))
    n, h, w, c = u8.shape
    by_matrix = max(h, w) <= CIFAR_TABLE_MAX_PX
    outs = [np.empty(u8.shape, np.float32) for _ in rows]
    step = max(1, (1 << 16) // u8[0].size)  # blocks that stay in cache across the zooms
    for s in range(0, n, step):
        x = to_unit(u8[s:s + step], np.float32)
        if by_matrix:
            x = np.ascontiguousarray(x.transpose(1, 0, 3, 2))  # (H, images, C, W)
            planes = x.astype(np.float64).reshape(h, -1)
            zoomed = dict(zip(distinct, zoom_planes(planes, w, distinct).reshape(len(distinct), *x.shape)))
        else:
            x64 = x.astype(np.float64)
            zoomed = {z: clipped_zoom(x64, z, np.float32) for z in distinct}
        sums: dict[tuple, np.ndarray] = {(): np.zeros_like(x)}
        for zs in sorted(set(zooms), key=len):
            start = max((k for k in sums if zs[:len(k)] == k), key=len)  # the longest prefix summed
            acc = sums[start].copy()
            for z in zs[len(start):]:
                acc += zoomed[z]
            sums[zs] = acc
        for out, zs in zip(outs, zooms):
            y = (x + sums[zs]) / (len(zs) + 1)
            out[s:s + step] = y.transpose(1, 0, 3, 2) if by_matrix else y
    return outs


# ---------------------------------------------------------------- weather

@perturbation("snow", "common",
              "zoomed, thresholded noise streaked by the ImageMagick-style motion kernel; greyed image",
              many=True)
def snow(u8, rows, rng):
    x = to_unit(u8, np.float32)
    n, h, w, _ = x.shape
    grey = np.maximum(x, gray(x) * 1.5 + 0.5)  # the same for every severity, and so is the angle
    angle = rng.uniform("angle", (), -135, -45)
    outs = []
    for c in rows:
        layer = rng.normal("layer", (h, w, 1), loc=c[0], scale=c[1]).astype(np.float32)
        layer = clipped_zoom(layer, c[2])
        layer[layer < c[3]] = 0
        layer = np.floor(np.clip(layer, 0, 1) * 255)  # PIL 'L' via astype(np.uint8)
        layer = motion_blur_255(layer, c[4], c[5], angle)
        layer /= np.float32(255.0)
        y = np.multiply(x, c[6], dtype=np.float32)  # c[6] * x + (1 - c[6]) * grey + layer + flipped layer,
        y += np.multiply(grey, 1 - c[6], dtype=np.float32)  # summed in that order, without temporaries
        y += layer
        y += layer[:, ::-1, ::-1]
        outs.append(y)
    return outs


def frost_texture(rng: Rng, h: int, w: int) -> np.ndarray:
    """Synthetic frost (N, H, W, 3) in 0..255, the fallback when the frost photographs are missing:
    a soft plasma field for patchy coverage plus thin bright 'crystal' ridges along the mid-level set
    of a rough plasma field, tinted pale blue-white. Mean about 0.47, std about 0.16 (in 0..1)."""
    s = pow2(max(h, w))
    cover = plasma_fractal(rng, "cover", s, 2.2)[:, :h, :w]
    rough = plasma_fractal(rng, "rough", s, 1.4)[:, :h, :w]
    ridges = (1 - np.abs(2 * rough - 1)) ** 6
    ice = np.clip(0.15 + 0.45 * cover + 0.6 * ridges * (0.4 + cover), 0, 1)
    return np.floor(ice[..., None] * np.array([0.86, 0.94, 1.0]) * 255)  # a uint8 photo's values


@perturbation("frost", "common",
              "one of the reference's frost photographs, scaled for the image size, a random crop blended in",
              many=True)
def frost(u8, rows, rng):
    """Severities share the crop (its draws are the same) and the image in floats."""
    n, h, w, ch = u8.shape
    if _frost.source() == "synthetic":  # the named fallback (perturb.frost_source, in every report)
        tex = frost_texture(rng, h, w)
    else:
        photos = _frost.layers(h, w, h <= CIFAR_TABLE_MAX_PX)
        pick = rng.integers("photo", (), 0, len(photos))
        uy, ux = rng.uniform("y", ()), rng.uniform("x", ())
        tex = np.empty((n, h, w, 3), np.float64)
        for k, photo in enumerate(photos):  # one gather per photograph, not per image
            sel = np.flatnonzero(pick == k)
            if len(sel):
                y0 = np.floor(uy[sel] * (photo.shape[0] - h)).astype(np.int64)  # randint(0, H - h)
                x0 = np.floor(ux[sel] * (photo.shape[1] - w)).astype(np.int64)
                ys = (y0[:, None] + np.arange(h))[:, :, None]
                xs = (x0[:, None] + np.arange(w))[:, None, :]
                tex[sel] = photo[ys, xs]
    tex = gray(tex) if ch == 1 else tex
    x = u8.astype(np.float64)
    return [np.clip(c[0] * x + c[1] * tex, 0, 255).astype(np.uint8) for c in rows]


@perturbation("fog", "common", "diamond-square plasma fractal added, then rescaled by max / (max + strength)",
              many=True)
def fog(u8, rows, rng):
    """Severities with the same decay share their map (CIFAR's 1 and 2: the maps are 0.09 of
    fog's 0.18 s for 1,000 images)."""
    x = to_unit(u8, np.float64)
    h, w = x.shape[1:3]
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    maps = {decay: plasma_fractal(rng, "plasma", pow2(max(h, w)), decay)[:, :h, :w, None] for decay in
            dict.fromkeys(decay for _, decay in rows)}
    outs = []
    for strength, decay in rows:
        y = x + strength * maps[decay]
        outs.append(y * max_val / (max_val + strength))
    return outs


@perturbation("brightness", "common", "+V in HSV (scikit-image conversion)", many=True, chunk_elements=SMALL_CHUNK)
def brightness(u8, rows, rng):
    return hsv_op(u8, 2, [lambda v, c=c: np.clip(v + c, 0, 1) for c in rows])


# ---------------------------------------------------------------- digital

@perturbation("contrast", "common", "(x - per-channel mean) * factor + mean", many=True)
def contrast(u8, rows, rng):
    """An output byte depends only on its input byte and its image channel's mean: per severity,
    one table of 256 bytes per image and channel, with the reference's float64 arithmetic, looked
    up (a take of bytes instead of six float64 passes over the images)."""
    n, c = u8.shape[0], u8.shape[3]
    means = to_unit(u8, np.float64).mean(axis=(1, 2)).reshape(n, c, 1)
    levels = to_unit(np.arange(256, dtype=np.uint8))  # the values of to_unit(u8), one per byte
    at = (np.arange(n * c, dtype=np.int32).reshape(n, 1, 1, c) << 8) + u8  # (image, channel, byte)
    return [unit_bytes((levels - means) * f + means).take(at) for f in rows]


@perturbation("elastic_transform", "common",
              "random affine + smoothed random displacement; exact bilinear where cv2 "
              "uses 1/32-px fixed point", many=True)
def elastic_transform(u8, rows, rng):
    """Rows c = (alpha, sigma, affine) in pixels. cv2 warpAffine (bilinear, REFLECT_101) by the
    random affine, then scipy map_coordinates(order=1, mode='reflect') by the smoothed
    displacement. Severities share the planes in floats, the pixel grid and the draws."""
    import torch

    n, h, w, _ = u8.shape
    planes = torch.from_numpy(to_unit(np.ascontiguousarray(u8.transpose(0, 3, 1, 2)), np.float32))  # (N, C, H, W)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return [_elastic(planes, yy, xx, c, rng) for c in rows]


def _elastic(planes, yy, xx, c, rng):
    alpha, sigma, aff = c
    n, _, h, w = planes.shape
    cs, sq = np.array([h // 2, w // 2], np.float64), min(h, w) // 3
    pts1 = np.array([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq])  # (x, y) as cv2 reads them
    pts2 = pts1 + rng.uniform("affine", (3, 2), -aff, aff).astype(np.float32)
    inv_a = np.linalg.inv(np.hstack([pts1, np.ones((3, 1))]))  # same for every image
    mt = sum(inv_a[:, k, None] * pts2[:, None, k, :] for k in range(3))  # (N, 3, 2): pts2 = [p 1] @ mt
    a, b, tx, cc, d, ty = mt[:, 0, 0], mt[:, 1, 0], mt[:, 2, 0], mt[:, 0, 1], mt[:, 1, 1], mt[:, 2, 1]
    det = a * d - b * cc
    u = xx[None] - tx[:, None, None]
    v = yy[None] - ty[:, None, None]
    src_x = (d[:, None, None] * u - b[:, None, None] * v) / det[:, None, None]
    src_y = (-cc[:, None, None] * u + a[:, None, None] * v) / det[:, None, None]
    planes = sample_planes(planes, src_y, src_x, "reflect101")
    # the reference's (gaussian(U(-1, 1), sigma, mode='reflect', truncate=3) * alpha).astype(np.float32),
    # the filter as a matrix on each side of every image's field
    gh, gw = gaussian_matrix(h, sigma, "symmetric", 3.0), gaussian_matrix(w, sigma, "symmetric", 3.0).T
    dx = (gh @ rng.uniform("dx", (h, w), -1, 1) @ gw * alpha).astype(np.float32)
    dy = (gh @ rng.uniform("dy", (h, w), -1, 1) @ gw * alpha).astype(np.float32)
    return sample_planes(planes, yy[None] + dy, xx[None] + dx, "symmetric").permute(0, 2, 3, 1).numpy()


@perturbation("pixelate", "common", "PIL BOX down then BOX up, byte-exact with Pillow")
def pixelate(u8, c, rng):
    h, w = u8.shape[1:3]
    return pil_box_resize(pil_box_resize(u8, int(h * c), int(w * c)), h, w)


def _pil_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    """The reference: PIL's JPEG encoder, then its decoder, one image at a time."""
    out = np.empty_like(u8)
    n, h, w, ch = u8.shape
    mode = "L" if ch == 1 else "RGB"
    for i, img in enumerate(u8):  # the encoder is per image
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if ch == 1 else img).save(buf, "JPEG", quality=quality)
        # the decoder Image.open(buf) would run (tile ("jpeg", (mode, ""))), without parsing the
        # markers in Python first: a third of the time at 32 px
        out[i] = np.asarray(Image.frombytes(mode, (w, h), buf.getvalue(), "jpeg", mode, "")).reshape(img.shape)
    return out


@functools.cache
def torchvision_jpeg_ops():
    """torchvision's libjpeg ops ``(encode_jpeg, decode_jpeg)`` from ``torch.ops.image``, or None
    where they cannot be had. torchvision's image library is loaded by itself, as
    ``torchvision.extension`` finds it (``image_stable`` or ``image`` with this Python's extension
    suffix, in the torchvision folder): 2 ms, where importing torchvision costs 1.1-1.5 CPU-s (its
    ops import torch._dynamo) that its codec would never win back on a test split."""
    import importlib.machinery
    import importlib.util

    import torch

    if not hasattr(torch.ops.image, "encode_jpeg"):
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return None
        finder = importlib.machinery.FileFinder(
            spec.submodule_search_locations[0],
            (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        lib = finder.find_spec("image_stable") or finder.find_spec("image")
        if lib is None:
            return None
        torch.ops.load_library(lib.origin)
    return torch.ops.image.encode_jpeg, torch.ops.image.decode_jpeg


def _torchvision_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    """torchvision's libjpeg encoder and decoder, one image at a time without PIL's Python layers
    (3x faster at 32 px): the ops ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` call (mode 0 =
    ImageReadMode.UNCHANGED, no EXIF rotation)."""
    import torch

    encode, decode = torchvision_jpeg_ops()
    out = np.empty_like(u8)
    src = torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).contiguous()  # CHW, each image
    dst = torch.from_numpy(out).permute(0, 3, 1, 2)
    for i in range(len(u8)):
        dst[i] = decode(encode(src[i], quality), 0, False)
    return out


@functools.cache
def torchvision_jpeg_is_pil() -> bool:
    """Whether torchvision's JPEG round trip gives PIL's bytes on this install (both bundle a
    libjpeg: the same settings, IJG quality tables, 4:2:0, islow DCT, fancy upsampling), checked
    once per process on a colour and a grey probe at two qualities; False also where torchvision's
    image ops cannot load. The reference is PIL, so a mismatch keeps PIL."""
    probe = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), np.uint8)
    probe[1] = np.linspace(0, 255, 24 * 40 * 3).reshape(24, 40, 3)  # smooth, like a photograph
    try:
        return torchvision_jpeg_ops() is not None and \
            all(np.array_equal(_torchvision_jpeg(p, q), _pil_jpeg(p, q))
                for p in (probe, probe[..., :1].copy()) for q in (90, 20))
    except (ImportError, RuntimeError, OSError, AttributeError):
        return False


@perturbation("jpeg_compression", "common", "PIL JPEG encode/decode at the table's quality")
def jpeg_compression(u8, c, rng):
    """PIL's bytes; through torchvision's libjpeg ops where this process has imported torch (the
    ops then load in 2 ms; importing torch for them would cost more than they save) and they
    reproduce PIL's bytes."""
    fast = "torch" in sys.modules and torchvision_jpeg_is_pil()
    return (_torchvision_jpeg if fast else _pil_jpeg)(u8, c)


# ---------------------------------------------------------------- extras (Hendrycks & Dietterich's other four)

@perturbation("speckle_noise", "extra", "x + x * N(0, sigma)", many=True, chunk_elements=SMALL_CHUNK)
def speckle_noise(u8, rows, rng):
    x = to_unit(u8, np.float64)
    return [x + x * rng.normal("s", x.shape[1:], scale=c) for c in rows]


@perturbation("gaussian_blur", "extra", "Gaussian blur (scikit-image / scipy kernel, nearest borders)")
def gaussian_blur(u8, c, rng):
    return gaussian(to_unit(u8), c)


@perturbation("spatter", "extra",
              "water (cv2 Canny / chamfer distance / equalizeHist re-implemented in numpy) or mud",
              many=True, chunk_elements=LARGE_CHUNK)
def spatter(u8, rows, rng):
    """Severities share the image in floats and the liquid layer's normal draw (generated apart, the
    5 severities of 1,000 CIFAR images took 0.60 s against 0.49 together)."""
    x = to_unit(u8, np.float32)
    return [_spatter(x, c, rng) for c in rows]


def _spatter(x, c, rng):
    loc, scale, sigma, thresh, intensity, mud = c
    n, h, w, ch = x.shape
    liquid = gaussian(rng.normal("liquid", (h, w), loc=loc, scale=scale), sigma)  # float64, as the reference
    liquid[liquid < thresh] = 0
    if not mud:  # water: cv2 Canny -> distanceTransform -> ... -> emboss, re-implemented exactly
        liq = (liquid * 255).astype(np.int64) & 255  # (x * 255).astype(np.uint8) wraps values > 1 (x >= 0)
        dist = np.minimum(chamfer_distance(canny(liq, 50, 150)), np.float32(20))
        dist = np.floor(correlate2d(dist[..., None], np.full((3, 3), 1 / 9, np.float32), "reflect"))
        # emboss [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], clip, 3x3 box: cv2 sums these integers (0..255,
        # |sums| <= 9 * 255) in float32, exactly, so int16 sums in any order are the same numbers
        p = pad_axis(pad_axis(equalize_hist(dist[..., 0].astype(np.int64)).astype(np.int16), 1, 1, "reflect"),
                     2, 1, "reflect")
        s = neighbours(p, h, w)
        emb = s(0, 0) + s(0, 1) + s(1, 0) - s(-1, 0) - s(0, -1) + 2 * (s(1, 1) - s(-1, -1))
        np.clip(emb, 0, 255, out=emb)
        p = pad_axis(pad_axis(emb, 1, 1, "reflect"), 2, 1, "reflect")
        rows3 = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
        dist = np.rint((rows3[:, :, :-2] + rows3[:, :, 1:-1] + rows3[:, :, 2:]).astype(np.float32) / 9)[..., None]
        m = liq[..., None].astype(np.float32) * dist
        top = m.max(axis=(1, 2, 3), keepdims=True)
        m = np.divide(m, top, out=np.zeros_like(m), where=top > 0) * intensity
        return x + m * tint((175, 238, 238), ch)
    m = gaussian((liquid > thresh).astype(np.float32), intensity).astype(np.float32)
    m[m < 0.8] = 0
    m = m[..., None]
    return x * (1 - m) + m * tint((63, 42, 20), ch)


@perturbation("saturate", "extra", "S * scale + shift in HSV (scikit-image conversion)", many=True,
              chunk_elements=SMALL_CHUNK)
def saturate(u8, rows, rng):
    return hsv_op(u8, 1, [lambda s, c=c: np.clip(s * c[0] + c[1], 0, 1) for c in rows])


# ---------------------------------------------------------------- missing data

@perturbation("occlusion", "missing", "two black squares covering ~5/10/20/30/40 % of the image")
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


@perturbation("pixel_dropout", "missing", "5/10/20/30/50 % of pixels zeroed in all channels")
def pixel_dropout(u8, frac, rng):
    drop = rng.uniform("drop", u8.shape[1:3]) < frac
    return np.where(drop[..., None], np.uint8(0), u8)
