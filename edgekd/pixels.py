"""uint8 NHWC image arrays: resizing, grey-to-RGB upscaling and per-channel statistics.

    resize_batch(x, 64)       # (N, H, W, C) uint8 -> (N, 64, 64, C): shorter side to 64, centre crop
    upscale_gray(img, 32)     # (N, h, w) floats in [0, 1] -> (N, 32, 32, 3) uint8
    channel_stats(x)          # -> (mean per channel, std per channel) of pixels / 255
"""

from __future__ import annotations

import numpy as np


def upscale_gray(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) floats in [0, 1] -> (N, size, size, 3) uint8 by bilinear upscaling, channels
    replicated, so 8x8 digits exercise the same code paths as real RGB images."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(images.astype(np.float32))[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    u8 = (t.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]
    return np.repeat(u8.numpy()[..., None], 3, axis=-1)


def resize_batch(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC -> (N, size, size, C): shorter side to ``size`` (antialiased bilinear), centre crop."""
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x
    import torch
    import torch.nn.functional as F

    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    per_chunk = max(1, (1 << 22) // max(h * w, nh * nw))  # about 4M pixels as float at a time
    out = []
    for i in range(0, len(x), per_chunk):
        t = torch.from_numpy(x[i:i + per_chunk]).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        t = t[:, :, top:top + size, left:left + size]
        out.append(t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels / 255 over uint8 NHWC images (in chunks: no float copy
    of a large training set)."""
    c = x.shape[-1]
    if x.size <= 1 << 24:
        pix = x.reshape(-1, c).astype(np.float64) / 255.0
        m, v = pix.mean(0), pix.std(0)
    else:
        return batched_channel_stats((x[i:i + 4096] for i in range(0, len(x), 4096)), c)
    return tuple(float(a) for a in m), tuple(float(max(b, 1e-3)) for b in v)


def batched_channel_stats(batches, c: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`channel_stats` from float64 sums over uint8 NHWC ``batches`` (any iterable)."""
    s, s2, n = np.zeros(c), np.zeros(c), 0
    for batch in batches:
        p = batch.reshape(-1, c).astype(np.float64) / 255.0
        s += p.sum(0)
        s2 += (p * p).sum(0)
        n += len(p)
    m = s / n
    v = np.sqrt(np.maximum(s2 / n - m * m, 0.0))
    return tuple(float(a) for a in m), tuple(float(max(b, 1e-3)) for b in v)
