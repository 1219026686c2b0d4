"""Bringing your own teacher: load it from any of the usual formats, check it against the data,
and cache its outputs on the training images.

    teacher, record = load_teacher(cfg.teacher, ds, device)   # Preprocessed: uint8 NHWC in
    logits = teacher_outputs(teacher, ds.train.x, device, cache_dir)

Formats (``teacher.format``, ``auto`` tells them apart from the file):

* ``state_dict`` — ``teacher.arch`` (an edgekd / torchvision name or ``module:function``) plus a
  state_dict file (plain, or under a ``state_dict`` key);
* ``torchscript`` — a ``torch.jit.save`` file;
* ``export`` — a ``torch.export.save`` program (``.pt2``).

Every teacher takes normalised NCHW float images, as it was trained; ``teacher.mean`` /
``teacher.std`` (or the ``input.mean`` / ``input.std`` of its JSON sidecar, else the training
split's statistics) are baked in front of it by :class:`~edgekd.models.Preprocessed`. The
sidecar's ``classes`` are checked against the data's class names, and the teacher's output width
against the class count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TeacherConfig
from .data import Dataset
from .errors import InputError
from .files import check_regular, load_error_reason, read_document, sha256_file
from .models import Preprocessed, build_model, load_weights, predict_logits, quiet_loading

FORMATS = ("state_dict", "torchscript", "export")


def detect_format(path: Path) -> str:
    """``export`` (.pt2 / an exported-program archive), ``torchscript`` (an archive with code/)
    or ``state_dict``."""
    if path.suffix == ".pt2":
        return "export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any("/code/" in n for n in names):
            return "torchscript"
        if any("serialized_exported_program" in n or "/models/" in n for n in names):
            return "export"
    return "state_dict"


def read_meta(cfg: TeacherConfig) -> tuple[dict, str | None]:
    """The teacher's JSON sidecar (teacher.meta, or WEIGHTS.json next to the weights) and its path.
    Only its ``classes`` and ``input`` are read: the architecture is always ``teacher.arch``, from
    the user's config, never from a file that came with the weights."""
    if cfg.meta:
        p = check_regular(cfg.meta, "teacher.meta")
    elif cfg.weights:
        p = Path(cfg.weights).with_suffix(".json")
        if not os.path.lexists(p):
            return {}, None
    else:
        return {}, None
    text = read_document(p, f"teacher metadata {p}: file does not exist", "teacher metadata file")
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise InputError(f"teacher metadata {p}: not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"teacher metadata {p}: not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise InputError(f"teacher metadata {p}: must be a JSON object")
    return meta, str(p)


def teacher_normalisation(cfg: TeacherConfig, meta: dict, ds: Dataset) -> tuple[tuple, tuple, str]:
    """(mean, std, where they came from)."""
    if cfg.mean:
        return tuple(cfg.mean), tuple(cfg.std), "teacher.mean / teacher.std"
    inp = meta.get("input") if isinstance(meta.get("input"), dict) else {}
    if "mean" in inp and "std" in inp:
        mean, std = inp["mean"], inp["std"]
        ok = (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in mean + std) and all(v > 0 for v in std))
        if not ok:
            raise InputError("teacher metadata: input.mean and input.std must be lists of 3 finite "
                             "numbers (std above 0)")
        return tuple(map(float, mean)), tuple(map(float, std)), "teacher metadata"
    return ds.mean, ds.std, "training split"


def check_classes(meta: dict, meta_path: str | None, ds: Dataset) -> None:
    classes = meta.get("classes")
    if classes is None:
        return
    if not isinstance(classes, list):
        raise InputError(f"teacher metadata {meta_path}: classes must be a list of names")
    if len(classes) != len(ds.classes):
        raise InputError(f"the teacher knows {len(classes)} classes ({meta_path}), the data has "
                         f"{len(ds.classes)}")
    if [str(c) for c in classes] != list(ds.classes):
        diff = [f"{i}: teacher {a!r} / data {b!r}" for i, (a, b) in enumerate(zip(classes, ds.classes))
                if str(a) != b][:3]
        raise InputError(f"the teacher's classes ({meta_path}) differ from the data's in name or "
                         f"order: {'; '.join(diff)}")


def _load_net(cfg: TeacherConfig, fmt: str, n_cls: int, image_size: int) -> nn.Module:
    path = Path(cfg.weights)
    if fmt == "torchscript":
        try:
            with quiet_loading():
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # RuntimeError for most damage, others for odd files
            raise InputError(f"teacher.weights = {cfg.weights!r}: not a loadable TorchScript file "
                             f"({load_error_reason(e)})") from None
    if fmt == "export":
        try:
            with quiet_loading():
                return _ExportedProgram(torch.export.load(str(path)).module())
        except Exception as e:
            raise InputError(f"teacher.weights = {cfg.weights!r}: not a loadable torch.export "
                             f"program ({load_error_reason(e)})") from None
    net = build_model(cfg.arch, n_cls, stem=cfg.stem, image_size=image_size)
    return load_weights(net, path, cfg.arch, n_cls, "teacher.weights")


