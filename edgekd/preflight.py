"""Checks a build runs before any training: names, files, shapes (:func:`preflight`), the gate
policy it will apply (:func:`build_policy`) and the runtimes it makes artifacts for
(:func:`build_runtimes`), so a mistake fails in a second, not after an hour.

    runtimes, note = build_runtimes(cfg)   # -> ("onnxruntime", "executorch"), None
    policy = build_policy(cfg)             # the [gate] section + the device profile's budgets
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import artifacts
from .config import BuildConfig
from .device_profiles import build_runtimes as wanted_runtimes
from .device_profiles import deploy_profile, device_budgets
from .distill import resolve_device
from .errors import ConfigError, InputError
from .files import check_regular
from .models import build_model, count_params

MODEL_IDS = tuple(a.id for a in artifacts.build_models())  # a build's models with the default runtimes
MEMORY_MEASURED = tuple(a.id for a in artifacts.memory_models())  # models[id]["memory"], by bench.memory_of


def build_runtimes(cfg: BuildConfig) -> tuple[tuple[str, ...], str | None]:
    """The runtimes a build makes artifacts for (``export.runtimes`` and the device profile's),
    and, when ExecuTorch is asked for but not installed, the one line saying it is skipped and how
    to get it (None otherwise)."""
    runtimes = wanted_runtimes(cfg)
    if "executorch" in runtimes:
        from .executorch_export import INSTALL, available

        if not available():
            files = ", ".join(a.file for a in artifacts.runtime_files("executorch"))
            return (tuple(r for r in runtimes if r != "executorch"),
                    f"executorch: skipped {files} (the executorch extra is not installed: {INSTALL})")
    return runtimes, None


def preflight(cfg: BuildConfig) -> None:
    """Check names, files and shapes the stages will need, so a mistake fails in a second, not after
    training: architectures and their options (and that they run at data.image_size), the
    compression ratio, the loss, the teacher's file, the data's files, the device."""
    from .candidates import check_candidates
    from .losses import loss_names, loss_spec
    from .teachers import detect_format

    spec = loss_spec(cfg.distill.loss)  # ConfigError naming the methods if unknown
    check_candidates(cfg, deploy_profile(cfg))
    for key, value in (("data.path", cfg.data.path), ("data.test_path", cfg.data.test_path)):
        if value and cfg.data.name in ("imagefolder", "npz") and not Path(value).exists():
            raise InputError(f"{key} = {value!r}: no such file or folder")
    t_fmt = None
    if cfg.teacher.weights:
        check_regular(cfg.teacher.weights, "teacher.weights")
        t_fmt = detect_format(Path(cfg.teacher.weights)) if cfg.teacher.format == "auto" else cfg.teacher.format
    resolve_device(cfg.compute.device)
    n_cls, size = 10, cfg.data.image_size  # only the shape matters here
    checks = [("student.arch", cfg.student.arch, dict(width=cfg.student.width, stem=cfg.student.stem))]
    if t_fmt in (None, "state_dict"):  # a TorchScript / exported teacher has no arch to check
        checks.insert(0, ("teacher.arch", cfg.teacher.arch, dict(stem=cfg.teacher.stem)))
    params, nets = {}, {}
    for key, arch, opts in checks:
        try:
            net = build_model(arch, n_cls, image_size=size, **opts).eval()
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
        params[key], nets[key] = count_params(net), net
        try:
            with torch.no_grad():
                net(torch.zeros(2, 3, size, size))
        except RuntimeError as e:
            raise ConfigError(f"{key} = {arch!r} cannot run on {size}x{size} images "
                              f"(data.image_size): {str(e).splitlines()[0]}") from None
    if "teacher.arch" in params:
        check_compression(cfg, params["teacher.arch"], params["student.arch"])
    if spec.feature_layers and t_fmt in ("torchscript", "export"):
        logit_methods = ", ".join(loss_names(uses_teacher=True, feature_layers=False))
        raise ConfigError(f"distill.loss = {cfg.distill.loss!r} matches the teacher's feature maps, "
                          f"which a {t_fmt} teacher cannot give (no forward hooks); use a state_dict "
                          f"teacher or a logit method ({logit_methods})")
    if spec.feature_layers and cfg.distill.feature_layers:
        from .losses import check_layer_names

        check_layer_names(nets["student.arch"], nets.get("teacher.arch"), cfg.distill.feature_layers)


def check_compression(cfg: BuildConfig, teacher_params: int, student_params: int) -> None:
    if teacher_params < cfg.student.min_compression * student_params:
        raise ConfigError(f"student.arch {cfg.student.arch!r} has {student_params} parameters, "
                          f"teacher {teacher_params}: less than student.min_compression = "
                          f"{cfg.student.min_compression:g}x fewer")


def build_policy(cfg: BuildConfig):
    """The gate policy of a build: the config's [gate] section; with the perturbed sweep switched
    off, the robustness checks it cannot feed are switched off too (unless the section sets them)."""
    from .gate import load_policy
    from .perturb import COMMON, resolve

    raw = dict(cfg.gate)
    rc = cfg.robustness
    full_sweep = set(COMMON) <= set(resolve(rc.perturbations)) and sorted(set(rc.severities)) == [1, 2, 3, 4, 5]
    if not rc.enabled or not full_sweep:  # no mCA over the 15 x 5 cells to gate on
        for key in ("max_mca_drop", "max_corruption_drop"):
            raw.setdefault(key, False)
    if not rc.enabled or not rc.adversarial:
        raw.setdefault("max_adversarial_drop", False)
    runtimes, note = build_runtimes(cfg)
    if "models" not in raw and "executorch" in runtimes:  # every runtime's INT8 model is gated
        raw["models"] = artifacts.gated_int8(runtimes)
    profile = deploy_profile(cfg)
    if profile is not None:
        raw = device_budgets(raw, profile, runtimes)
    policy = load_policy(raw, "config [gate]")
    # what the build will not measure must not be gated: say so now, not after the build
    if policy.max_adversarial_drop is not None and policy.adversarial_epsilon not in rc.epsilons:
        raise ConfigError(f"gate.adversarial_epsilon = {policy.adversarial_epsilon} is not among "
                          f"robustness.epsilons {rc.epsilons}; set one of those, or "
                          "gate.max_adversarial_drop = false")
    ids = tuple(a.id for a in artifacts.build_models(runtimes))
    memory = tuple(a.id for a in artifacts.memory_models(runtimes))
    why = f" (runtimes {', '.join(runtimes)}{'; ' + note if note else ''})"
    unknown = [m for m in policy.models if m not in ids]
    if unknown:
        raise ConfigError(f"gate.models names {', '.join(unknown)}; a build has {', '.join(ids)}{why}")
    for mid, budget in policy.budgets.items():
        if mid not in ids:
            raise ConfigError(f"gate.budgets.{mid}: a build has no model {mid!r}; valid: {', '.join(ids)}{why}")
        if budget.max_peak_memory_bytes is not None and mid not in memory:
            raise ConfigError(f"gate.budgets.{mid}.max_peak_memory_bytes: edgekd build measures peak "
                              f"memory of the model files only ({', '.join(memory)})")
    return policy
