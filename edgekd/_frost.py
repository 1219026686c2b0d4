"""Frost's photographs (internal; see :mod:`edgekd.perturb`): the reference's frost1.png ...
frost6.jpg, and how they are scaled for an image size.

The photographs are Hendrycks & Dietterich's (github.com/hendrycks/robustness, Apache-2.0). edgekd
does not carry them: it reads the copies that the ``imagecorruptions`` 1.1.2 wheel on the package
index ships as package data (``pip install --no-deps imagecorruptions==1.1.2``: the README's setup
command and .ci/run do it), located through the wheel's metadata and never imported, because that
package imports OpenCV and scikit-image on import. ``SHA256`` pins the files.

As the reference draws them (``make_cifar_c.py``, ``make_imagenet_c.py``, ``imagecorruptions``):
one of the first five photographs (``np.random.randint(5)``: frost6.jpg is shipped but never drawn),
scaled, then a random crop of the image's size. Scale by table (``perturb.table_for``):

- cifar10-c (images up to 64 px): 0.2 at 32 px, as ``cv2.resize(fx=0.2, fy=0.2)`` does (its
  INTER_LINEAR samples fall on whole pixels at 0.2: rows and columns 2, 7, 12, ...); other sizes
  keep the same share of the photograph per image, 0.2 * H / 32, by cv2's INTER_LINEAR rule.
- imagenet-c (larger images): the photograph as it is (224 px crops, as ``make_imagenet_c.py``),
  enlarged (x 1.1 the factor that makes it fit, as ``imagecorruptions``) only where it is smaller
  than the image.

Without the photographs (a trimmed install), or with one that differs from the pinned bytes, frost
cannot be made faithfully: ``source()`` says
"synthetic" and ``_corruptions.frost`` falls back to its plasma texture, which every report names.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
DRAWN = 5  # the reference's np.random.randint(5)
DISTRIBUTION = "imagecorruptions"  # the wheel whose package data holds them, imagecorruptions/frost/
SHA256 = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
    "frost6.jpg": "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25",
}


def photo_dir() -> Path | None:
    """The installed ``imagecorruptions/frost`` folder, or None (not installed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        folder = Path(distribution(DISTRIBUTION).locate_file(f"{DISTRIBUTION}/frost"))
    except PackageNotFoundError:
        return None
    return folder if folder.is_dir() else None


@functools.lru_cache(maxsize=1)
def source() -> str:
    """"photos" when the drawn photographs are installed and are the reference's (``SHA256``; read
    once per process, 2 MB), else "synthetic": a missing or altered photograph would make another frost
    under the name (and the cache key) of the reference's."""
    folder = photo_dir()
    return "photos" if folder and all(_is_pinned(folder / p) for p in PHOTOS[:DRAWN]) else "synthetic"


def _is_pinned(path: Path) -> bool:
    try:
        return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[path.name]
    except OSError:
        return False


def linear_resize(img: np.ndarray, f: float) -> np.ndarray:
    """uint8 (H, W, C) scaled by ``f`` as ``cv2.resize(img, (0, 0), fx=f, fy=f)`` (INTER_LINEAR):
    round(H * f) x round(W * f) pixels, output pixel d read at source coordinate (d + 0.5) / f - 0.5,
    clamped to the border, bilinear, rounded. Where those coordinates are whole (f = 0.2: 2, 7,
    12, ...) this is cv2's result exactly; elsewhere it rounds the exact value where cv2 rounds its
    11-bit fixed point, so it can differ by one level."""
    def taps(n_in: int, n_out: int):
        c = (np.arange(n_out) + 0.5) * (1.0 / f) - 0.5
        i0 = np.floor(c).astype(np.int64)
        t = np.where(i0 < 0, 0.0, c - i0)
        i0 = np.clip(i0, 0, n_in - 1)
        t = np.where(i0 >= n_in - 1, 0.0, t)
        return i0, np.minimum(i0 + 1, n_in - 1), t

    y0, y1, ty = taps(img.shape[0], max(1, round(img.shape[0] * f)))
    x0, x1, tx = taps(img.shape[1], max(1, round(img.shape[1] * f)))
    f64 = lambda rows: img[rows].astype(np.float64)  # noqa: E731  (only the rows read: a 0.2 scale reads a fifth)
    rows = f64(y0) * (1 - ty)[:, None, None] + f64(y1) * ty[:, None, None]
    out = rows[:, x0] * (1 - tx)[None, :, None] + rows[:, x1] * tx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _scaled(photo: np.ndarray, h: int, w: int, cifar: bool) -> np.ndarray:
    if cifar:
        photo = linear_resize(photo, 0.2 * h / 32)
    ph, pw = photo.shape[:2]
    if ph > h and pw > w:
        return photo
    return linear_resize(photo, max((h + 1) / ph, (w + 1) / pw) * 1.1)  # too small for a crop: enlarge


@functools.lru_cache(maxsize=8)
def layers(h: int, w: int, cifar: bool) -> tuple[np.ndarray, ...]:
    """The drawn photographs as RGB uint8, each scaled for (h, w) images and larger than them."""
    from PIL import Image

    folder = photo_dir()
    out = []
    for name in PHOTOS[:DRAWN]:
        with Image.open(folder / name) as im:  # RGBA PNGs: the alpha is dropped, as cv2.imread does
            out.append(_scaled(np.asarray(im.convert("RGB")), h, w, cifar))
    return tuple(out)
