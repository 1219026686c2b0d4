"""The training loops: teacher training when the config names no teacher, and knowledge distillation
of the student with a method of the ``LOSSES`` registry (defined in ``losses.py``, re-exported here).

    loss = LOSSES.get("hinton")(student_logits, teacher_logits, labels, cfg)
    distill(student, teacher_logits_train, train_split, cfg.distill, device="cpu", teacher=teacher)

Teacher outputs on the (unaugmented) training split are computed once and reused every epoch:
teacher inference dominates distillation cost on small machines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DistillConfig, TeacherConfig
from .data import Split
from .errors import ConfigError
from .losses import (
    LOSSES,
    FeatureTaps,
    StepContext,
    batch_augmentation_on,
    is_step_method,
    make_regressors,
    parse_layer_pairs,
    spec_of,
)
from .models import predict_logits
from .training import BestEpoch, Progress, Recipe, make_optimizer

__all__ = ["LOSSES", "crop_flip_batch", "distill", "make_augmenter", "predict_logits", "resolve_device",
           "train_teacher"]


_STEP_UNDER_TORCHRUN = ("runs its own passes per batch (a step method); in several processes only the "
                        "loss methods train")


def check_processes(cfg, processes: int) -> None:
    """The one preflight rule for a build in several processes (torchrun, ``--nproc-per-node``):
    a step method (``losses.step_method``) trains in one process only, and the global batch
    (``distill.batch_size``) splits evenly over the processes."""
    if processes > 1 and cfg.distill.batch_size % processes:
        raise ConfigError(f"distill.batch_size = {cfg.distill.batch_size} (the global batch) does not split "
                          f"evenly over {processes} processes; make it a multiple of {processes}")
    if processes > 1 and spec_of(LOSSES.get(cfg.distill.loss)).step:
        loss_names = sorted(n for n in LOSSES.names() if not spec_of(LOSSES.get(n)).step)
        raise ConfigError(f"distill.loss = {cfg.distill.loss!r} {_STEP_UNDER_TORCHRUN} "
                          f"({', '.join(loss_names)}); run it with one process")


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; "cuda" without a GPU is an input error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("compute.device = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return name


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def train_teacher(model: nn.Module, train: Split, cfg: TeacherConfig, device: str,
                  progress: bool = True, val: Split | None = None) -> dict:
    """Cross-entropy training with the teacher's recipe (``teacher.optimizer``, one-cycle, at least
    ``teacher.min_steps`` steps); returns the training record (per-epoch log, kept epoch)."""
    recipe = dataclasses.replace(Recipe.from_config(cfg), select="clean")
    return _fit(model, train, None, recipe, device, progress, "teacher",
                lambda s, _t, y: F.cross_entropy(s, y), crop_flip=cfg.crop_flip,
                validate=make_validator(val, "clean", None, device))


def make_validator(val: Split | None, select: str, cfg: DistillConfig | None, device: str,
                   batch_size: int = 512) -> Callable[[nn.Module], float] | None:
    """``model -> accuracy`` on the validation split (``select = "clean"``), or on a fixed, seeded
    perturbed copy of it made with ``cfg.augment`` (``"perturbed"``: one training perturbation at a
    random severity per image); None without a validation split or with ``select = "last"``."""
    if val is None or len(val) == 0 or select == "last":
        return None
    x = val.x
    if select == "perturbed":
        if cfg is None or not cfg.augment:
            raise ConfigError("distill.select = 'perturbed' scores epochs on the validation images "
                              "perturbed with distill.augment, which is empty; use 'clean'")
        x = perturbed_copy(val, cfg.augment, cfg.seed + 5)
    y = val.y

    def validate(model: nn.Module) -> float:
        was_training = model.training
        preds = predict_logits(model, x, device, batch_size).argmax(1)
        model.train(was_training)
        return float((preds == y).mean())

    return validate


def perturbed_copy(split: Split, names: list[str], seed: int) -> np.ndarray:
    """``split.x`` with each image perturbed by one of ``names`` at a severity 1..5, both drawn
    with ``seed`` (batched per perturbation and severity)."""
    from . import perturb

    names = perturb.resolve(names)
    rng = np.random.default_rng(seed)
    which = rng.integers(len(names), size=len(split))
    sev = rng.integers(1, 6, size=len(split))
    out = split.x.copy()
    for k, name in enumerate(names):
        for s in range(1, 6):
            rows = np.flatnonzero((which == k) & (sev == s))
            if len(rows):
                out[rows] = perturb.apply(name, split.x[rows], s, int(rng.integers(1 << 31)),
                                          split.indices[rows])
    return out


def distill(student: nn.Module, teacher_logits: np.ndarray, train: Split, cfg: DistillConfig,
            device: str, progress: bool = True, teacher: nn.Module | None = None,
            teacher_logits_hflip: np.ndarray | None = None, val: Split | None = None) -> dict:
    """Train ``student`` on ``train`` against cached ``teacher_logits`` with ``cfg.loss``.

    With ``cfg.crop_flip`` each image is randomly shifted (4-px reflect padding, random crop) and
    mirrored with probability 1/2; the soft target of a mirrored image is the teacher's output on
    the mirrored image (``teacher_logits_hflip``, cached like the clean one), the shift is small
    enough to keep the target of the unshifted image.

    With ``cfg.augment`` (corruption-augmented KD), each batch picks one of those perturbations and
    a severity 1..5 at random and applies it to ``cfg.augment_prob`` of its images, in their place
    (``augment_mode = "replace"``) or as extra copies after the clean batch ("append"); the soft target
    stays the teacher's output on the clean image (``augment_target = "clean"``, as in AugMix's use of
    clean labels, Hendrycks et al. 2020) or is the teacher run on the perturbed image ("perturbed",
    which needs ``teacher``). ``cfg.epochs == 0`` leaves the student at its (seeded) initialisation.

    Step methods (``fitnets``, ``attention``, ``augmix_js``, ``ard``, ``rslad``; see ``losses.py``) get
    the batch, its soft targets and the models and run them themselves. ``fitnets`` / ``attention``
    need ``teacher`` (run on every batch for its feature maps); ``fitnets``' regressors are trained
    with the student and dropped afterwards. ``augmix_js`` makes its two perturbed views from
    ``cfg.augment`` itself (all images of each view perturbed), so the batch-level corruption
    augmentation is off for it.
    """
    loss_fn = LOSSES.get(cfg.loss)
    step = is_step_method(loss_fn)
    augment, retarget = None, None
    if batch_augmentation_on(cfg):
        augment = make_augmenter(cfg, train, mode=cfg.augment_mode)
        if cfg.augment_target == "perturbed":
            if teacher is None:
                raise ConfigError("distill.augment_target = 'perturbed' needs the teacher model to run on "
                                  "the perturbed images; pass teacher= or use 'clean'")
            retarget = teacher
    consistent = None
    if cfg.teacher_view == "same" and spec_of(loss_fn).uses_teacher:
        if teacher is None:
            raise ConfigError("distill.teacher_view = 'same' runs the teacher on every batch; pass "
                              "teacher= or use 'cached'")
        consistent = teacher
    step_fn, aux = None, None
    if step:
        step_fn, aux = _step_closure(loss_fn, student, teacher, train, cfg, device)
    return _fit(student, train, teacher_logits, Recipe.from_config(cfg), device,
                progress, "student", lambda s, t, y: loss_fn(s, t, y, cfg), augment,
                crop_flip=cfg.crop_flip, teacher_logits_hflip=teacher_logits_hflip,
                step=step_fn, aux=aux, retarget=retarget, consistent=consistent,
                validate=make_validator(val, cfg.select, cfg, device))


def _step_closure(method, student: nn.Module, teacher: nn.Module | None, train: Split,
                  cfg: DistillConfig, device: str):
    """The per-batch function of a step method, and its trainable extra module (or None)."""
    spec = spec_of(method)
    if spec.needs_teacher and teacher is None:
        raise ValueError(f"distill.loss = {cfg.loss!r} needs the teacher module (distill(teacher=...))")
    taps = aux = views = None
    if spec.feature_layers:
        if not cfg.feature_layers:
            raise ConfigError(f"distill.loss = {cfg.loss!r} needs distill.feature_layers "
                              "(pairs 'student_module:teacher_module')")
        student.to(device)
        taps = FeatureTaps(student, teacher, parse_layer_pairs(cfg.feature_layers))
        channels = taps.channels(student, teacher, torch.from_numpy(train.x[:2]).to(device))
        if spec.regressors:
            aux = make_regressors(channels).to(device)
    if spec.needs_views:
        if not cfg.augment:
            raise ConfigError(f"distill.loss = {cfg.loss!r} needs perturbations in distill.augment "
                              "to make its augmented views")
        view_aug = make_augmenter(cfg, train, prob=1.0)

        def views(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            xa = view_aug(x.cpu().numpy(), idx, None)[0]
            return torch.from_numpy(xa).to(x.device)

    gen = torch.Generator().manual_seed(cfg.seed + 3)  # PGD random starts

    def step(xb: torch.Tensor, tb: torch.Tensor | None, yb: torch.Tensor, idx: np.ndarray):
        ctx = StepContext(student=student, teacher=teacher, x=xb, idx=idx, teacher_logits=tb,
                          labels=yb, cfg=cfg, views=views, taps=taps, aux=aux, gen=gen)
        return method(ctx)

    return step, aux


def crop_flip_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``pad``-px reflect-padded crop + horizontal flip of a uint8 NHWC batch in one
    gather (no per-image loop); returns (images, flipped mask)."""
    shifts = draw_crop_flip(len(x), gen, pad, x.device)
    return apply_crop_flip(x, shifts, pad), shifts[2]


