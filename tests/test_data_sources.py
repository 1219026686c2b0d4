"""Bring-your-own data: ImageFolder trees (folders and archives), .npz arrays, torchvision CIFAR,
the split rules, and a clear error for every mismatch."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.config import load_config
from edgekd.data import load_dataset
from edgekd.errors import ConfigError, InputError

CLASSES = ["cat", "dog", "eel"]


def _image(k: int, i: int, size=(40, 30)) -> Image.Image:
    """A distinct image per (class, index): a flat colour, so resizing keeps it exactly."""
    return Image.new("RGB", size, (40 * k + 20, 10 * i + 5, 200 - 30 * k))


def make_tree(root: Path, per_class: int = 6, classes=CLASSES) -> Path:
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _image(k, i).save(root / c / f"{i:04d}.png")
        (root / c / "notes.txt").write_text("not an image")  # ignored
    (root / "README.md").write_text("about this data")  # ignored
    return root


def cfg_for(path: Path, *extra: str):
    return load_config(None, ['data.name="imagefolder"', f'data.path="{path}"', "data.calib_samples=2",
                              *extra])


def test_imagefolder_folder_resizes_and_splits_last_per_class(tmp_path):
    root = make_tree(tmp_path / "imgs")
    ds = load_dataset(cfg_for(root, 'data.split="last_per_class"', "data.test_per_class=2").data)
    assert ds.classes == CLASSES
    assert ds.test.x.shape == (6, 32, 32, 3) and ds.test.x.dtype == np.uint8
    assert len(ds.train) + len(ds.val) == 12 and set(ds.calib.indices) <= set(ds.train.indices)
    assert np.bincount(ds.test.y).tolist() == [2, 2, 2]
    # the last two files of each class (sorted names 0004, 0005) are the test images
    assert ds.test.indices.tolist() == [4, 5, 10, 11, 16, 17]
    expected = np.asarray(_image(1, 5).resize((43, 32)).crop((5, 0, 37, 32)))
    assert np.array_equal(ds.test.x[3], expected)


def test_archives_give_the_same_arrays_as_the_folder(tmp_path):
    root = make_tree(tmp_path / "imgs")
    tgz = tmp_path / "imgs.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(root, arcname="wrapper/imgs")  # a wrapping folder is descended into
    zp = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zp, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root).as_posix())
    ref = load_dataset(cfg_for(root).data)
    for path in (tgz, zp):
        ds = load_dataset(cfg_for(path).data)
        assert ds.classes == CLASSES
        assert np.array_equal(ds.train.x, ref.train.x) and np.array_equal(ds.test.y, ref.test.y)


def test_train_and_val_folders_are_used_as_the_split(tmp_path):
    make_tree(tmp_path / "d" / "train", per_class=5)
    make_tree(tmp_path / "d" / "val", per_class=2)
    ds = load_dataset(cfg_for(tmp_path / "d").data)
    assert len(ds.test) == 6 and len(ds.train) + len(ds.val) == 15
    assert ds.test.indices.min() >= 15  # test indices never collide with training ones
    make_tree(tmp_path / "other", per_class=2, classes=["cat", "dog", "fox"])
    with pytest.raises(InputError, match="missing eel; unknown fox"):
        load_dataset(cfg_for(tmp_path / "d", f'data.test_path="{tmp_path / "other"}"').data)


def test_max_train_per_class_keeps_the_first_images(tmp_path):
    root = make_tree(tmp_path / "imgs", per_class=8)
    ds = load_dataset(cfg_for(root, 'data.split="last_per_class"', "data.test_per_class=2",
                              "data.max_train_per_class=3", "data.val_fraction=0").data)
    assert np.bincount(ds.train.y).tolist() == [3, 3, 3]
    for k in range(3):  # the first (lowest) of each class's non-test images
        assert ds.train.indices[ds.train.y == k].tolist() == [8 * k, 8 * k + 1, 8 * k + 2]
    # the validation split is carved from those images, never from the ones left out
    ds = load_dataset(cfg_for(root, 'data.split="last_per_class"', "data.test_per_class=2",
                              "data.max_train_per_class=3", "data.val_fraction=0.34").data)
    kept = {8 * k + i for k in range(3) for i in range(3)}
    assert len(ds.val) == 3 and set(ds.val.indices) | set(ds.train.indices) == kept


@pytest.mark.parametrize("setup, match", [
    (lambda p: p.mkdir(), "holds no images"),
    (lambda p: (p.mkdir(), (p / "a").mkdir(), (p / "a" / "x.txt").write_text("x")), "holds no images"),
    (lambda p: (make_tree(p), (p / "zzz").mkdir(), (p / "zzz" / "x.csv").write_text("1")),
     "class folder 'zzz' holds no images"),
    (lambda p: (make_tree(p), (p / "dog" / "9999.jpg").write_bytes(b"not a jpeg")),
     r"dog/9999.jpg: not a readable image"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable folder, tar or zip archive"),
    (lambda p: None, "no such folder or archive"),
])
def test_imagefolder_errors_are_one_clear_sentence(tmp_path, setup, match):
    p = tmp_path / "data"
    setup(p)
    with pytest.raises(InputError, match=match):
        load_dataset(cfg_for(p).data)


def test_too_few_images_for_the_split_rule(tmp_path):
    root = make_tree(tmp_path / "imgs", per_class=3)
    with pytest.raises(InputError, match="class 'cat' has 3 images, not more than data.test_per_class = 3"):
        load_dataset(cfg_for(root, 'data.split="last_per_class"', "data.test_per_class=3").data)


def npz_cfg(path: Path, *extra: str):
    return load_config(None, ['data.name="npz"', f'data.path="{path}"', "data.calib_samples=5", *extra])


def test_npz_arrays_with_class_names_and_grayscale(tmp_path, rng):
    x = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(CLASSES))
    ds = load_dataset(npz_cfg(tmp_path / "d.npz").data)
    assert ds.classes == CLASSES and ds.test.x.shape[1:] == (32, 32, 3)
    assert len(ds.test) == 12  # test_fraction 0.2
    np.savez(tmp_path / "g.npz", x=x[..., 0], y=y)  # N x H x W grayscale is replicated to RGB
    g = load_dataset(npz_cfg(tmp_path / "g.npz", "data.image_size=16").data)
    assert g.classes == ["0", "1", "2"] and g.train.x.shape[1:] == (16, 16, 3)
    assert (g.train.x[..., 0] == g.train.x[..., 2]).all()


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "y": np.zeros(4)}, "needs arrays 'x'"),
    ({"x": np.zeros((4, 8, 8, 3), np.float32), "y": np.zeros(4, int)}, "'x' must be uint8"),
    ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.zeros(3, int)}, "one non-negative integer label per image"),
    ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.arange(4), "classes": np.array(["a", "b"])},
     "labels go up to 3 but 'classes' names only 2"),
])
def test_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_dataset(npz_cfg(tmp_path / "bad.npz").data)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_dataset(npz_cfg(tmp_path / "junk.npz").data)


def test_cifar_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(InputError, match="no usable CIFAR10 files there.*data.download = true"):
        load_dataset(load_config(None, ['data.name="cifar10"', f'data.path="{tmp_path}"']).data)
    with pytest.raises(InputError, match="needs data.path"):
        load_dataset(load_config(None, ['data.name="cifar100"']).data)


def test_cifar_loader_uses_torchvision_arrays_and_official_test_split(tmp_path, monkeypatch):
    """torchvision's CIFAR10 class is replaced by one holding the same attributes (no download)."""
    import torchvision.datasets as tvd

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            n = 50 if train else 20
            r = np.random.default_rng(int(train))
            self.data = r.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = list(np.arange(n) % 10)
            self.classes = [f"c{i}" for i in range(10)]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    ds = load_dataset(load_config(None, ['data.name="cifar10"', f'data.path="{tmp_path}"',
                                         "data.calib_samples=10"]).data)
    assert len(ds.test) == 20 and len(ds.train) == 45 and len(ds.val) == 5 and ds.classes[3] == "c3"
    assert np.array_equal(ds.test.x, FakeCIFAR10(None, False, False).data)


def test_relative_paths_in_a_config_file_are_relative_to_it(tmp_path):
    root = make_tree(tmp_path / "recipes" / "imgs")
    (tmp_path / "recipes" / "r.toml").write_text('[data]\nname = "imagefolder"\npath = "imgs"\n'
                                                 "calib_samples = 2\n")
    cfg = load_config(tmp_path / "recipes" / "r.toml")
    assert Path(cfg.data.path).resolve() == root.resolve()
    assert load_dataset(cfg.data).classes == CLASSES


def test_held_out_calibration_must_leave_training_images(tmp_path):
    root = make_tree(tmp_path / "imgs", per_class=2)
    with pytest.raises(ConfigError, match="leave no training images"):
        load_dataset(cfg_for(root, "data.calib_samples=100", "data.calib_from=held_out").data)
    ds = load_dataset(cfg_for(root, "data.calib_samples=100").data)  # from the training images: all
    assert np.array_equal(ds.calib.indices, ds.train.indices)