class _ExportedProgram(nn.Module):
    """An exported program's module: its train / eval behaviour is fixed when it was exported
    (and it refuses ``.train()``), so mode switches stop here."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _ExportedProgram:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def load_teacher(cfg: TeacherConfig, ds: Dataset, device: str) -> tuple[Preprocessed, dict]:
    """The teacher from ``cfg.weights`` in eval mode on ``device``, checked against ``ds``."""
    path = check_regular(cfg.weights, "teacher.weights")  # before detect_format opens it
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    meta, meta_path = read_meta(cfg)
    check_classes(meta, meta_path, ds)
    n_cls = len(ds.classes)
    net = _load_net(cfg, fmt, n_cls, ds.image_shape[0])
    mean, std, norm_from = teacher_normalisation(cfg, meta, ds)
    teacher = Preprocessed(net, mean, std).to(device).eval()
    try:
        with torch.no_grad():
            out = teacher(torch.from_numpy(ds.test.x[:2]).to(device))
    except Exception as e:
        raise InputError(f"teacher.weights = {cfg.weights!r}: the teacher does not run on "
                         f"{ds.image_shape[0]}x{ds.image_shape[1]} RGB images "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if out.ndim != 2 or out.shape[1] != n_cls:
        raise InputError(f"teacher.weights = {cfg.weights!r}: the teacher outputs shape "
                         f"{tuple(out.shape)}, the data has {n_cls} classes")
    rec = {"source": "loaded", "format": fmt, "weights": cfg.weights, "sha256": sha256_file(path),
           "arch": cfg.arch if fmt == "state_dict" else None, "meta": meta_path,
           "normalisation": {"mean": list(mean), "std": list(std), "from": norm_from}}
    return teacher, rec


def state_dict_sha256(model: nn.Module) -> str:
    """Content hash of a model's parameters and buffers (for a teacher edgekd trained itself)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


VIEWS = ("clean", "hflip")


def model_key(model: nn.Module, runtime: str, device: str) -> str:
    """What a torch model computes, for outputs cached from build to build (the teacher's
    predictions on each perturbed set: ``robustness.sweep_predictions``' ``fixed``): its parameters
    and buffers (``state_dict_sha256``; a teacher's normalisation is a buffer of its
    ``Preprocessed``), its structure as printed, the runtime, the device and torch's version."""
    text = f"{state_dict_sha256(model)}|{model!r}|{runtime}|{device}|torch {torch.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()


def teacher_outputs(teacher: nn.Module, x, device: str, cache_root: Path | None, view: str = "clean",
                    group=None) -> tuple[np.ndarray, bool]:
    """The teacher's logits on ``x`` (``view = "hflip"``: on the mirrored images), from the disk
    cache (``cache_root``/teacher-outputs, :mod:`edgekd.cache`) when an entry for (teacher, images,
    view) exists; returns (logits, cache_hit). The teacher is keyed by what it computes
    (``model_key``: its weights and its normalisation buffers, structure, device, torch version),
    not by its weights file: a loaded teacher given another mean / std computes other logits.
    ``x`` is an array or a streamed ``LazyImages`` (keyed by what its images are, decoded by its
    workers). Under torchrun each process computes a contiguous shard (``group``, a
    ``distributed.Group``; default: this process alone); rank 0 reads and writes the cache, every
    process gets the whole array."""
    from .cache import entry, load_array, save_array
    from .distributed import SINGLE
    from .streaming import chunks, is_lazy, stream

    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    group = group or SINGLE
    key = hashlib.sha256(f"{model_key(teacher, 'torch', device)}|{view}|{x.shape}".encode())
    key.update(x.fingerprint().encode() if is_lazy(x) else np.ascontiguousarray(x).data)
    path = entry(cache_root, "teacher-outputs", f"{key.hexdigest()[:32]}.npy")
    logits = load_array(path, lambda a: a.shape[:1] == (len(x),)) if group.is_main else None
    if group.broadcast(logits is not None):
        return group.broadcast(logits), True
    part = group.shard_range(len(x))
    flip = (lambda a: a[:, :, ::-1]) if view == "hflip" else (lambda a: a)  # noqa: E731
    if is_lazy(x):
        rows = [b + part.start for b in chunks(part.stop - part.start, 512)]
        logits = np.concatenate([predict_logits(teacher, np.ascontiguousarray(flip(b)), device)
                                 for b in stream(x, rows)] or [np.zeros((0, 0), np.float32)])
    else:
        logits = predict_logits(teacher, np.ascontiguousarray(flip(x[part])), device)
    logits = group.gather_rows(logits.astype(np.float32), len(x))
    if group.is_main:
        save_array(path, logits)
    return logits, False


def check_not_chance(teacher: nn.Module, ds: Dataset, device: str, allow: bool,
                     p_value: float = 0.01, margin: float = 0.05) -> dict:
    """The teacher's accuracy on the validation split (the test split when there is none) against
    chance, the majority-class rate of that split. It fails when it is not above chance by at least
    ``margin`` or not significantly (one-sided binomial test at ``p_value``): every other check is
    relative to the teacher, so a student of a useless teacher would pass them. Unless ``allow``
    (``teacher.allow_chance_level``), that is an InputError; returns the record either way."""
    from scipy.stats import binomtest

    split, name = (ds.val, "validation") if ds.val is not None and len(ds.val) else (ds.test, "test")
    preds = predict_logits(teacher, split.x, device).argmax(1)
    n, correct = len(split), int((preds == split.y).sum())
    chance = float(np.bincount(split.y, minlength=len(ds.classes)).max() / n)
    p = float(binomtest(correct, n, chance, alternative="greater").pvalue) if chance < 1 else 1.0
    acc = correct / n
    rec = {"split": name, "n_images": n, "accuracy": acc, "chance": chance, "p_value": p,
           "passed": bool(acc >= chance + margin and p < p_value)}
    if not rec["passed"] and not allow:
        raise InputError(f"the teacher scores {100 * acc:.1f}% on the {n} {name} images, no better than "
                         f"chance ({100 * chance:.1f}%, the largest class's share; binomial p = {p:.2g}), "
                         "so a student distilled from it would mean nothing; give a better teacher "
                         "(teacher.weights, teacher.pretrained, more teacher.epochs) or set "
                         "teacher.allow_chance_level = true")
    return rec
