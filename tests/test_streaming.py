"""Streamed data sets (edgekd.streaming): the same splits, images, statistics and training as the
in-memory path, read lazily by DataLoader workers; what cannot be streamed says so in a sentence."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_digit_tree
from edgekd.config import load_config
from edgekd.data import load_dataset
from edgekd.errors import InputError
from edgekd.streaming import LazyImages, is_lazy


@pytest.fixture(scope="module")
def digit_tree(tmp_path_factory, digits) -> Path:
    """digits as an ImageFolder of PNGs at 32 px (40 images a class)."""
    return write_digit_tree(tmp_path_factory.mktemp("stream") / "digits", digits, 40)


def _cfg(path, *extra: str, name="imagefolder"):
    return load_config(None, [f'data.name="{name}"', f'data.path="{path}"', "data.calib_samples=20",
                              "data.workers=2", *extra])


def _same(a, b) -> None:
    assert a.classes == b.classes and a.mean == pytest.approx(b.mean, abs=1e-12)
    assert a.std == pytest.approx(b.std, abs=1e-12)
    for s in ("train", "calib", "val", "test"):
        sa, sb = getattr(a, s), getattr(b, s)
        xa = sa.x[np.arange(len(sa))] if is_lazy(sa.x) else sa.x
        assert np.array_equal(xa, sb.x) and np.array_equal(sa.y, sb.y) and np.array_equal(sa.indices, sb.indices), s


def test_a_streamed_tree_gives_the_in_memory_splits(digit_tree):
    eager = load_dataset(_cfg(digit_tree, 'data.stream="off"').data)
    lazy = load_dataset(_cfg(digit_tree, 'data.stream="on"').data)
    assert not eager.streamed and lazy.streamed and isinstance(lazy.train.x, LazyImages)
    assert not is_lazy(lazy.test.x) and not is_lazy(lazy.calib.x)  # the bounded splits are held
    _same(lazy, eager)
    # auto streams what would exceed data.memory_mb (400 images x 3 kB > 1 MiB)
    assert load_dataset(_cfg(digit_tree, "data.memory_mb=1").data).streamed
    assert not load_dataset(_cfg(digit_tree).data).streamed


def test_zip_plain_tar_and_stored_npz_stream_the_same_images(digit_tree, tmp_path):
    eager = load_dataset(_cfg(digit_tree, 'data.stream="off"').data)
    zp, tp = tmp_path / "d.zip", tmp_path / "d.tar"
    with zipfile.ZipFile(zp, "w") as z:
        for p in sorted(digit_tree.rglob("*.png")):
            z.write(p, f"digits/{p.relative_to(digit_tree)}")
    with tarfile.open(tp, "w") as t:
        t.add(digit_tree, arcname="digits")
    for path in (zp, tp):
        _same(load_dataset(_cfg(path, 'data.stream="on"').data), eager)
    # an .npz written with numpy.savez (stored): rows read at their offsets
    x = np.stack([np.asarray(Image.open(p)) for p in sorted(digit_tree.rglob("*.png"))])
    y = np.repeat(np.arange(10), 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    npz_eager = load_dataset(_cfg(tmp_path / "d.npz", 'data.stream="off"', name="npz").data)
    npz_lazy = load_dataset(_cfg(tmp_path / "d.npz", 'data.stream="on"', name="npz").data)
    assert npz_lazy.streamed
    _same(npz_lazy, npz_eager)


def test_what_cannot_be_streamed_is_one_sentence(digit_tree, tmp_path):
    tgz = tmp_path / "d.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(digit_tree, arcname="digits")
    with pytest.raises(InputError, match=r"a gzip-compressed tar cannot be streamed .* extract it"):
        load_dataset(_cfg(tgz, 'data.stream="on"').data)
    np.savez_compressed(tmp_path / "c.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.arange(4))
    with pytest.raises(InputError, match=r"compressed \(numpy.savez_compressed\).*numpy.savez"):
        load_dataset(_cfg(tmp_path / "c.npz", 'data.stream="on"', name="npz").data)


def test_an_unreadable_image_in_a_worker_is_the_loader_sentence(digit_tree, tmp_path):
    import shutil

    from edgekd.imagefiles import lazy_source
    from edgekd.streaming import stream

    root = tmp_path / "bad"
    shutil.copytree(digit_tree, root)
    (root / "c3" / "005.png").write_bytes(b"not a png")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    x = LazyImages(lazy_source(root, names), 32, workers=2)
    with pytest.raises(InputError) as e:  # the worker's error, not a worker traceback
        list(stream(x, [np.arange(i, i + 50) for i in range(0, len(x), 50)]))
    assert str(e.value).endswith("c3/005.png: not a readable image (UnidentifiedImageError)")
    assert "Traceback" not in str(e.value)
    with pytest.raises(InputError, match="c3/005.png: not a readable image"):  # and when loading
        load_dataset(_cfg(root, 'data.stream="on"').data)


def test_training_on_a_streamed_split_is_the_in_memory_training(digit_tree):
    """The same batches, augmentations and crop/flip: bit-identical weights after two epochs."""
    from edgekd.distill import distill
    from edgekd.models import Preprocessed, build_model

    cfg = _cfg(digit_tree, "distill.epochs=2", "distill.min_steps=0", "distill.crop_flip=true",
               "distill.batch_size=32", 'distill.augment=["pixel_dropout", "gaussian_blur"]')
    states = []
    for mode in ("off", "on"):
        cfg.data.stream = mode
        ds = load_dataset(cfg.data)
        torch.manual_seed(0)
        student = Preprocessed(build_model("digits_student", 10), ds.mean, ds.std)
        logits = np.random.default_rng(0).normal(size=(len(ds.train), 10)).astype(np.float32)
        rec = distill(student, logits, ds.train, cfg.distill, "cpu", progress=False, val=ds.val)
        states.append((student.state_dict(), rec["log"]))
    (a, log_a), (b, log_b) = states
    assert log_a == [{**r, "images_per_s": log_a[i]["images_per_s"]} for i, r in enumerate(log_b)]
    assert all(torch.equal(a[k], b[k]) for k in a)
