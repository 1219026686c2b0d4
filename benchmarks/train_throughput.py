"""Training-loop throughput: edgekd's distillation loop against a bare PyTorch loop, side by side.

    python benchmarks/train_throughput.py --images 6400 --rounds 5

In one process, interleaved rounds of one epoch over the same ``--images`` training images, same
student, batch size and optimiser (the recipe's: SGD Nesterov, one-cycle):

- ``bare``: a plain PyTorch loop — index the uint8 batch, forward, cross-entropy, backward, step;
  no augmentation;
- ``edgekd``: ``edgekd.distill.distill`` with the recipe's augmentations (crop + flip and
  corruption-augmented KD as the recipe sets them) and Hinton KD against cached teacher logits
  (``teacher_view = "cached"``), validation switched off (it is not part of a training step);
- ``edgekd-same``: the recipe as it is, ``teacher_view = "same"``: the teacher runs on every batch
  (with the recipe's data only: it needs the fixture teacher);
- ``edgekd-kd`` and ``edgekd-ce``: edgekd's loop without augmentation, Hinton KD with cached
  teacher targets vs labels only — the cost of a KD step over a cross-entropy step.

Reports images/s per round — the images the student trained on (with ``augment_mode = "append"``
the perturbed copies are extra images) and the source images of the epoch — medians and spread,
and the ratios edgekd / bare and kd / ce. Data:
the recipe's (CIFAR-10 from ../shared, or EDGEKD_SHARED) when it is there, else the digits shown
as 32x32 RGB (``--data digits``). Run it on a quiet machine: nothing else may share the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.config import load_config  # noqa: E402
from edgekd.data import Split, load_dataset  # noqa: E402
from edgekd.distill import distill  # noqa: E402
from edgekd.models import Preprocessed, build_model  # noqa: E402
from edgekd.training import Recipe, make_optimizer  # noqa: E402

RECIPE = ROOT / "recipes" / "cifar10-resnet8-kd.toml"


def bare_loop(student, train: Split, recipe: Recipe) -> float:
    """images/s of one epoch of the plainest loop: no augmentation, cross-entropy."""
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    steps = (len(y) + recipe.batch_size - 1) // recipe.batch_size
    opt, sched = make_optimizer([student], recipe, steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    student.train()
    t0 = time.perf_counter()
    for idx in torch.randperm(len(y), generator=gen).split(recipe.batch_size):
        loss = F.cross_entropy(student(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return len(y) / (time.perf_counter() - t0)


def edgekd_loop(student, train: Split, logits: np.ndarray, logits_flip: np.ndarray, cfg, teacher=None
                ) -> tuple[float, float]:
    """(images/s the student trained on, perturbed copies included; source images/s of the epoch)."""
    t0 = time.perf_counter()
    rec = distill(student, logits, train, cfg, "cpu", progress=False, teacher_logits_hflip=logits_flip,
                  teacher=teacher)
    wall = time.perf_counter() - t0
    return rec["log"][-1]["images_per_s"], len(train) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("recipe", "digits"), default="recipe")
    ap.add_argument("--images", type=int, default=6400, help="training images per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(RECIPE) if args.data == "recipe" else load_config(RECIPE, [
        'data.name="digits"', "data.max_train_per_class=0", "data.split=auto"])
    ds = load_dataset(cfg.data)
    n = min(args.images, len(ds.train))
    pick = np.random.default_rng(0).permutation(len(ds.train))[:n]
    train = Split(ds.train.x[pick], ds.train.y[pick], ds.train.indices[pick])
    n_cls = len(ds.classes)
    logits = np.random.default_rng(1).normal(size=(n, n_cls)).astype(np.float32)  # stands in for the
    logits_flip = logits + 0.1                                                  # cached teacher targets
    recipe_d = dataclasses.replace(cfg.distill, epochs=1, select="last", min_steps=0, early_stop_patience=0)
    d = dataclasses.replace(recipe_d, teacher_view="cached")
    teacher = None
    if args.data == "recipe":
        from edgekd.teachers import load_teacher

        teacher, _ = load_teacher(cfg.teacher, ds, "cpu")
    variants = {
        "bare": None,
        "edgekd": d,
        "edgekd-kd": dataclasses.replace(d, augment=[], crop_flip=False, loss="hinton"),
        "edgekd-ce": dataclasses.replace(d, augment=[], crop_flip=False, loss="ce"),
    }
    if teacher is not None and recipe_d.teacher_view == "same":
        variants["edgekd-same"] = recipe_d
    rates: dict[str, list[float]] = {k: [] for k in variants}  # images the student trained on per s
    epoch_rates: dict[str, list[float]] = {k: [] for k in variants}  # source images per s
    for r in range(args.rounds + 1):  # round 0 warms up (allocator, kernels) and is dropped
        for name, dcfg in variants.items():
            torch.manual_seed(0)
            student = Preprocessed(build_model(cfg.student.arch, n_cls, width=cfg.student.width,
                                               stem=cfg.student.stem, image_size=ds.image_shape[0]),
                                   ds.mean, ds.std)
            if dcfg is None:
                rate = epoch_rate = bare_loop(student, train, Recipe.from_config(d))
            else:
                rate, epoch_rate = edgekd_loop(student, train, logits, logits_flip, dcfg, teacher)
            if r:
                rates[name].append(rate)
                epoch_rates[name].append(epoch_rate)
        if r:
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)

    def stats(v):
        return {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}

    out = {"machine": {"platform": platform.platform(), "threads": args.threads},
           "versions": {"torch": torch.__version__}, "data": ds.name, "images": n,
           "student": cfg.student.arch, "batch_size": d.batch_size,
           "recipe_augment": {"crop_flip": d.crop_flip, "augment": d.augment, "augment_prob": d.augment_prob,
                              "augment_mode": d.augment_mode},
           "images_per_s": {k: stats(v) for k, v in rates.items()},
           "source_images_per_s": {k: stats(v) for k, v in epoch_rates.items()}}
    per_round = lambda a, b: [x / y for x, y in zip(rates[a], rates[b])]  # noqa: E731
    out["ratio_edgekd_over_bare"] = stats(per_round("edgekd", "bare"))
    out["ratio_edgekd_over_bare_source_images"] = stats([x / y for x, y in zip(epoch_rates["edgekd"],
                                                                              epoch_rates["bare"])])
    out["ratio_ce_step_over_kd_step"] = stats(per_round("edgekd-ce", "edgekd-kd"))
    if "edgekd-same" in rates:
        out["ratio_same_view_over_bare"] = stats(per_round("edgekd-same", "bare"))
    print(f"\n{ds.name}, {n} images, {cfg.student.arch}, batch {d.batch_size}, {args.threads} threads, "
          f"{args.rounds} rounds (median [min, max] images/s: trained on, incl. appended copies | source)")
    for k, v in out["images_per_s"].items():
        e = out["source_images_per_s"][k]
        print(f"  {k:12s} {v['median']:7.0f}  [{v['min']:.0f}, {v['max']:.0f}]   | {e['median']:7.0f}")
    e, k = out["ratio_edgekd_over_bare"], out["ratio_ce_step_over_kd_step"]
    print(f"edgekd / bare: {e['median']:.3f}x  [{e['min']:.3f}, {e['max']:.3f}]   (goal >= 0.9); source images: "
          f"{out['ratio_edgekd_over_bare_source_images']['median']:.3f}x")
    print(f"KD step time / CE step time: {k['median']:.3f}x  [{k['min']:.3f}, {k['max']:.3f}]   (goal <= 1.05)")
    if "ratio_same_view_over_bare" in out:
        v = out["ratio_same_view_over_bare"]
        print(f"recipe as is (teacher on every batch) / bare: {v['median']:.3f}x  [{v['min']:.3f}, {v['max']:.3f}]")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
