"""Distillation methods (a registry): each entry cites its paper and formula.

    loss = LOSSES.get("hinton")(student_logits, teacher_logits, labels, cfg)   # a logit loss
    loss, logits = LOSSES.get("rslad")(ctx)                                     # a step method

Two kinds of entries share ``LOSSES`` (``distill.loss`` picks one):

- logit losses ``(student_logits, teacher_logits, labels, cfg) -> loss`` (``hinton``, ``ce``): the
  training loop runs the student once and hands them the cached teacher logits;
- step methods ``(ctx: StepContext) -> (loss, student_logits)`` (``fitnets``, ``attention``,
  ``augmix_js``, ``ard``, ``rslad``), marked by :func:`step_method`: they need more than one student
  pass (adversarial examples, augmented views) or the teacher's feature maps, so they run the
  models themselves. :func:`is_step_method` tells them apart.

What a method needs is a :class:`LossSpec` of flags given where it registers (:func:`logit_loss`,
:func:`step_method`) and read with :func:`loss_spec`: config validation, the build's preflight, the
training loop and the report ask the flags, never the name, so a new method registered here with
its flags is accepted everywhere (``distill.loss``'s choices are this registry's names).

The formulas are also plain functions (``kd_term``, ``hint_loss``, ``attention_transfer_loss``,
``js_consistency``, ``ard_loss``, ``rslad_loss``, ``pgd_kl``) so tests pin their values.
KL(p || q) below is sum_k p_k log(p_k / q_k), averaged over the batch (PyTorch's
``kl_div(log q, p, reduction="batchmean")``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from .config import DistillConfig

LossFn = Callable[..., Any]
LOSSES: Registry[LossFn] = Registry("distillation loss")


@dataclass(frozen=True)
class LossSpec:
    """What a distillation method needs, as flags on its registered entry (``fn.spec``)."""

    step: bool = False            # a step method (ctx) -> (loss, logits), else (s, t, y, cfg) -> loss
    uses_teacher: bool = True     # False: labels only, no soft targets (none computed or cached)
    needs_teacher: bool = False   # runs the teacher module itself on every batch
    feature_layers: bool = False  # matches feature maps: needs distill.feature_layers, forward hooks
    regressors: bool = False      # trains extra modules (FitNets' 1x1 regressors) with the student
    needs_views: bool = False     # makes its own perturbed views from distill.augment
    adversarial: bool = False     # trains on PGD examples (distill.adv_epsilon, adv_steps, ...)

    def __post_init__(self) -> None:
        needs_step = [f for f in ("needs_teacher", "feature_layers", "regressors", "needs_views", "adversarial")
                      if getattr(self, f)]
        if needs_step and not self.step:
            raise ValueError(f"{', '.join(needs_step)}: only a step method runs the models itself")
        if (self.feature_layers or self.regressors) and not self.needs_teacher:
            raise ValueError("feature_layers / regressors need the teacher module (needs_teacher=True)")
        if self.regressors and not self.feature_layers:
            raise ValueError("regressors map feature maps: they need feature_layers=True")
        if self.needs_teacher and not self.uses_teacher:
            raise ValueError("needs_teacher contradicts uses_teacher=False")


def _register(name: str, spec: LossSpec) -> Callable[[LossFn], LossFn]:
    def deco(fn: LossFn) -> LossFn:
        fn.spec = spec
        return LOSSES.register(name)(fn)
    return deco


def logit_loss(name: str, *, uses_teacher: bool = True) -> Callable[[LossFn], LossFn]:
    """Register a ``(student_logits, teacher_logits, labels, cfg) -> loss`` under ``name``;
    ``uses_teacher=False`` for a labels-only loss (then no teacher logits are computed for it)."""
    return _register(name, LossSpec(uses_teacher=uses_teacher))


def spec_of(fn: LossFn) -> LossSpec:
    """The flags of a registered method (a function registered without them is a logit loss that
    uses the teacher's logits)."""
    return getattr(fn, "spec", None) or LossSpec()


def loss_spec(name: str) -> LossSpec:
    """The flags of the method ``distill.loss = name`` (ConfigError listing the names if unknown)."""
    return spec_of(LOSSES.get(name))


def loss_names(**flags: bool) -> list[str]:
    """The registered methods whose flags have these values, in registration order:
    ``loss_names(feature_layers=False, uses_teacher=True)``."""
    bad = set(flags) - {f.name for f in fields(LossSpec)}
    if bad:
        raise TypeError(f"no LossSpec flag {sorted(bad)[0]!r}")
    return [n for n in LOSSES if all(getattr(loss_spec(n), k) == v for k, v in flags.items())]


# --- formulas -------------------------------------------------------------------------------------

def kl_batchmean(target_logits: torch.Tensor, student_logits: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """KL(softmax(target / t) || softmax(student / t)), averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(target_logits / t, dim=1),
                    reduction="batchmean", log_target=True)


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) (Hinton et al. 2015's soft-target term)."""
    return t * t * kl_batchmean(teacher_logits, student_logits, t)


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor, cfg) -> torch.Tensor:
    """The hard-label cross-entropy term, with ``cfg.label_smoothing``."""
    return F.cross_entropy(student_logits, labels, label_smoothing=getattr(cfg, "label_smoothing", 0.0))


def _match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two NCHW maps down to the other's height and width."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def hint_loss(student_regressed: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """FitNets hint: sum over layer pairs of mean((r(F_s) - F_t)^2), the regressor r applied already."""
    total = student_regressed[0].new_zeros(())
    for s, t in zip(student_regressed, teacher_feats):
        s, t = _match_spatial(s, t)
        total = total + F.mse_loss(s, t)
    return total


def attention_map(a: torch.Tensor) -> torch.Tensor:
    """Q / ||Q||_2 with Q = mean over channels of A^2, flattened per image (Zagoruyko 2017, f = F^2_mean)."""
    return F.normalize(a.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
                            beta: float) -> torch.Tensor:
    """beta/2 * sum over layer pairs of mean_{i,k} (Q_s/||Q_s|| - Q_t/||Q_t||)_{ik}^2.

    The squared distance averaged over images i and positions k, as in the authors' code
    (github.com/szagoruyko/attention-transfer, ``at_loss``), which is what beta = 1e3 was tuned for.
    """
    total = student_feats[0].new_zeros(())
    for s, t in zip(student_feats, teacher_feats):
        s, t = _match_spatial(s, t)
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return beta / 2 * total


def js_consistency(*logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of the views' softmaxes: JS = 1/V sum_v KL(p_v || M), M = mean_v p_v.

    As AugMix's code: log M is taken of M clamped to [1e-7, 1].
    """
    probs = [F.softmax(z, dim=1) for z in logits]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
    return sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / len(probs)


def ard_loss(student_adv: torch.Tensor, student_clean: torch.Tensor, teacher_clean: torch.Tensor,
             labels: torch.Tensor, t: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(p_t(x)/T || p_s(x')/T) + (1 - alpha) * CE(s(x), y)  (Goldblum et al. 2020)."""
    return alpha * kd_term(student_adv, teacher_clean, t) + (1 - alpha) * F.cross_entropy(student_clean, labels)


def rslad_loss(student_adv: torch.Tensor, student_clean: torch.Tensor, teacher_clean: torch.Tensor
               ) -> torch.Tensor:
    """5/6 * KL(p_t(x) || p_s(x')) + 1/6 * KL(p_t(x) || p_s(x)), T = 1, no hard labels (Zi et al. 2021)."""
    return 5 / 6 * kl_batchmean(teacher_clean, student_adv) + 1 / 6 * kl_batchmean(teacher_clean, student_clean)


def pgd_kl(model: nn.Module, x: torch.Tensor, target_logits: torch.Tensor, t: float, eps: float,
           step_size: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """PGD-L-inf on ``model`` maximising KL(softmax(target / t) || softmax(model(x') / t)).

    ``x`` holds pixels 0..255 (uint8 or float), ``eps`` and ``step_size`` are in pixel levels; random
    start uniform in the eps-ball, then ``steps`` signed-gradient steps, each projected onto the ball
    and onto [0, 255]. Returns float pixels (not rounded: the student trains on them directly).
    The model's train/eval mode is left to the caller.
    """
    x = x.float()
    target = target_logits.detach()
    noise = torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1
    adv = (x + eps * noise).clamp(0, 255)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = kl_batchmean(target, model(adv), t)
        (g,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step_size * g.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 255)
    return adv.detach()


# --- logit losses ---------------------------------------------------------------------------------

@logit_loss("hinton")
def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              cfg: DistillConfig) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    L = (1 - a) * CE(z_s, y) + a * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),
    KL averaged over the batch; T = ``cfg.temperature``, a = ``cfg.alpha``. The T^2 factor keeps the
    soft-target gradients on the scale of the hard-label ones.
    """
    t = cfg.temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1 - cfg.alpha) * hard_ce(student_logits, labels, cfg) + cfg.alpha * t * t * kl


@logit_loss("ce", uses_teacher=False)
def cross_entropy_only(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       labels: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """Plain cross-entropy on the labels (label-smoothed with ``cfg.label_smoothing``), ignoring
    the teacher (the no-KD baseline)."""
    return hard_ce(student_logits, labels, cfg)


# --- step methods ---------------------------------------------------------------------------------

@dataclass
class StepContext:
    """What a step method sees for one batch.

    ``x`` is the uint8 NHWC batch the student trains on (after distill.augment and crop_flip);
    ``teacher_logits`` the soft targets of those images (the teacher on the clean image, cached);
    ``views`` makes one perturbed copy of a uint8 batch with a perturbation of distill.augment;
    ``taps`` the feature hooks and ``aux`` the trainable regressors of the feature methods;
    ``gen`` seeds PGD's random start.
    """

    student: nn.Module
    teacher: nn.Module | None
    x: torch.Tensor
    idx: np.ndarray
    teacher_logits: torch.Tensor
    labels: torch.Tensor
    cfg: DistillConfig
    views: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None
    taps: FeatureTaps | None = None
    aux: nn.Module | None = None
    gen: torch.Generator | None = None


def step_method(name: str, *, uses_teacher: bool = True, needs_teacher: bool = False,
                feature_layers: bool = False, regressors: bool = False, needs_views: bool = False,
                adversarial: bool = False) -> Callable[[LossFn], LossFn]:
    """Register a ``(ctx) -> (loss, student_logits)`` method under ``name`` with what it needs
    (the flags of :class:`LossSpec`)."""
    return _register(name, LossSpec(step=True, uses_teacher=uses_teacher, needs_teacher=needs_teacher,
                                    feature_layers=feature_layers, regressors=regressors,
                                    needs_views=needs_views, adversarial=adversarial))


def is_step_method(fn: LossFn) -> bool:
    return spec_of(fn).step


def batch_augmentation_on(cfg) -> bool:
    """Whether corruption-augmented KD perturbs the training batches (``cfg`` is the DistillConfig):
    perturbations listed, ``augment_prob > 0``, and a method that does not make its own views from
    them (``needs_views``, e.g. ``augmix_js``). The one rule for training and for the report."""
    return bool(cfg.augment) and cfg.augment_prob > 0 and not loss_spec(cfg.loss).needs_views


def training_meta(d) -> dict:
    """What the student saw in training (``d`` is the DistillConfig), so the report can say whether
    the robustness figures are inflated. Perturbations are listed only if the student really saw
    them: ``augment_prob > 0``, or a method that makes its views from ``distill.augment``.
    ``training_augment`` says how batch-level corruption augmentation was applied (fraction, replace
    or append, target), None without it."""
    from . import perturb  # the registry of perturbation names

    spec = loss_spec(d.loss) if d.epochs else None  # None: the student was not trained
    sees_augment = bool(d.augment) and (d.augment_prob > 0 or (spec is not None and spec.needs_views))
    trained_on = perturb.resolve(d.augment) if spec is not None and sees_augment else []
    return {"training_method": d.loss if d.epochs else None,
            "training_perturbations": trained_on,
            "training_augment": ({"prob": d.augment_prob, "mode": d.augment_mode, "target": d.augment_target}
                                 if spec is not None and batch_augmentation_on(d) else None),
            "training_overlaps_evaluation": [n for n in trained_on if n in perturb.COMMON],
            "training_adversarial": ({"method": d.loss, "epsilon_255": d.adv_epsilon, "steps": d.adv_steps,
                                      "step_size_255": d.adv_step_size}
                                     if spec is not None and spec.adversarial else None)}


@step_method("fitnets", needs_teacher=True, feature_layers=True, regressors=True)
def fitnets(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Romero et al. 2015 (FitNets): Hinton KD + w * sum_pairs mean((r(F_s) - F_t)^2), r a 1x1 conv.

    F_s, F_t: the feature maps of the distill.feature_layers pairs (spatial sizes average-pooled to
    the smaller); r: one trainable 1x1 convolution per pair from the student's channels to the
    teacher's, trained with the student but not part of it (not exported); w = distill.hint_weight.
    Trained jointly with the KD term (the paper's stage-wise hint training is not reproduced).
    Cost: the teacher runs on every batch (its features are not cached).
    """
    s_logits, s_feats, t_feats = _features(ctx)
    regressed = [r(f) for r, f in zip(ctx.aux, s_feats)]
    loss = hinton_kd(s_logits, ctx.teacher_logits, ctx.labels, ctx.cfg) + \
        ctx.cfg.hint_weight * hint_loss(regressed, t_feats)
    return loss, s_logits


@step_method("attention", needs_teacher=True, feature_layers=True)
def attention(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Zagoruyko & Komodakis 2017 (attention transfer): Hinton KD + b/2 * sum_pairs ||Q_s/||Q_s|| - Q_t/||Q_t||||^2.

    Q = mean over channels of A^2 of a feature map A, flattened; pairs from distill.feature_layers
    (spatial sizes average-pooled to the smaller); b = distill.at_beta (paper: 1e3); the squared
    distance is averaged over images and positions as in the authors' code. No extra parameters.
    Cost: the teacher runs on every batch (its features are not cached).
    """
    s_logits, s_feats, t_feats = _features(ctx)
    loss = hinton_kd(s_logits, ctx.teacher_logits, ctx.labels, ctx.cfg) + \
        attention_transfer_loss(s_feats, t_feats, ctx.cfg.at_beta)
    return loss, s_logits


@step_method("augmix_js", needs_views=True)
def augmix_js(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Hendrycks et al. 2020 (AugMix's consistency): Hinton KD on x + l * JS(p_s(x), p_s(x1), p_s(x2)).

    x1, x2: two perturbed views of each image (a perturbation of distill.augment at a random
    severity each, i.e. the training-only set); the KD target is the teacher's output on the clean
    image; JS = 1/3 sum_v KL(p_v || M), M the mean of the three softmaxes; l = distill.js_weight
    (paper: 12). The three views go through the student as one batch. Cost: 3x the student's
    forward and backward; the teacher's logits stay cached.
    """
    v1, v2 = ctx.views(ctx.x, ctx.idx), ctx.views(ctx.x, ctx.idx)
    n = len(ctx.x)
    z = ctx.student(torch.cat([ctx.x, v1, v2]))
    z_clean, z1, z2 = z[:n], z[n:2 * n], z[2 * n:]
    loss = hinton_kd(z_clean, ctx.teacher_logits, ctx.labels, ctx.cfg) + \
        ctx.cfg.js_weight * js_consistency(z_clean, z1, z2)
    return loss, z_clean


def _adversarial(ctx: StepContext, t: float) -> torch.Tensor:
    # the attack runs with the student in eval mode (batch-norm statistics untouched by it), as in
    # RSLAD's code; the student then trains in train mode, clean and adversarial batches in separate
    # passes (separate batch-norm statistics), as in both papers' code
    ctx.student.eval()
    try:
        adv = pgd_kl(ctx.student, ctx.x, ctx.teacher_logits, t, ctx.cfg.adv_epsilon,
                     ctx.cfg.adv_step_size, ctx.cfg.adv_steps, ctx.gen)
    finally:
        ctx.student.train()
    return adv


@step_method("ard", adversarial=True)
def ard(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Goldblum et al. 2020 (ARD): a * T^2 * KL(p_t(x)/T || p_s(x')/T) + (1 - a) * CE(s(x), y).

    x' = PGD-L-inf on the student from x maximising KL(p_t(x)/T || p_s(x')/T) (distill.adv_epsilon,
    adv_step_size, adv_steps in pixel levels); p_t(x): the teacher's cached clean logits; a =
    distill.alpha, T = distill.temperature. Cost: adv_steps + 2 student passes per batch.
    """
    adv = _adversarial(ctx, ctx.cfg.temperature)
    z_clean, z_adv = ctx.student(ctx.x), ctx.student(adv)
    loss = ard_loss(z_adv, z_clean, ctx.teacher_logits, ctx.labels, ctx.cfg.temperature, ctx.cfg.alpha)
    return loss, z_clean


@step_method("rslad", adversarial=True)
def rslad(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Zi et al. 2021 (RSLAD): 5/6 * KL(p_t(x) || p_s(x')) + 1/6 * KL(p_t(x) || p_s(x)), T = 1.

    x' = PGD-L-inf on the student from x maximising KL(p_t(x) || p_s(x')) (distill.adv_epsilon,
    adv_step_size, adv_steps in pixel levels); the teacher's soft labels replace the hard labels
    entirely. Cost: adv_steps + 2 student passes per batch.
    """
    adv = _adversarial(ctx, 1.0)
    z_clean, z_adv = ctx.student(ctx.x), ctx.student(adv)
    return rslad_loss(z_adv, z_clean, ctx.teacher_logits), z_clean


# --- feature maps ---------------------------------------------------------------------------------

def parse_layer_pairs(pairs: list[str]) -> list[tuple[str, str]]:
    """``["6:6", "10:10"]`` -> ``[("6", "6"), ("10", "10")]`` (student module, teacher module)."""
    out = []
    for p in pairs:
        s, sep, t = p.partition(":")
        if not sep or not s.strip() or not t.strip():
            raise ConfigError(f"distill.feature_layers entry {p!r} must look like "
                              "'student_module:teacher_module'")
        out.append((s.strip(), t.strip()))
    return out


def _find_modules(net: nn.Module, names: list[str], role: str) -> list[nn.Module]:
    modules = dict(net.named_modules())
    bad = [n for n in names if n not in modules or n == ""]
    if bad:
        valid = [n for n in modules if n][:12]
        raise ConfigError(f"distill.feature_layers: the {role} has no module {bad[0]!r}; its module "
                          f"names (named_modules() of the network) include: {', '.join(valid)}"
                          + (", ..." if len(modules) > 13 else ""))
    return [modules[n] for n in names]


def check_layer_names(student_net: nn.Module | None, teacher_net: nn.Module | None,
                      feature_layers: list[str]) -> None:
    """ConfigError naming the first module of ``feature_layers`` missing from either network
    (a network given as None is not checked: a TorchScript teacher is checked at training)."""
    pairs = parse_layer_pairs(feature_layers)
    if student_net is not None:
        _find_modules(student_net, [s for s, _ in pairs], "student")
    if teacher_net is not None:
        _find_modules(teacher_net, [t for _, t in pairs], "teacher")


class FeatureTaps:
    """Forward hooks that keep the outputs of the named modules of ``student.net`` and ``teacher.net``."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        for role, model in (("student", student), ("teacher", teacher)):
            if isinstance(_net(model), torch.jit.ScriptModule):
                raise ConfigError(f"distill.feature_layers: the {role} is a TorchScript module; "
                                  "TorchScript and torch.export models do not call forward hooks, "
                                  "so their feature maps cannot be matched (use a state_dict teacher)")
        s_mods = _find_modules(_net(student), [s for s, _ in pairs], "student")
        t_mods = _find_modules(_net(teacher), [t for _, t in pairs], "teacher")
        self.student: list[torch.Tensor | None] = [None] * len(pairs)
        self.teacher: list[torch.Tensor | None] = [None] * len(pairs)
        self._mods = [(m, self.student, i) for i, m in enumerate(s_mods)] + \
                     [(m, self.teacher, i) for i, m in enumerate(t_mods)]
        self._handles: list = []

    @contextmanager
    def active(self) -> Iterator[FeatureTaps]:
        def keep(store, i):
            def hook(_m, _inp, out):
                store[i] = out
            return hook

        self._handles = [m.register_forward_hook(keep(store, i)) for m, store, i in self._mods]
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []

    def channels(self, student: nn.Module, teacher: nn.Module, sample: torch.Tensor) -> list[tuple[int, int]]:
        """(student channels, teacher channels) of each pair, from one eval-mode pass on ``sample``."""
        modes = student.training, teacher.training
        student.eval()
        teacher.eval()
        try:
            with torch.no_grad(), self.active():
                student(sample)
                teacher(sample)
            bad = [self.pairs[i] for i, f in enumerate(self.student + self.teacher)
                   if f is None or f.ndim != 4][:1]
            if bad:
                raise ConfigError(f"distill.feature_layers: {bad[0][0]}:{bad[0][1]} does not output a "
                                  "4-D (N, C, H, W) feature map, or never ran (TorchScript and "
                                  "torch.export teachers do not call forward hooks)")
            return [(s.shape[1], t.shape[1]) for s, t in zip(self.student, self.teacher)]
        finally:
            student.train(modes[0])
            teacher.train(modes[1])


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)  # Preprocessed keeps the network as .net


def make_regressors(channels: list[tuple[int, int]]) -> nn.ModuleList:
    """FitNets regressors: a 1x1 convolution per layer pair, student channels -> teacher channels."""
    return nn.ModuleList(nn.Conv2d(cs, ct, 1, bias=False) for cs, ct in channels)


def _features(ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    with ctx.taps.active():
        with torch.no_grad():
            ctx.teacher.eval()(ctx.x)
        s_logits = ctx.student(ctx.x)
    t_feats = [f.detach() for f in ctx.taps.teacher]
    return s_logits, list(ctx.taps.student), t_feats

