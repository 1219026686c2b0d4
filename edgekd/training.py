"""The training recipe shared by teacher training and distillation: optimiser, learning-rate
schedule, weight EMA, best-epoch selection on a validation split, and the progress line.

    recipe = Recipe.from_config(cfg.distill)
    opt, sched = make_optimizer([model], recipe, total_steps)
    keeper = BestEpoch(model, recipe, validate)   # validate(model) -> score on the validation split
    ...; keeper.end_epoch(epoch, log_row); keeper.restore()

Defaults follow the common CIFAR recipe for convolutional students: SGD with Nesterov momentum 0.9,
weight decay 5e-4 on conv / linear weights only (none on BatchNorm and biases), one-cycle (a
linear warm-up to the peak rate, then cosine annealing). The validation split is carved from the
training data (``data.val_fraction``), never the test split.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
SELECT = ("last", "clean", "perturbed")


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    warmup_fraction: float = 0.3
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    select: str = "last"
    early_stop_patience: int = 0
    min_steps: int = 0
    amp: bool = False
    lr_scaling: str = "fixed"
    lr_base_batch: int = 64

    @property
    def peak_lr(self) -> float:
        """The rate the optimiser peaks at: ``lr``, or with ``lr_scaling = "linear"`` ``lr x
        batch_size / lr_base_batch`` (the linear scaling rule of Goyal et al. 2017). ``batch_size``
        is the global batch, whatever the number of processes, so neither depends on it."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / self.lr_base_batch
        return self.lr

    @classmethod
    def from_config(cls, cfg) -> Recipe:
        """From a DistillConfig or TeacherConfig: every field that the config has."""
        names = cls.__dataclass_fields__
        return cls(**{k: getattr(cfg, k) for k in names if hasattr(cfg, k)})

    def epochs_for(self, n_images: int) -> int:
        """``epochs``, raised so that training takes at least ``min_steps`` optimiser steps (a few
        hundred images would otherwise get a few dozen steps)."""
        if self.epochs == 0 or not self.min_steps:
            return self.epochs
        per_epoch = max(1, math.ceil(n_images / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / per_epoch))


def param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights only: BatchNorm scales and shifts and biases (every
    parameter of one dimension or less) get none."""
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(modules: list[nn.Module], recipe: Recipe, total_steps: int):
    """(optimiser, per-step scheduler) for the parameters of ``modules``."""
    named = [(n, p) for m in modules for n, p in m.named_parameters() if p.requires_grad]
    groups = param_groups(named, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe.peak_lr, momentum=recipe.momentum,
                              nesterov=recipe.nesterov and recipe.momentum > 0)
    elif recipe.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=recipe.peak_lr)
    else:
        opt = torch.optim.Adam(groups, lr=recipe.peak_lr)
    total_steps = max(1, total_steps)
    warm = recipe.warmup_fraction
    if recipe.schedule == "onecycle":
        # momentum (SGD) / beta1 (Adam) cycles inversely to the rate, 0.05 either side (fast.ai's
        # one-cycle; for SGD around ``momentum``: 0.95 -> 0.85 at the peak -> 0.95 for 0.9)
        m = recipe.momentum if recipe.optimizer == "sgd" else 0.9
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.peak_lr, total_steps=total_steps,
                                                    pct_start=min(max(warm, 1e-3), 0.999),
                                                    base_momentum=max(0.0, m - 0.05),
                                                    max_momentum=min(0.999, m + 0.05))
    elif recipe.schedule == "cosine":
        warm_steps = int(round(warm * total_steps))

        def factor(step: int) -> float:
            if step < warm_steps:
                return (step + 1) / warm_steps
            t = (step - warm_steps) / max(1, total_steps - warm_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _s: 1.0)
    return opt, sched


class BestEpoch:
    """Weight EMA, per-epoch validation and best-epoch selection.

    After each epoch ``end_epoch`` scores the weights that would be kept (the EMA ones when
    ``ema_decay > 0``) with ``validate`` and keeps a copy of the best; ``restore`` loads it into the
    model at the end. ``select = "last"`` (or no validation split) keeps the last epoch.
    ``early_stop_patience`` epochs without improvement end training early."""

    def __init__(self, model: nn.Module, recipe: Recipe,
                 validate: Callable[[nn.Module], float] | None) -> None:
        self.model, self.recipe = model, recipe
        self.validate = validate if recipe.select != "last" else None
        self.ema = None
        if recipe.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay),
                                     use_buffers=True)
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.since_best = 0

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def kept(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def end_epoch(self, epoch: int, row: dict) -> bool:
        """Score the epoch, keep it if best; returns True when training should stop early."""
        if self.validate is None:
            self.best_epoch = epoch
            return False
        net = self.kept()
        score = float(self.validate(net))
        row["val_score"] = round(score, 6)
        if score > self.best_score:
            self.best_score, self.best_epoch, self.since_best = score, epoch, 0
            self.best_state = copy.deepcopy(net.state_dict())
        else:
            self.since_best += 1
        return bool(self.recipe.early_stop_patience) and self.since_best >= self.recipe.early_stop_patience

    def restore(self) -> dict:
        """Load the kept weights into the model; returns what was kept and why."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        why = ("last epoch (no selection)" if self.validate is None else
               f"best validation {self.recipe.select} accuracy {self.best_score:.4f}")
        return {"kept_epoch": self.best_epoch, "selection": self.recipe.select if self.validate else "last",
                "val_score": None if self.validate is None else round(self.best_score, 6),
                "ema": self.ema is not None, "why": why}


class Progress:
    """The training progress bar: images/s and the ETA over the whole run."""

    def __init__(self, total_steps: int, what: str, enabled: bool) -> None:
        self.bar = tqdm(total=total_steps, desc=f"train {what}", disable=not enabled, leave=False,
                        unit="step")
        self.images = 0
        self.t0 = time.perf_counter()

    def step(self, n_images: int) -> None:
        self.images += n_images
        self.bar.update(1)

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.t0, 1e-9)

    def epoch(self, **fields) -> None:
        self.bar.set_postfix(img_s=f"{self.images_per_s():.0f}", **fields)

    def close(self) -> None:
        self.bar.close()
