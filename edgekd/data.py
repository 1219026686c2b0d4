"""Datasets, splits and the input contract.

Datasets: ``digits`` (bundled with scikit-learn, the default), ``imagefolder`` (a folder or an
archive of class folders, or of ``train/`` and ``val/`` folders of them), ``npz`` (arrays ``x``
uint8 NHWC and ``y``), ``cifar10`` / ``cifar100`` (torchvision's files).

Every dataset is presented to every model the same way: **uint8 images, NHWC, RGB**, labels int64.
Models carry their own normalisation (``models.Preprocessed``), so the exported ONNX graph takes
the raw uint8 image and a device cannot get normalisation wrong.

    ds = load_dataset(DataConfig())          # digits, 32x32 RGB, seeded split
    ds.train.x.shape -> (1257, 32, 32, 3)
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import imagefiles
from .config import DataConfig
from .errors import ConfigError, InputError
from .files import check_regular
from .imagefiles import IMAGE_SUFFIXES, class_root, decode_image, lazy_source, tree_files
from .pixels import channel_stats, resize_batch, upscale_gray  # noqa: F401  (upscale_gray: public)
from .registry import Registry
from .streaming import LazyImages, NpzRows, is_lazy, lazy_channel_stats, npy_header, should_stream

MAX_CLASSES = 10_000  # an .npz without a 'classes' array: labels 0 .. MAX_CLASSES - 1



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
    val: Split | None = None  # held out of training for best-epoch selection; never the test split
    streamed: bool = False  # the training split is a LazyImages (edgekd.streaming), read per batch
    shifts: dict[str, Split] = field(default_factory=dict)  # robustness.shift_sets (edgekd.shift)

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


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), pixel values 0..16."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = upscale_gray(d.images / 16.0, cfg.image_size)
    y = d.target.astype(np.int64)
    return split_dataset("digits", [str(c) for c in d.target_names], x, y, cfg)



def _list_class_folders(files: dict[str, Callable[[], bytes]], prefix: tuple[str, ...], where: str,
                        classes: list[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """(class names, class -> its images' relative paths, sorted by name) under ``prefix/<class>/``."""
    by_class: dict[str, list[str]] = {}
    skipped: list[str] = []
    d = len(prefix)
    for rel in sorted(files):
        parts = tuple(rel.split("/"))
        if parts[:d] != prefix:  # (hidden files never get here: see _member_path, _folder_files)
            continue
        if len(parts) < d + 2:  # a file beside the class folders
            skipped.append(rel)
            continue
        images = by_class.setdefault(parts[d], [])
        if rel.lower().endswith(IMAGE_SUFFIXES):
            images.append(rel)
        else:
            skipped.append(rel)
    if not any(by_class.values()):
        extra = f" ({len(skipped)} other files, e.g. {skipped[0]!r})" if skipped else ""
        raise InputError(f"{where}: holds no images in class folders (<class>/<image>.jpg){extra}")
    empty = sorted(c for c, v in by_class.items() if not v)
    if empty:
        raise InputError(f"{where}: class folder {empty[0]!r} holds no images (files with "
                         f"{', '.join(IMAGE_SUFFIXES[:4])}, ... suffixes)")
    found = sorted(by_class)
    if classes is not None and found != classes:
        missing = sorted(set(classes) - set(found))
        unknown = sorted(set(found) - set(classes))
        raise InputError(f"{where}: its class folders differ from the training set's"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    return classes or found, by_class


def _read_class_folders(files: dict[str, Callable[[], bytes]], listed: tuple[list[str], dict[str, list[str]]],
                        size: int, where: str, lazy: tuple[Path, int] | None = None
                        ) -> tuple[np.ndarray | LazyImages, np.ndarray]:
    """(images in class order, labels) of listed class folders: decoded now, or with ``lazy =
    (tree, workers)`` a LazyImages reading them from the tree when a batch needs them."""
    names, by_class = listed
    ys = np.asarray([k for k, c in enumerate(names) for _ in by_class[c]], np.int64)
    ordered = [rel for c in names for rel in by_class[c]]
    if lazy is not None:
        return LazyImages(lazy_source(lazy[0], ordered), size, lazy[1]), ys
    wanted = set(ordered)
    # decoded in the tree's own order (a compressed tar is then read through once, not once per
    # image), stacked in class order
    decoded = {rel: decode_image(files[rel](), size, f"{where}: {rel}") for rel in files if rel in wanted}
    return np.stack([decoded[rel] for rel in ordered]), ys


def _count(listed: tuple[list[str], dict[str, list[str]]] | None) -> int:
    return 0 if listed is None else sum(len(listed[1][c]) for c in listed[0])


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> Dataset:
    """Class folders (torchvision ImageFolder layout) in a folder or a .tar / .tar.gz / .zip archive.

    ``path`` may hold the class folders directly, or ``train/`` plus ``val/`` (or ``test/``)
    folders of them; a separate test tree can also be given as ``test_path``. Images are decoded
    to RGB and resized (shorter side, then centre crop) to ``image_size``; files that are not
    images by extension, hidden files and folders, and (in a folder) FIFOs and devices are ignored
    and never read. An image that does not decode, is over MAX_IMAGE_FILE_BYTES or
    MAX_IMAGE_PIXELS, or an archive member with an absolute or ``..`` path is an error naming it.
    A tree too large for ``data.memory_mb`` (or any, with ``data.stream = "on"``) is streamed:
    see :mod:`edgekd.streaming`."""
    if not cfg.path:
        raise InputError("data.name = 'imagefolder' needs data.path (a folder or archive of class folders)")
    root = Path(cfg.path)
    with ExitStack() as stack:  # archives stay open while their images are read, then close
        files = tree_files(root, "data.path", stack)
        train_prefix, test_prefix = class_root([tuple(p.split("/")) for p in files])
        where = str(root) + ("/" + "/".join(train_prefix) if train_prefix else "")
        listed = _list_class_folders(files, train_prefix, where)
        classes = listed[0]
        tfiles, tlisted, twhere, troot = files, None, "", root
        if cfg.test_path:
            troot = Path(cfg.test_path)
            tfiles = tree_files(troot, "data.test_path", stack)
            tprefix, _ = class_root([tuple(p.split("/")) for p in tfiles])
            twhere = cfg.test_path
            tlisted = _list_class_folders(tfiles, tprefix, twhere, classes)
        elif test_prefix is not None and cfg.split == "auto":
            twhere = f"{root}/{'/'.join(test_prefix)}"
            tlisted = _list_class_folders(files, test_prefix, twhere, classes)
        lazy = should_stream(cfg.stream, _count(listed) + _count(tlisted), cfg.image_size, cfg.memory_mb)
        x, y = _read_class_folders(files, listed, cfg.image_size, where, (root, cfg.workers) if lazy else None)
        test = None
        if tlisted is not None:
            test = _read_class_folders(tfiles, tlisted, cfg.image_size, twhere,
                                       (troot, cfg.workers) if lazy else None)
    return split_dataset(f"imagefolder:{root.name}", classes, x, y, cfg, test)


def load_labelled(path: Path, classes: list[str], size: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images resized to ``size``, labels) of a held-out set with the training ``classes``,
    decoded into memory: an ``.npz`` (its ``classes``, when it has them, must be ``classes``; else
    its labels must lie below their number) or a folder / archive of class folders named as the
    training classes (all of them, no other; of a ``train/`` + ``val/`` tree, its held-out part).
    ``key`` names the set in errors
    (``robustness.shift_sets.night``)."""
    where = f"{key} = {str(path)!r}"
    if path.suffix.lower() == ".npz":
        x, y, names = _load_npz(path, key, size, DataConfig(stream="off"))
        if names is not None and names != list(classes):
            raise InputError(f"{where}: its classes ({', '.join(names[:10])}) are not the training "
                             f"classes ({', '.join(classes[:10])})")
        if int(y.max()) >= len(classes):
            raise InputError(f"{where}: label {int(y.max())} is outside the {len(classes)} training classes")
        return x, y  # type: ignore[return-value]
    with ExitStack() as stack:
        files = tree_files(path, key, stack)
        prefix, test_prefix = class_root([tuple(p.split("/")) for p in files])
        listed = _list_class_folders(files, test_prefix or prefix, where, list(classes))
        return _read_class_folders(files, listed, size, where)  # type: ignore[return-value]


# --- arrays ------------------------------------------------------------------------------------

def _load_npz(path: Path, key: str, size: int, cfg: DataConfig
              ) -> tuple[np.ndarray | LazyImages, np.ndarray, list[str] | None]:
    """(images resized to ``size``, labels int64, class names or None) from an .npz file. Only
    the arrays ``x``, ``y`` and ``classes`` are read; shapes, dtypes and labels are checked before
    anything is resized. Images too many for ``data.memory_mb`` (see :mod:`edgekd.streaming`)
    are not read: a LazyImages reads their rows when a batch needs them."""
    where = f"{key} = {str(path)!r}"
    check_regular(path, key)  # a FIFO would block, a device never end
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a single array (a .npy file)
            raise InputError(f"{where}: not an .npz archive of arrays (write one with "
                             "numpy.savez(path, x=..., y=...))")
        with z:
            names = set(z.files)
            if "x" not in names or "y" not in names:
                raise InputError(f"{where}: needs arrays 'x' (uint8 N x H x W x 3) and 'y' "
                                 f"(labels); it has {', '.join(sorted(names)) or 'none'}")
            x_shape, x_dtype = _npz_header(z, "x")
            lazy = should_stream(cfg.stream, x_shape[0] if x_shape else 0, size, cfg.memory_mb)
            x, y = (None if lazy else z["x"]), z["y"]
            class_array = z["classes"] if "classes" in names else None
    except ValueError as e:  # numpy's own text may advise loading pickles: never quoted
        detail = "no plain numpy arrays; edgekd never loads pickled data" if "pickle" in str(e) else e
        raise InputError(f"{where}: not a readable .npz file ({detail})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise InputError(f"{where}: not a readable .npz file ({e})") from None
    except MemoryError:  # an array header declaring a huge shape
        raise InputError(f"{where}: its arrays are too large to load into memory") from None
    if x_dtype != np.uint8 or len(x_shape) not in (3, 4) or (len(x_shape) == 4 and x_shape[-1] not in (1, 3)):
        raise InputError(f"{where}: 'x' must be uint8 N x H x W x 3 (RGB, 0..255); "
                         f"it is {x_dtype} {tuple(x_shape)}")
    if (y.ndim != 1 or len(y) != x_shape[0] or not np.issubdtype(y.dtype, np.integer)
            or (len(y) and int(y.min()) < 0)):
        raise InputError(f"{where}: 'y' must hold one non-negative integer label per "
                         f"image ({x_shape[0]}); it is {y.dtype} {tuple(y.shape)}")
    if x_shape[0] == 0:
        raise InputError(f"{where}: holds no images")
    h, w = x_shape[1:3]
    if h < 1 or w < 1:
        raise InputError(f"{where}: its images are {h} x {w} pixels; each needs at least 1 x 1")
    if h * w > imagefiles.MAX_IMAGE_PIXELS:
        raise InputError(f"{where}: its images are {h} x {w} pixels, too large (at most "
                         f"{imagefiles.MAX_IMAGE_PIXELS:,} pixels an image)")
    top = int(y.max())  # a Python int: exact for any integer dtype (uint64 too)
    classes = None
    if class_array is not None:
        if class_array.ndim != 1 or not 1 <= len(class_array) <= MAX_CLASSES:
            raise InputError(f"{where}: 'classes' must be a list of 1 to {MAX_CLASSES:,} names; "
                             f"it is {class_array.dtype} {tuple(class_array.shape)}")
        classes = [str(c) for c in class_array]
        if top >= len(classes):
            raise InputError(f"{where}: labels go up to {top} but 'classes' names only {len(classes)}")
    elif top >= MAX_CLASSES:
        raise InputError(f"{where}: label {top} is too large; without a 'classes' array the labels "
                         f"must be 0 .. {MAX_CLASSES - 1} (at most {MAX_CLASSES:,} classes)")
    if lazy:
        return LazyImages(NpzRows(path, key), size, cfg.workers), y.astype(np.int64), classes
    if x.ndim == 3:  # grayscale N x H x W
        x = x[..., None]
    x = resize_batch(x, size)
    if x.shape[-1] == 1:  # replicated after resizing: a third of the work
        x = np.repeat(x, 3, axis=-1)
    return x, y.astype(np.int64), classes


def _npz_header(z, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array ``name`` of an open .npz, from its header: nothing else is read."""
    with z.zip.open(f"{name}.npy") as f:
        shape, _, dtype = npy_header(f)
    return tuple(shape), np.dtype(dtype)


@DATASETS.register("npz")
def load_npz(cfg: DataConfig) -> Dataset:
    """``.npz`` with ``x`` (uint8 N x H x W x 3), ``y`` (int labels) and optionally ``classes``
    (without it, labels must be below MAX_CLASSES)."""
    if not cfg.path:
        raise InputError("data.name = 'npz' needs data.path (an .npz file with arrays x and y)")
    x, y, classes = _load_npz(Path(cfg.path), "data.path", cfg.image_size, cfg)
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1)]
    test = None
    if cfg.test_path:
        tx, ty, _ = _load_npz(Path(cfg.test_path), "data.test_path", cfg.image_size, cfg)
        if ty.max() >= len(classes):
            raise InputError(f"data.test_path = {cfg.test_path!r}: label {int(ty.max())} is outside "
                             f"the {len(classes)} classes of the training set")
        test = (tx, ty)
    return split_dataset(f"npz:{Path(cfg.path).name}", classes, x, y, cfg, test)


