"""The gate's checks of a build's models against the teacher (and an older build), and
:func:`evaluate_gate`, which runs every check of a policy.

Every check compares a gated model with its reference **on the same test images**, from the
per-image predictions in ``predictions.npz`` (paired statistics: :mod:`edgekd.gate.stats`). Point
estimates are recomputed from the predictions and must equal the figures in report.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import artifacts
from .. import predictions as P
from ..errors import InputError
from ..perturb_registry import COMMON
from .budget_checks import build_budget_checks, device_run_checks
from .inputs import Build, load_build
from .policy import Policy
from .result import Check, GateResult, decide
from .stats import (
    EPS,
    holm_adjust,
    one_sided_pvalue,
    paired_bootstrap,
    paired_difference,
    two_sample_interval,
    wilson_interval,
)

# The 15 common corruptions (mCA: their mean accuracy over severities 1..5), from the registry's
# dependency-free list: the gate reads reports without importing the perturbation code.
COMMON_CORRUPTIONS = COMMON
SEVERITIES = (1, 2, 3, 4, 5)
TEACHER = artifacts.TEACHER


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _paired_drop_check(art: Build, ref: str, model: str, key: str, policy: Policy, *, cid: str,
                       name: str, metric: str, threshold: float, extra: str = "",
                       ref_art: Build | None = None, ref_label: str | None = None) -> Check:
    ref_correct = (ref_art or art).correct(ref, key, cid)
    ref_label = ref_label or ref
    pd = paired_difference(ref_correct, art.correct(model, key, cid), policy.confidence)
    drop, interval = -pd.delta, (-pd.hi, -pd.lo)
    passed = decide(drop, interval, threshold, "<=", policy.mode)
    detail = (f"{ref_label} {_pct(ref_correct.mean())} -> {model} {_pct(ref_correct.mean() - drop)} on "
              f"{pd.n} paired images (b={pd.b} only {ref_label} right, c={pd.c} only {model} right; "
              f"McNemar exact p={pd.p_mcnemar:.3g}){extra}")
    return Check(cid, name, model, metric, drop, interval, threshold, "<=", passed, detail,
                 p_value=pd.p_mcnemar)


def _clean_checks(art: Build, model: str, policy: Policy) -> list[Check]:
    out = []
    hint = "the report is incomplete; rebuild it with edgekd build"
    if policy.max_clean_drop is not None or policy.min_agreement is not None:
        needed_by = "max_clean_drop" if policy.max_clean_drop is not None else "min_agreement"
        for m in (TEACHER, model):
            art.agree(m, "accuracy.clean", art.metric(m, "accuracy.clean", needed_by, hint),
                      float(art.correct(m, "clean", needed_by).mean()))
    if policy.max_clean_drop is not None:
        out.append(_paired_drop_check(art, TEACHER, model, "clean", policy,
                                      cid=f"{model}.clean_drop", name="clean accuracy drop vs teacher",
                                      metric="accuracy.clean", threshold=policy.max_clean_drop))
    if policy.min_agreement is not None:
        cid = f"{model}.agreement"
        reported = art.metric(model, "agreement_with_teacher.clean", "min_agreement", hint)
        t = np.asarray(art.preds[P.clean(TEACHER)]).ravel()
        s = np.asarray(art.preds[P.clean(model)]).ravel()
        k = int(np.sum(t == s))
        art.agree(model, "agreement_with_teacher.clean", reported, k / art.n)
        interval = wilson_interval(k, art.n, policy.confidence)
        value = k / art.n
        out.append(Check(cid, "clean agreement with teacher", model, "agreement_with_teacher.clean",
                         value, interval, policy.min_agreement, ">=",
                         decide(value, interval, policy.min_agreement, ">=", policy.mode),
                         f"same class as the teacher on {k} of {art.n} clean images (Wilson interval)",
                         unit="rate"))
    return out


def _cells(art: Build, model: str, needed_by: str, hint: str) -> dict[str, list]:
    table = art.metric(model, "accuracy.corruptions", needed_by, hint)
    present = {c: table[c] for c in COMMON_CORRUPTIONS if isinstance(table.get(c), list)}
    if not present:
        raise InputError(f"{art.label}: model {model} has no accuracy.corruptions for any of the 15 "
                         f"common corruptions, which {needed_by} needs; {hint}")
    return present


def _per_image_corruption_drops(art: Build, ref: str, model: str, needed_by: str, hint: str,
                                ref_art: Build | None = None) -> tuple[list[str], np.ndarray, int]:
    """Columns: per-image mCA drop, then each common corruption's drop (mean over its severities).

    Drop = reference correct − model correct, averaged over the cells both reports have.
    Returns (corruption names, (n, 1 + k) matrix, number of cells)."""
    ref_art = ref_art or art
    ref_cells = _cells(ref_art, ref, needed_by, hint)
    cells = _cells(art, model, needed_by, hint)
    names, cols, total, n_cells = [], [], np.zeros(art.n_sweep), 0
    for c in COMMON_CORRUPTIONS:
        if c not in cells or c not in ref_cells:
            continue
        col, k = np.zeros(art.n_sweep), 0
        for s in SEVERITIES:
            a_ref, a_mod = ref_cells[c][s - 1], cells[c][s - 1]
            if a_ref is None or a_mod is None:
                continue
            key = f"{c}/{s}"
            r = ref_art.correct(ref, key, needed_by)
            m = art.correct(model, key, needed_by)
            ref_art.agree(ref, f"accuracy.corruptions.{c} severity {s}", a_ref, float(r.mean()))
            art.agree(model, f"accuracy.corruptions.{c} severity {s}", a_mod, float(m.mean()))
            d = r.astype(float) - m
            col += d
            total += d
            k += 1
        if k:
            names.append(c)
            cols.append(col / k)
            n_cells += k
    if not names:
        raise InputError(f"{art.label}: {ref} and {model} share no corruption cells, which "
                         f"{needed_by} needs; {hint}")
    return names, np.column_stack([total / n_cells] + cols), n_cells


def _check_mca_agrees(art: Build, model: str, needed_by: str, hint: str) -> float:
    reported = art.metric(model, "accuracy.mca", needed_by, hint)
    cells = _cells(art, model, needed_by, hint)
    accs = [float(art.correct(model, f"{c}/{s}", needed_by).mean())
            for c, v in cells.items() for s in SEVERITIES if v[s - 1] is not None]
    art.agree(model, "accuracy.mca", reported, float(np.mean(accs)))
    return float(reported)


def _robustness_checks(art: Build, model: str, policy: Policy) -> list[Check]:
    want_mca = policy.max_mca_drop is not None
    want_worst = policy.max_corruption_drop is not None
    if not (want_mca or want_worst):
        return []
    needed_by = "max_mca_drop" if want_mca else "max_corruption_drop"
    hint = (f"set {needed_by} = false or rebuild with robustness.enabled = true and the 15 common "
            "corruptions")
    if want_mca:
        for m in (TEACHER, model):
            _check_mca_agrees(art, m, needed_by, hint)
    names, per_image, n_cells = _per_image_corruption_drops(art, TEACHER, model, needed_by, hint)
    boot = paired_bootstrap(per_image, policy.bootstrap_samples, policy.confidence, policy.seed)
    out = []
    boot_note = f"paired bootstrap, {policy.bootstrap_samples} resamples of {art.n_sweep} images"
    if want_mca:
        t_mca = art.models[TEACHER]["accuracy"]["mca"]
        drop = float(boot.point[0])
        iv = (float(boot.lo[0]), float(boot.hi[0]))
        out.append(Check(f"{model}.mca_drop", "mCA drop vs teacher", model, "accuracy.mca", drop, iv,
                         policy.max_mca_drop, "<=",
                         decide(drop, iv, policy.max_mca_drop, "<=", policy.mode),
                         f"teacher {_pct(t_mca)} -> {model} {_pct(t_mca - drop)} over {n_cells} "
                         f"corruption x severity cells ({boot_note})"))
    if want_worst:
        thr = policy.max_corruption_drop
        j = int(np.argmax(boot.point[1:])) + 1
        worst = names[j - 1]
        drop = float(boot.point[j])
        iv = (float(boot.lo[j]), float(boot.hi[j]))
        out.append(Check(f"{model}.worst_corruption_drop", "worst-corruption drop vs teacher", model,
                         f"accuracy.corruptions.{worst}", drop, iv, thr, "<=",
                         decide(drop, iv, thr, "<=", policy.mode),
                         f"worst of {len(names)} common corruptions: {worst} (mean over severities; "
                         f"{boot_note}; interval not corrected for picking the worst, "
                         "see per_corruption)"))
        if policy.per_corruption:
            alpha = (1 - policy.confidence) / 2  # one-sided; equals the interval rule when m = 1
            pvals = [one_sided_pvalue(per_image[:, i + 1], thr) for i in range(len(names))]
            adjusted = holm_adjust(pvals)
            for i, c in enumerate(names):
                drop = float(boot.point[i + 1])
                iv = (float(boot.lo[i + 1]), float(boot.hi[i + 1]))
                passed = (drop <= thr + EPS) if policy.mode == "strict" else adjusted[i] >= alpha
                out.append(Check(f"{model}.corruption_drop.{c}", f"{c} drop vs teacher", model,
                                 f"accuracy.corruptions.{c}", drop, iv, thr, "<=", passed,
                                 f"one-sided p={pvals[i]:.3g} of a drop beyond {thr:g}, Holm-adjusted "
                                 f"over {len(names)} corruptions p={adjusted[i]:.3g} (fails below "
                                 f"{alpha:g} in confident mode)", p_value=float(adjusted[i])))
    return out


def _shift_checks(art: Build, model: str, policy: Policy) -> list[Check]:
    """``max_shift_drop`` on each shift set of the build (report.json ``shift_sets``), paired image
    by image like the clean check; with several sets, confident mode fails a set only when its
    Holm-adjusted one-sided p of a drop beyond the threshold is below alpha (the interval rule for
    one set)."""
    sets = art.report.get("shift_sets") or {}
    if policy.max_shift_drop is None or not sets:
        return []
    thr, hint = policy.max_shift_drop, "the report is incomplete; rebuild it with edgekd build"
    out, pvals = [], []
    for name, info in sets.items():
        key, path = P.shift_set(name), f"accuracy.shift.{name}"
        n = len(art.shift_labels(name, "max_shift_drop"))
        if isinstance(info, dict) and info.get("n_images") not in (None, n):
            raise InputError(f"{art.pred_label} holds {n} labels of shift set {name!r} but {art.label} "
                             f"says {info['n_images']}; they come from different builds")
        for m in (TEACHER, model):
            art.agree(m, path, art.metric(m, path, "max_shift_drop", hint),
                      float(art.correct(m, key, "max_shift_drop").mean()), n)
        out.append(_paired_drop_check(art, TEACHER, model, key, policy, cid=f"{model}.shift_drop.{name}",
                                      name=f"shift set {name}: accuracy drop vs teacher", metric=path,
                                      threshold=thr))
        d = art.correct(TEACHER, key, "max_shift_drop").astype(float) - art.correct(model, key, "max_shift_drop")
        pvals.append(one_sided_pvalue(d, thr))
    if len(out) > 1 and policy.mode == "confident":
        alpha = (1 - policy.confidence) / 2
        adjusted = holm_adjust(pvals)
        out = [replace(c, passed=bool(adjusted[i] >= alpha), p_value=float(adjusted[i]),
                       detail=c.detail + f"; one-sided p={pvals[i]:.3g} of a drop beyond {thr:g}, "
                       f"Holm-adjusted over {len(out)} sets p={adjusted[i]:.3g} (fails below {alpha:g})")
               for i, c in enumerate(out)]
    return out


def _adversarial_check(art: Build, model: str, policy: Policy) -> list[Check]:
    if policy.max_adversarial_drop is None:
        return []
    attack, eps = policy.adversarial_attack, str(policy.adversarial_epsilon)
    path = f"accuracy.adversarial.{attack}.{eps}"
    hint = ("set max_adversarial_drop = false, or choose an attack / epsilon the build ran "
            "(robustness.adversarial, robustness.epsilons)")
    key = f"adv/{attack}/{eps}"
    for m in (TEACHER, model):
        reported = art.metric(m, path, "max_adversarial_drop", hint)
        art.agree(m, path, reported, float(art.correct(m, key, "max_adversarial_drop").mean()))
    sources = {m: art.models[m].get("adversarial_source", "unknown") for m in (TEACHER, model)}
    return [_paired_drop_check(art, TEACHER, model, key, policy, cid=f"{model}.adversarial_drop",
                               name=f"{attack} eps {eps}/255 accuracy drop vs teacher", metric=path,
                               threshold=policy.max_adversarial_drop,
                               extra=f"; examples: teacher {sources[TEACHER]}, {model} {sources[model]}")]


def _baseline_checks(art: Build, old: Build, model: str, policy: Policy) -> list[Check]:
    if model not in old.models:
        raise InputError(f"baseline {old.label} has no model {model}; models in it: "
                         f"{', '.join(old.models)}")
    sha_new = (art.report.get("dataset") or {}).get("test_sha256")
    sha_old = (old.report.get("dataset") or {}).get("test_sha256")
    same_sweep = ((old.sweep_index is None and art.sweep_index is None) or
                  (old.sweep_index is not None and art.sweep_index is not None
                   and np.array_equal(old.sweep_index, art.sweep_index)))
    paired = (old.labels is not None and np.array_equal(old.labels, art.labels) and same_sweep
              and (sha_new is None or sha_old is None or sha_new == sha_old))
    how = ("paired on the same test images" if paired else
           "unpaired two-sample interval (the baseline has no predictions.npz or other test images)")
    out = []
    if policy.baseline_max_clean_drop is not None:
        cid, thr = f"{model}.baseline_clean_drop", policy.baseline_max_clean_drop
        hint = "set baseline_max_clean_drop = false or rebuild the baseline report"
        old_acc = float(old.metric(model, "accuracy.clean", "baseline_max_clean_drop", hint))
        new_acc = float(art.correct(model, "clean", cid).mean())
        if paired:
            old.agree(model, "accuracy.clean", old_acc, float(old.correct(model, "clean", cid).mean()))
            out.append(_paired_drop_check(art, model, model, "clean", policy, cid=cid,
                                          name="clean accuracy drop vs baseline", metric="accuracy.clean",
                                          threshold=thr, ref_art=old, ref_label="baseline",
                                          extra=f"; baseline {old.label}"))
        else:
            d, lo, hi = two_sample_interval(old_acc, old.n, new_acc, art.n, policy.confidence)
            out.append(Check(cid, "clean accuracy drop vs baseline", model, "accuracy.clean", d, (lo, hi),
                             thr, "<=", decide(d, (lo, hi), thr, "<=", policy.mode),
                             f"baseline {_pct(old_acc)} -> {_pct(new_acc)}; {how}; baseline {old.label}"))
    if policy.baseline_max_mca_drop is not None:
        cid, thr = f"{model}.baseline_mca_drop", policy.baseline_max_mca_drop
        hint = "set baseline_max_mca_drop = false or rebuild with robustness.enabled = true"
        old_mca = float(old.metric(model, "accuracy.mca", "baseline_max_mca_drop", hint))
        new_mca = _check_mca_agrees(art, model, "baseline_max_mca_drop", hint)
        if paired:
            _check_mca_agrees(old, model, "baseline_max_mca_drop", hint)
            _, per_image, n_cells = _per_image_corruption_drops(art, model, model, "baseline_max_mca_drop",
                                                                hint, ref_art=old)
            boot = paired_bootstrap(per_image[:, 0], policy.bootstrap_samples, policy.confidence,
                                    policy.seed)
            d, lo, hi = float(boot.point[0]), float(boot.lo[0]), float(boot.hi[0])
            detail = f"over {n_cells} cells, paired bootstrap of {art.n_sweep} images"
        else:
            d, lo, hi = two_sample_interval(old_mca, old.n_sweep, new_mca, art.n_sweep, policy.confidence)
            detail = how
        out.append(Check(cid, "mCA drop vs baseline", model, "accuracy.mca", d, (lo, hi), thr, "<=",
                         decide(d, (lo, hi), thr, "<=", policy.mode),
                         f"baseline {_pct(old_mca)} -> {_pct(new_mca)} ({detail}); baseline {old.label}"))
    return out


def evaluate_gate(report: str | Path | Mapping, policy: Policy | None = None,
                  baseline: str | Path | Mapping | None = None, *,
                  predictions: str | Path | Mapping | None = None,
                  devices: list | None = None) -> GateResult:
    """Run every check of ``policy`` on a build; no printing, no files written.

    ``report``: an artifact directory, a report.json path, or the report dict itself (then give
    ``predictions``: the arrays of predictions.npz as a mapping, or its path). ``baseline``: an old
    artifact directory or report.json whose same model ids must not have regressed. The report's
    ``device_runs`` are checked against their profiles' budgets, or against ``devices`` (a list of
    ``DeviceProfile``) where given (:func:`device_run_checks`).
    Raises :class:`InputError` (exit 2) when an input or a metric the policy needs is missing.

    Example: ``evaluate_gate("edgekd-out", load_policy({})).verdict`` -> "pass".
    """
    policy = policy or Policy()
    art = load_build(report, predictions)
    old = load_build(baseline, need_predictions=False) if baseline is not None else None
    ids = list(art.models)
    if TEACHER not in art.models:
        raise InputError(f"{art.label}: no teacher model to compare with; models in it: {', '.join(ids)}")
    for m, role in [(m, "gated model") for m in policy.models] + [(m, "budget model") for m in policy.budgets]:
        if m not in art.models:
            raise InputError(f"{art.label}: {role} {m!r} is not in the report; models in it: "
                             f"{', '.join(ids)}")
    checks: list[Check] = []
    for model in dict.fromkeys(list(policy.models) + list(policy.budgets)):
        if model in policy.models:
            checks += _clean_checks(art, model, policy)
            checks += _robustness_checks(art, model, policy)
            checks += _adversarial_check(art, model, policy)
            checks += _shift_checks(art, model, policy)
        if model in policy.budgets:
            checks += build_budget_checks(art, model, policy.budgets[model])
        if old is not None and model in policy.models:
            checks += _baseline_checks(art, old, model, policy)
    checks += device_run_checks(art.report, art.label, devices)
    return GateResult(checks, art.label, policy.mode, policy.confidence, policy.to_dict(),
                      old.label if old is not None else None)
