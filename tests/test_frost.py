"""Frost from the reference's photographs (edgekd/_frost.py, read from the imagecorruptions wheel):
the magnitudes of Hendrycks & Dietterich's CIFAR-10-C frost per severity, and the named fallback without them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd import _frost, perturb
from edgekd.report import frost_text

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
# the reference's make_cifar_c.py frost on 1,000 CIFAR-10 images: mean |corrupted - clean| in uint8
# levels per severity (measured for issue 21 with the reference code and its photographs)
REFERENCE_CIFAR = (31.0, 44.8, 49.2, 44.6, 43.7)
CIFAR_ROWS = perturb.TABLES["cifar10-c"]["frost"]
PHOTO_DIR = _frost.photo_dir() or Path("/nonexistent")  # the test below fails, with its reason, when absent


def reference_frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's frost, transcribed, with numpy's generator for its draws: photograph
    randint(5), cv2.imread (BGR -> [..., [2, 1, 0]]: PIL's RGB), cv2.resize(fx=0.2, fy=0.2) (its
    INTER_LINEAR samples rows and columns 2, 7, 12, ... at 0.2: checked against OpenCV 4 on all six
    photographs), crop randint(0, H - 32), clip(c0 * x + c1 * frost), np.uint8."""
    c = CIFAR_ROWS[severity - 1]
    photos = [np.asarray(Image.open(PHOTO_DIR / name).convert("RGB"))[2::5, 2::5]
              for name in _frost.PHOTOS[:5]]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        f = photos[rng.integers(5)]
        a, b = rng.integers(0, f.shape[0] - 32), rng.integers(0, f.shape[1] - 32)
        out[i] = np.uint8(np.clip(c[0] * img.astype(np.float64) + c[1] * f[a:a + 32, b:b + 32], 0, 255))
    return out


def change(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.abs(y.astype(np.float64) - x).mean(axis=(1, 2, 3))  # per image


@pytest.fixture(scope="module")
def natural_crops() -> np.ndarray:
    """600 natural 32 x 32 RGB images: crops of scikit-learn's two bundled photographs (no download)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    crops = []
    for img in load_sample_images().images:
        for _ in range(300):
            a, b = rng.integers(0, img.shape[0] - 96), rng.integers(0, img.shape[1] - 96)
            crops.append(np.asarray(Image.fromarray(img[a:a + 96, b:b + 96]).resize((32, 32), Image.BILINEAR)))
    return np.stack(crops)


def test_the_installed_photographs_are_the_pinned_files():
    import hashlib
    from importlib.metadata import distribution

    assert _frost.photo_dir() is not None, "pip install --no-deps imagecorruptions==1.1.2 (README)"
    for name in _frost.PHOTOS:
        assert hashlib.sha256((PHOTO_DIR / name).read_bytes()).hexdigest() == _frost.SHA256[name], name
    assert "Apache License" in distribution(_frost.DISTRIBUTION).read_text("LICENSE")
    assert perturb.frost_source() == "photos"


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_frost_matches_the_reference_transcription_in_magnitude_and_spread(natural_crops, severity):
    ours = change(perturb.apply("frost", natural_crops, severity, seed=0), natural_crops)
    ref = change(reference_frost(natural_crops, severity, np.random.default_rng(severity)), natural_crops)
    assert ours.mean() == pytest.approx(ref.mean(), rel=0.05)
    assert ours.std() == pytest.approx(ref.std(), rel=0.15)


@pytest.mark.skipif(not CIFAR.is_file(), reason="needs ../shared/data/cifar10-train-jpeg.tar.gz (benchmark data)")
def test_frost_magnitudes_on_cifar10_are_the_reference_figures():
    """1,000 CIFAR-10 images never seen by the fixture teacher (4500..4599.jpg of each class)."""
    images = {}
    with tarfile.open(CIFAR) as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and 4500 <= int(parts[-1].split(".")[0]) < 4600:
                images[(parts[-2], parts[-1])] = np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
    x = np.stack([images[k] for k in sorted(images)])
    assert x.shape == (1000, 32, 32, 3)
    for severity, ref in enumerate(REFERENCE_CIFAR, start=1):
        assert change(perturb.apply("frost", x, severity, seed=0), x).mean() == pytest.approx(ref, rel=0.05)


def test_at_32_px_every_texture_is_a_crop_of_a_reference_photograph():
    """Severity 1 adds 0.2 * frost to a black image: the texture, crop for crop, of one of the five
    photographs as the reference scales them (truncated like np.uint8)."""
    y = perturb.apply("frost", np.zeros((40, 32, 32, 3), np.uint8), 1, seed=3).astype(np.int64)
    photos = [np.floor(0.2 * np.asarray(Image.open(PHOTO_DIR / n).convert("RGB"))[2::5, 2::5]).astype(np.int64)
              for n in _frost.PHOTOS[:5]]
    used = set()
    for img in y:
        hits = [(k, a, b) for k, p in enumerate(photos) for a in range(p.shape[0] - 32) for b in range(p.shape[1] - 32)
                if p[a, b, 0] == img[0, 0, 0] and np.array_equal(p[a:a + 32, b:b + 32], img)]
        assert hits, "a frost texture that is no crop of the photographs"
        used.add(hits[0][0])
    assert len(used) >= 4  # the draw spreads over the photographs


def test_larger_images_get_a_full_size_crop():
    for size in (48, 64, 128, 256):
        y = perturb.apply("frost", np.zeros((3, size, size, 3), np.uint8), 3, seed=0)
        assert y.shape == (3, size, size, 3) and y.mean() > 20  # covered everywhere, no empty border
        assert (y.reshape(3, -1, 3).max(axis=1) > 0).all()


def test_without_the_photographs_the_synthetic_fallback_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(_frost, "photo_dir", lambda: tmp_path)
    _frost.source.cache_clear()
    try:
        assert perturb.frost_source() == "synthetic"
        y = perturb.apply("frost", np.full((4, 32, 32, 3), 100, np.uint8), 3, seed=0)
        assert y.shape == (4, 32, 32, 3) and y.mean() > 100
        assert "SYNTHETIC" in frost_text({"frost_source": perturb.frost_source()})
    finally:
        monkeypatch.undo()
        _frost.source.cache_clear()
    assert perturb.frost_source() == "photos"


def test_an_altered_photograph_is_not_taken_for_the_reference(monkeypatch, tmp_path):
    for name in _frost.PHOTOS:  # a copy of the installed photographs, then one byte of one changed
        (tmp_path / name).write_bytes((PHOTO_DIR / name).read_bytes())
    monkeypatch.setattr(_frost, "photo_dir", lambda: tmp_path)
    _frost.source.cache_clear()
    try:
        assert perturb.frost_source() == "photos"  # the pinned bytes, wherever they are
        data = bytearray((tmp_path / "frost2.png").read_bytes())
        data[-100] ^= 0xFF
        (tmp_path / "frost2.png").write_bytes(bytes(data))
        _frost.source.cache_clear()
        assert perturb.frost_source() == "synthetic"
    finally:
        monkeypatch.undo()
        _frost.source.cache_clear()
    assert perturb.frost_source() == "photos"
