"""Adversarial examples (white-box, L-inf) on torch models that take pixel images.

    adv = craft("pgd", model, images_uint8, labels, eps=8, steps=10, seed=0)   # uint8, |adv - x| <= 8

- FGSM (Goodfellow et al. 2015): x' = clip(x + eps * sign(grad_x CE(f(x), y))).
- PGD-L-inf (Madry et al. 2018): random start in the eps-ball, ``steps`` steps of size eps/4,
  projection onto the ball and onto [0, 255] after each step.

``eps`` is in pixel levels (eps=8 means 8/255 of the range). Examples are rounded to uint8: since x
is integer and eps is integer, rounding keeps them within the ball, and the very same bytes can be
fed to onnxruntime artifacts (transfer attacks: onnxruntime is not differentiable).

Gradients go through ``gradient_model(model)``: a copy with BatchNorm folded into the convolutions
(the same function, cheaper forward/backward passes), or the model itself where FX cannot trace it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .registry import Registry

ATTACK_FNS: Registry = Registry("attack")  # each attack registers below, where it is defined


def _grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return g


def _fgsm_direction(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _grad(model, x, y).sign()


def _fgsm_step(x: torch.Tensor, eps: float, direction: torch.Tensor) -> torch.Tensor:
    return (x + eps * direction).clamp(0, 255)


@ATTACK_FNS.register("fgsm")
def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **_) -> torch.Tensor:
    return _fgsm_step(x, eps, _fgsm_direction(model, x, y))


# x + eps * direction(x), clamped: the direction does not depend on eps, so craft_epsilons computes
# it once for all the budgets (one forward/backward per batch instead of one per epsilon)
fgsm.direction = _fgsm_direction


@ATTACK_FNS.register("pgd")
def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        gen: torch.Generator) -> torch.Tensor:
    step = eps / 4
    noise = torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1
    adv = (x + eps * noise).clamp(0, 255)
    for _ in range(steps):
        adv = adv + step * _grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 255)
    return adv


def gradient_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model the attacks differentiate, in eval mode: a copy with every BatchNorm that follows a
    convolution folded into it (``torch.fx.experimental.optimization.fuse``). It is the same
    function; its forward/backward passes cost a fifth to a quarter less on the CPU (no BatchNorm
    pass either way; benchmarks/RESULTS.md, issue 21). The model itself when it has no BatchNorm
    or FX cannot trace it (any error: tracing fails in many ways on arbitrary code)."""
    model.eval()
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)  # a deep copy: the caller's model is untouched
    except Exception:  # noqa: BLE001 - an untraceable model is attacked as it is
        return model


def _batches(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """``(x, y)`` tensors on the model's device, one batch at a time (the model in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        yield (torch.from_numpy(images[i:i + batch_size]).to(device).float(),
               torch.from_numpy(labels[i:i + batch_size]).to(device))


def _as_uint8(adv: torch.Tensor) -> np.ndarray:
    return adv.detach().round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def craft(attack: str, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, eps: int,
          steps: int = 10, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Adversarial uint8 copies of ``images`` against ``model`` (in eval mode, batched)."""
    fn = ATTACK_FNS.get(attack)
    gen = torch.Generator().manual_seed(seed * 1000 + eps)
    model = gradient_model(model)
    return np.concatenate([_as_uint8(fn(model, x, y, float(eps), steps=steps, gen=gen))
                           for x, y in _batches(model, images, labels, batch_size)])


def craft_epsilons(attack: str, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
                   epsilons: list[int], steps: int = 10, seed: int = 0, batch_size: int = 256
                   ) -> dict[int, np.ndarray]:
    """``{eps: craft(attack, model, images, labels, eps, steps, seed, batch_size)}``, the same bytes;
    an attack with a ``direction`` (FGSM) computes it once per batch for every epsilon."""
    direction = getattr(ATTACK_FNS.get(attack), "direction", None)
    model = gradient_model(model)  # folded once for every epsilon (craft's call returns it as it is)
    if direction is None:
        return {e: craft(attack, model, images, labels, e, steps, seed, batch_size) for e in epsilons}
    out: dict[int, list] = {e: [] for e in epsilons}
    for x, y in _batches(model, images, labels, batch_size):
        d = direction(model, x, y)
        for e in epsilons:
            out[e].append(_as_uint8(_fgsm_step(x, float(e), d)))
    return {e: np.concatenate(v) for e, v in out.items()}


ATTACKS = tuple(ATTACK_FNS.names())  # ("fgsm", "pgd"), in registration order
