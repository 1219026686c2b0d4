"""Datasets, splits and the input contract.

Every dataset is presented to every model the same way: **uint8 images, NHWC, RGB**, labels int64.
Models carry their own normalisation (``models.Preprocessed``), so the exported ONNX graph takes
the raw uint8 image and a device cannot get normalisation wrong.

    ds = load_dataset(DataConfig())          # digits, 32x32 RGB, seeded split
    ds.train.x.shape -> (1257, 32, 32, 3)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .config import DataConfig
from .registry import Registry


@dataclass
class Split:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)
    indices: np.ndarray  # index of each image in the source dataset (for deterministic perturbations)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split
    calib: Split
    test: Split
    mean: tuple[float, float, float]  # per-channel mean of pixels/255 on the train split
    std: tuple[float, float, float]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.x.shape[1:])  # type: ignore[return-value]

    def contract(self) -> dict:
        """The input contract of every exported model, as written into the manifest."""
        h, w, c = self.image_shape
        return {
            "layout": "NHWC",
            "dtype": "uint8",
            "shape": ["batch", h, w, c],
            "channels": "RGB",
            "range": [0, 255],
            "normalisation": "inside the graph: (pixels / 255 - mean) / std",
            "mean": list(self.mean),
            "std": list(self.std),
            "output": "logits float32 (batch, num_classes)",
            "classes": self.classes,
        }

    def fingerprint(self) -> str:
        """sha256 over the test images and labels: identifies the evaluation set."""
        h = hashlib.sha256()
        h.update(self.test.x.tobytes())
        h.update(self.test.y.tobytes())
        return h.hexdigest()


DATASETS: Registry = Registry("dataset")


def upscale_gray(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) floats in [0, 1] -> (N, size, size, 3) uint8 by bilinear upscaling, channels
    replicated, so 8x8 digits exercise the same code paths as real RGB images."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(images.astype(np.float32))[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    u8 = (t.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]
    return np.repeat(u8.numpy()[..., None], 3, axis=-1)


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), pixel values 0..16."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = upscale_gray(d.images / 16.0, cfg.image_size)
    y = d.target.astype(np.int64)
    return split_dataset("digits", [str(c) for c in d.target_names], x, y, cfg)


def split_dataset(name: str, classes: list[str], x: np.ndarray, y: np.ndarray,
                  cfg: DataConfig) -> Dataset:
    """Seeded, stratified-by-shuffle split into disjoint train / calibration / test parts."""
    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(y))
    n_test = int(round(len(y) * cfg.test_fraction))
    n_calib = cfg.calib_samples
    if n_test + n_calib >= len(y):
        from .errors import ConfigError

        raise ConfigError(f"data.calib_samples = {n_calib} plus the test split ({n_test}) leaves "
                          f"no training images out of {len(y)}")
    test_i = np.sort(order[:n_test])
    calib_i = np.sort(order[n_test:n_test + n_calib])
    train_i = np.sort(order[n_test + n_calib:])
    pix = x[train_i].reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    mean = tuple(float(v) for v in pix.mean(0))
    std = tuple(float(max(v, 1e-3)) for v in pix.std(0))
    mk = lambda i: Split(x[i], y[i], i)  # noqa: E731
    return Dataset(name, classes, mk(train_i), mk(calib_i), mk(test_i), mean, std)  # type: ignore[arg-type]


def load_dataset(cfg: DataConfig) -> Dataset:
    return DATASETS.get(cfg.name)(cfg)