def _torchvision_cifar(cfg: DataConfig, cls_name: str) -> Dataset:
    import torchvision.datasets as tvd

    if not cfg.path:
        raise InputError(f"data.name = {cfg.name!r} needs data.path (torchvision's root folder; "
                         "with data.download = true the files are fetched into it)")
    cls = getattr(tvd, cls_name)
    try:
        train = cls(cfg.path, train=True, download=cfg.download)
        test = cls(cfg.path, train=False, download=cfg.download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted..."
        hint = "" if cfg.download else "; set data.download = true to fetch them (needs network)"
        raise InputError(f"data.path = {cfg.path!r}: no usable {cls_name} files there "
                         f"({str(e).splitlines()[0]}){hint}") from None
    x, tx = resize_batch(np.asarray(train.data), cfg.image_size), resize_batch(np.asarray(test.data), cfg.image_size)
    y, ty = np.asarray(train.targets, np.int64), np.asarray(test.targets, np.int64)
    official = (tx, ty) if cfg.split == "auto" else None
    return split_dataset(cfg.name, list(train.classes), x, y, cfg, official)


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> Dataset:
    """torchvision's CIFAR-10 (50,000 train + 10,000 test images, 32x32); split auto = its test set."""
    return _torchvision_cifar(cfg, "CIFAR10")


@DATASETS.register("cifar100")
def load_cifar100(cfg: DataConfig) -> Dataset:
    """torchvision's CIFAR-100 (100 fine classes); split auto = its test set."""
    return _torchvision_cifar(cfg, "CIFAR100")


# --- splits ------------------------------------------------------------------------------------

def _per_class_positions(y: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(y == k) for k in range(int(y.max()) + 1)] if len(y) else []


def split_dataset(name: str, classes: list[str], x: np.ndarray, y: np.ndarray, cfg: DataConfig,
                  test: tuple[np.ndarray, np.ndarray] | None = None) -> Dataset:
    """Disjoint train / calibration / test parts.

    The test part is ``test`` when the data has its own (indices then continue after the training
    images), else the last ``cfg.test_per_class`` images of each class (``split =
    last_per_class``) or a seeded random ``cfg.test_fraction``. Calibration images are a seeded
    sample of the rest; ``cfg.max_train_per_class`` keeps the first images of each class for
    training. Normalisation statistics come from the training part."""
    rng = np.random.default_rng(cfg.split_seed)
    if len(y) == 0:
        raise InputError(f"{name}: holds no images")
    if test is not None:
        rest = rng.permutation(len(y))
        tx, ty = test
        if is_lazy(tx):  # a streamed test tree: held in memory, sampled down to the cap
            keep = _bounded(np.arange(len(ty)), cfg)
            tx, ty = tx[keep], ty[keep]
    elif cfg.split == "last_per_class":
        test_i = []
        for k, pos in enumerate(_per_class_positions(y)):
            if len(pos) <= cfg.test_per_class:
                raise InputError(f"{name}: class {classes[k]!r} has {len(pos)} images, not more than "
                                 f"data.test_per_class = {cfg.test_per_class}")
            test_i.append(pos[-cfg.test_per_class:])
        test_i = np.sort(np.concatenate(test_i))
        rest = rng.permutation(np.setdiff1d(np.arange(len(y)), test_i))
        test_i = _bounded(test_i, cfg) if is_lazy(x) else test_i
        tx, ty = x[test_i], y[test_i]
    else:
        order = rng.permutation(len(y))
        n_test = int(round(len(y) * cfg.test_fraction))
        test_i = np.sort(order[:n_test])
        rest = order[n_test:]  # already shuffled
        test_i = _bounded(test_i, cfg) if is_lazy(x) else test_i
        tx, ty = x[test_i], y[test_i]
    rest = np.asarray(rest)
    if cfg.max_train_per_class:  # the first images of each class (in source order) may train
        keep = [np.sort(rest[y[rest] == k])[:cfg.max_train_per_class] for k in range(len(classes))]
        kept = np.concatenate(keep)
        rest = rest[np.isin(rest, kept)]  # keeps the seeded order
    n_val = min(int(round(len(rest) * cfg.val_fraction)), cfg.val_max_images) if cfg.val_fraction else 0
    val_i = np.sort(rest[:n_val])
    rest = rest[n_val:]
    n_calib = cfg.calib_samples
    if cfg.calib_from == "train":  # calibration only has to be disjoint from the test split
        if not len(rest):
            raise InputError(f"{name}: the test and validation splits leave no training images")
        calib_i = np.sort(rest[:n_calib])
        train_i = np.sort(rest)
    else:
        if n_calib >= len(rest):
            raise ConfigError(f"data.calib_samples = {n_calib} plus the test and validation splits "
                              f"leave no training images out of {len(y) + (len(ty) if test else 0)}; "
                              "use data.calib_from = 'train'")
        calib_i = np.sort(rest[:n_calib])
        train_i = np.sort(rest[n_calib:])
    if test is not None:
        test_idx = len(y) + np.arange(len(ty))  # unique indices beyond the training images
    else:
        test_idx = test_i
    mk = lambda i: Split(x[i], y[i], i)  # noqa: E731
    if is_lazy(x):  # the training split stays lazy; the others (bounded) are decoded
        train = Split(x.take(train_i), y[train_i], train_i)
        mean, std = lazy_channel_stats(train.x)
    else:
        train = mk(train_i)
        mean, std = channel_stats(train.x)
    return Dataset(name, classes, train, mk(calib_i), Split(tx, ty, test_idx), mean, std,  # type: ignore[arg-type]
                   mk(val_i), streamed=is_lazy(x))


def _bounded(test_i: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """A streamed data set's test images: at most ``data.stream_test_images`` of them (a seeded
    sample, in source order), since the test split is held in memory."""
    if len(test_i) <= cfg.stream_test_images:
        return test_i
    pick = np.random.default_rng(cfg.split_seed + 1).permutation(len(test_i))[:cfg.stream_test_images]
    return np.sort(test_i[pick])


def load_dataset(cfg: DataConfig) -> Dataset:
    return DATASETS.get(cfg.name)(cfg)
