"""The build configuration's rules across keys and sections (:func:`cross_checks`), applied by
:func:`edgekd.config.from_dict` once every key is valid on its own."""

from __future__ import annotations

import re

from .errors import ConfigError

SHIFT_SET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")  # a prediction key / report key part


def cross_checks(cfg, where: str) -> None:
    """The rules that span keys or sections of a :class:`edgekd.config.BuildConfig` (``cfg``), checked
    after every key is valid on its own; a broken one is a ConfigError naming ``where``."""
    from . import perturb  # the registry of perturbation names
    from .losses import loss_spec  # the flags of each distillation method

    try:
        perturb.resolve(cfg.robustness.perturbations)
    except ConfigError as e:
        raise ConfigError(f"{where}: robustness.perturbations: {e}") from None

    names = perturb.resolve(cfg.distill.augment) if cfg.distill.augment else []
    overlap = [n for n in names if n in perturb.COMMON]
    if overlap and not cfg.distill.allow_eval_corruptions:
        raise ConfigError(f"{where}: distill.augment names evaluated common corruptions "
                          f"({', '.join(overlap)}), which would inflate the robustness figures; use "
                          "the extras, noise, occlusion or dropout, or set "
                          "distill.allow_eval_corruptions = true")
    d = cfg.distill
    spec = loss_spec(d.loss)
    if spec.feature_layers and d.epochs and not d.feature_layers:
        raise ConfigError(f"{where}: distill.loss = {d.loss!r} needs distill.feature_layers, pairs "
                          "'student_module:teacher_module' (e.g. [\"6:6\", \"10:10\"] for the digits "
                          "models)")
    bad = [p for p in d.feature_layers if p.count(":") != 1 or "" in [s.strip() for s in p.split(":")]]
    if bad:
        raise ConfigError(f"{where}: distill.feature_layers entry {bad[0]!r} must look like "
                          "'student_module:teacher_module'")
    if d.select == "perturbed" and not d.augment:
        raise ConfigError(f"{where}: distill.select = 'perturbed' scores epochs on validation images "
                          "perturbed with distill.augment, which is empty; use 'clean' or 'last'")
    if spec.needs_views and not d.augment:
        raise ConfigError(f"{where}: distill.loss = {d.loss!r} makes its augmented views from "
                          "distill.augment, which is empty")
    t = cfg.teacher
    if len(t.mean) != len(t.std) or len(t.mean) not in (0, 3) or any(v <= 0 for v in t.std):
        raise ConfigError(f"{where}: teacher.mean and teacher.std must both be [] or both hold 3 "
                          f"values (std > 0); got {t.mean} and {t.std}")
    bad = [s for s in cfg.robustness.severities if s not in range(1, 6)]
    if bad:
        raise ConfigError(f"{where}: robustness.severities must lie in 1..5, got {bad}")
    try:
        perturb.resolve(cfg.quantize.tune_perturbations)
    except ConfigError as e:
        raise ConfigError(f"{where}: quantize.tune_perturbations: {e}") from None
    bad = [s for s in cfg.quantize.tune_severities if s not in range(1, 6)]
    if bad or not cfg.quantize.tune_severities:
        raise ConfigError(f"{where}: quantize.tune_severities must be severities in 1..5, got "
                          f"{cfg.quantize.tune_severities}")
    bad = [e for e in cfg.robustness.epsilons if not 0 < e <= 64]
    if bad:
        raise ConfigError(f"{where}: robustness.epsilons must lie in 1..64 (/255), got {bad}")
    bad = [n for n in cfg.robustness.shift_sets if not SHIFT_SET_NAME.fullmatch(n)]
    if bad:
        raise ConfigError(f"{where}: robustness.shift_sets name {bad[0]!r} must start with a letter and "
                          "hold at most 40 letters, digits, '_' or '-'")
    empty = [n for n, p in cfg.robustness.shift_sets.items() if not p]
    if empty:
        raise ConfigError(f"{where}: robustness.shift_sets.{empty[0]} needs the path of a folder, an "
                          "archive or an .npz file")