def draw_crop_flip(n: int, gen: torch.Generator, pad: int = 4, device="cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random part of :func:`crop_flip_batch`: per-image (dy, dx, flip)."""
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen).to(device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen).to(device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(device)
    return dy, dx, flip


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Source index of position ``i`` (may lie in -n+1 .. 2n-2) under reflect padding (no edge
    repeat, as ``F.pad(mode="reflect")``)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def apply_crop_flip(x: torch.Tensor, shifts: tuple[torch.Tensor, torch.Tensor, torch.Tensor], pad: int = 4
                    ) -> torch.Tensor:
    """Crop and mirror each image of a uint8 NHWC batch as ``shifts`` (from :func:`draw_crop_flip`)
    say, so a second batch (the clean sources of perturbed images) can get the same crops. One
    ``index_select`` of whole pixels on the uint8 batch: the reflect padding is folded into the
    indices (bit-identical to padding, cropping and flipping, ~6x faster than a padded float copy)."""
    dy, dx, flip = shifts
    n, h, w, c = x.shape
    rows = _reflect(dy + torch.arange(h, device=x.device) - pad, h)
    cols = _reflect(dx + torch.arange(w, device=x.device) - pad, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, h * w)
    flat = flat + (torch.arange(n, device=x.device) * (h * w))[:, None]
    return x.reshape(n * h * w, c).index_select(0, flat.reshape(-1)).view(n, h, w, c)


def make_augmenter(cfg: DistillConfig, train: Split, prob: float | None = None, mode: str = "replace"):
    """Batch augmenter for corruption-augmented KD:
    (uint8 batch, indices, targets) -> (batch, indices, targets, perturbed rows, source rows).

    Each call perturbs ``prob`` (default ``cfg.augment_prob``) of the images with one perturbation
    of ``cfg.augment`` at one severity 1..5, both drawn at random. ``mode = "replace"`` puts the
    perturbed images in place of their clean originals; ``"append"`` keeps the whole clean batch and
    adds the perturbed copies after it (their indices and targets repeated, so labels and targets
    follow); ``source rows`` are the positions in the input batch each output image came from. A
    perturbed image keeps its clean image's target; ``prepare_batch`` swaps in the teacher's output
    on it for ``augment_target = "perturbed"``."""
    from . import perturb

    names = perturb.resolve(cfg.augment)
    rng = np.random.default_rng(cfg.seed + 1)
    prob = cfg.augment_prob if prob is None else prob

    def augment(x: np.ndarray, idx: np.ndarray, targets: torch.Tensor | None):
        name = names[int(rng.integers(len(names)))]
        severity = int(rng.integers(1, 6))
        mask = rng.random(len(x)) < prob
        if not mask.any():
            return x, idx, targets, mask, np.arange(len(x))
        xp = perturb.apply(name, x[mask], severity, int(rng.integers(1 << 31)), train.indices[idx[mask]])
        if mode == "append":
            return (np.concatenate([x, xp]), np.concatenate([idx, idx[mask]]),
                    None if targets is None else torch.cat([targets, targets[torch.from_numpy(mask)]]),
                    np.concatenate([np.zeros(len(x), bool), np.ones(len(xp), bool)]),
                    np.concatenate([np.arange(len(x)), np.flatnonzero(mask)]))
        x = x.copy()
        x[mask] = xp
        return x, idx, targets, mask, np.arange(len(x))

    return augment


def prepare_batch(idx_np: np.ndarray, clean: np.ndarray, xc: torch.Tensor, t: torch.Tensor | None,
                  t_flip: torch.Tensor | None, device: str, augment: Callable | None = None,
                  crop_flip: bool = False, aug_gen: torch.Generator | None = None,
                  retarget: nn.Module | None = None, consistent: nn.Module | None = None):
    """One training batch: (images, indices, index tensor, soft targets) after corruption
    augmentation and crop/flip, from the clean images of the indices ``idx_np`` (``clean`` on the
    host, ``xc`` the same on ``device``). A mirrored image gets the teacher's mirrored-image target
    (``t_flip``). With ``consistent`` (the teacher, for ``teacher_view = "same"``) every image's
    target is the teacher on its clean source with the same crop and flip (consistent teaching);
    with ``retarget`` (the teacher, for ``augment_target = "perturbed"``) each perturbed image gets
    the teacher's output on exactly the image the student sees, crop and flip included."""
    idx = torch.from_numpy(idx_np).to(device)
    xb, tb = xc, (t[idx] if t is not None else None)
    perturbed, src = None, None
    if augment is not None:  # perturbations work on uint8 numpy batches
        xa, idx_np, tb, perturbed, src = augment(clean, idx_np, tb)
        xb, idx = _to(torch.from_numpy(xa), device), torch.from_numpy(idx_np).to(device)
    shifts = None
    if crop_flip:
        shifts = draw_crop_flip(len(xb), aug_gen, device=xb.device)
        xb = apply_crop_flip(xb, shifts)
        if t_flip is not None and tb is not None:
            tb = torch.where(shifts[2][:, None], t_flip[idx], tb)
    if consistent is not None:  # the teacher on each row's clean source, cropped and flipped like it
        base = xc if src is None else xc[torch.from_numpy(src).to(xc.device)]
        base = base if shifts is None else apply_crop_flip(base, shifts)
        with torch.no_grad():
            tb = consistent.eval()(base).float()
    if retarget is not None and tb is not None and perturbed is not None and perturbed.any():
        rows = torch.from_numpy(perturbed).to(device)
        with torch.no_grad():
            tb = tb.clone()
            tb[rows] = retarget.eval()(xb[rows]).to(tb.dtype)
    return xb, idx_np, idx, tb


def _to(t: torch.Tensor, device: str) -> torch.Tensor:
    """Host -> device copy; on CUDA through pinned memory, asynchronously."""
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _fit(model: nn.Module, train: Split, teacher_logits: np.ndarray | None, recipe: Recipe,
         device: str, progress: bool, what: str,
         loss_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor],
         augment: Callable | None = None, crop_flip: bool = False,
         teacher_logits_hflip: np.ndarray | None = None, step: Callable | None = None,
         aux: nn.Module | None = None, retarget: nn.Module | None = None,
         consistent: nn.Module | None = None, validate: Callable[[nn.Module], float] | None = None) -> dict:
    """The training loop: returns {"log": per-epoch rows, "kept": which epoch's weights were kept}.

    The images of a batch come from memory, or for a streamed split (``edgekd.streaming``) from
    DataLoader workers decoding them, in the same batches. Under torchrun (``edgekd.distributed``)
    the model trains in ``DistributedDataParallel``, each process on its ``DistributedSampler``
    share of every global batch; rank 0 scores the epochs and its weights are kept everywhere."""
    from .distributed import current, epoch_batches
    from .streaming import is_lazy, stream

    group = current()
    model.to(device)
    epochs = recipe.epochs_for(len(train))
    if epochs == 0:
        return {"log": [], "kept": None, "epochs": 0}
    if group.distributed and step is not None:  # (check_processes refused it before any process started)
        raise ConfigError(f"this distillation method {_STEP_UNDER_TORCHRUN}")
    gen = torch.Generator().manual_seed(recipe.seed)
    lazy = is_lazy(train.x)
    x = None if lazy else torch.from_numpy(train.x).to(device)
    y = torch.from_numpy(train.y).to(device)
    t = torch.from_numpy(teacher_logits).to(device) if teacher_logits is not None else None
    t_flip = torch.from_numpy(teacher_logits_hflip).to(device) if teacher_logits_hflip is not None else None
    aug_gen = torch.Generator().manual_seed(recipe.seed + 2 + 7919 * group.rank)

    def plan(epoch: int) -> list[np.ndarray]:
        if group.distributed:
            return epoch_batches(group, len(y), recipe.batch_size, recipe.seed, epoch)
        return [b.numpy() for b in _batches(len(y), recipe.batch_size, gen)]

    net = model
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[group.local_rank] if device.startswith("cuda") else None)
        if validate is not None:  # rank 0 scores the epoch; every process acts on its score
            score = validate
            validate = lambda m: group.broadcast(score(m) if group.is_main else None)  # noqa: E731
    # extra trainable modules (FitNets' regressors) share the optimiser but are not part of the model
    steps_per_epoch = len(plan(0)) if group.distributed else (len(y) + recipe.batch_size - 1) // recipe.batch_size
    opt, sched = make_optimizer([model] + ([aux] if aux is not None else []), recipe,
                                epochs * steps_per_epoch)
    keeper = BestEpoch(model, recipe, validate)
    # bf16 autocast on CUDA (no loss scaling needed); a no-op context on CPU
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=recipe.amp and device.startswith("cuda"))
    bar = Progress(epochs * steps_per_epoch, what, progress and group.is_main)
    log: list[dict] = []
    for epoch in range(epochs):
        model.train()
        if aux is not None:
            aux.train()
        total, correct, loss_sum = 0, 0, 0.0
        batches = plan(epoch)
        images = stream(train.x, batches) if lazy else None
        for idx_np in batches:
            clean = next(images) if lazy else train.x[idx_np]
            xc = _to(torch.from_numpy(clean), device) if lazy else x[torch.from_numpy(idx_np).to(device)]
            with autocast:
                xb, idx_np, idx, tb = prepare_batch(idx_np, clean, xc, t, t_flip, device, augment,
                                                    crop_flip, aug_gen, retarget, consistent)
                if step is None:
                    out = net(xb)
                    loss = loss_fn(out.float(), None if tb is None else tb.float(), y[idx])
                else:
                    loss, out = step(xb, tb, y[idx], idx_np)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            keeper.after_step()
            total += len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
            loss_sum += float(loss.detach()) * len(idx)
            bar.step(len(idx) * group.world)
        total, correct, loss_sum = group.all_sum([total, correct, loss_sum])
        row = {"epoch": epoch + 1, "loss": loss_sum / total, "train_accuracy": correct / total,
               "lr_end": opt.param_groups[0]["lr"], "images_per_s": round(bar.images_per_s(), 1)}
        stop = keeper.end_epoch(epoch + 1, row)
        log.append(row)
        bar.epoch(loss=f"{row['loss']:.3f}", acc=f"{row['train_accuracy']:.3f}",
                  **({"val": f"{row['val_score']:.3f}"} if "val_score" in row else {}))
        if stop:
            break
    bar.close()
    kept = keeper.restore()
    group.sync_module(model)  # BatchNorm statistics differ per process: rank 0's are kept
    model.eval()
    return {"log": log, "kept": kept, "epochs": epochs}
