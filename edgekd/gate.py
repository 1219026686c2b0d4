"""The gate: policy -> checks -> verdict, for CI. Pure functions; the command prints and writes.

Usage::

    policy = load_policy(cfg.gate, where="edgekd.toml [gate]")     # or load_policy_file("gate.toml")
    result = evaluate_gate("edgekd-out", policy)                    # artifact dir or report.json
    print(format_table(result)); write_gate_json(result, "edgekd-out/gate.json")
    raise SystemExit(result.exit_code)                              # 0 pass, 1 fail

Every check compares a gated model with the teacher **on the same test images**, from the
per-image predictions in ``predictions.npz`` (paired statistics, much tighter than comparing two
accuracies; see ROBUSTNESS.md, "Statistics for a gate that does not flap"). Point estimates are
recomputed from the predictions and must equal the figures in report.json.

Modes: ``strict`` compares the point estimate with the threshold; ``confident`` fails a check only
when its whole two-sided ``confidence`` interval lies beyond the threshold (evidence that the
student is worse than allowed), so a borderline student does not flip the verdict between builds.
docs/gate.md documents every key, default and formula.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .errors import InputError
from .files import check_regular, load_error_reason, read_json, write_atomic

# The policy and the statistics live in their own modules; their public names are re-exported here
# so `edgekd.gate` stays the one import for users of the gate.
from .gate_policy import (  # noqa: F401
    BUDGET_KEYS,
    POLICY_KEYS,
    Budget,
    Policy,
    _is_number,
    load_policy,
    load_policy_file,
    merge_overrides,
    read_policy_table,
)
from .stats import (  # noqa: F401
    _EPS,
    Bootstrap,
    PairedDifference,
    holm_adjust,
    mcnemar_exact_p,
    one_sided_pvalue,
    paired_bootstrap,
    paired_difference,
    paired_difference_from_counts,
    two_sample_interval,
    wilson_interval,
    z_value,
)

# The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019), in the benchmark's order; mCA
# is their mean accuracy over severities 1..5. Kept here so the gate reads reports without
# importing the perturbation code.
COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
TEACHER = artifacts.TEACHER


# ============================================================================================
# Inputs: report.json + predictions.npz
# ============================================================================================

class _Artifact:
    """One build's report and per-image predictions, with errors that name file, model and metric."""

    def __init__(self, report: Any, label: str, predictions: Mapping | None, pred_label: str) -> None:
        if not isinstance(report, dict) or not isinstance(report.get("models"), dict):
            raise InputError(f"{label}: not an edgekd report (no 'models' table)")
        version = report.get("schema_version", 1)
        if version != 1:
            raise InputError(f"{label}: report schema_version {version!r}; this edgekd reads version 1")
        self.report, self.label, self.preds, self.pred_label = report, label, predictions, pred_label
        self.models: dict = report["models"]
        self.labels: np.ndarray | None = None
        self.sweep_index: np.ndarray | None = None
        if predictions is not None:
            if "labels" not in predictions:
                raise InputError(f"{pred_label}: no 'labels' array")
            self.labels = np.asarray(predictions["labels"]).astype(np.int64).ravel()
            # a sweep on a subset of the test images (robustness.max_images) says which
            self.sweep_index = (np.asarray(predictions["sweep_index"]).astype(np.int64).ravel()
                                if "sweep_index" in predictions else None)
        n_test = (report.get("dataset") or {}).get("n_test")
        if self.labels is not None:
            if n_test is not None and n_test != len(self.labels):
                raise InputError(f"{pred_label} holds {len(self.labels)} labels but {label} says "
                                 f"n_test = {n_test}; they come from different builds")
            self.n = len(self.labels)
        elif isinstance(n_test, int) and n_test > 0:
            self.n = n_test
        else:
            raise InputError(f"{label}: no dataset.n_test")
        self._correct: dict[str, np.ndarray] = {}

    @property
    def n_sweep(self) -> int:
        """Images of the perturbed / adversarial sweep (all test images unless it ran on a subset)."""
        return len(self.sweep_index) if self.sweep_index is not None else self.n

    def metric(self, model: str, path: str, needed_by: str, hint: str) -> Any:
        node: Any = self.models[model]
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise InputError(f"{self.label}: model {model} has no {path}, which {needed_by} needs; {hint}")
        return node

    def correct(self, model: str, key: str, needed_by: str) -> np.ndarray:
        """Boolean per-image correctness of ``predictions.npz["{model}/{key}"]``."""
        name = f"{model}/{key}"
        if name not in self._correct:
            if self.preds is None or name not in self.preds:
                raise InputError(f"{self.pred_label} has no array {name!r}, which {needed_by} needs; "
                                 "the report and predictions.npz must come from the same build")
            pred = np.asarray(self.preds[name]).ravel()
            labels = self.labels
            if key != "clean" and self.sweep_index is not None and pred.shape == self.sweep_index.shape:
                labels = self.labels[self.sweep_index]
            elif pred.shape != self.labels.shape:
                raise InputError(f"{self.pred_label}: {name!r} has {pred.size} predictions for "
                                 f"{self.labels.size} labels")
            self._correct[name] = pred.astype(np.int64) == labels
        return self._correct[name]

    def agree(self, model: str, what: str, reported: Any, computed: float) -> None:
        """Point estimates from the predictions must equal the report's figures."""
        if not _is_number(reported):
            raise InputError(f"{self.label}: model {model} {what} is {reported!r}, not a number")
        if abs(reported - computed) > 0.5 / self.n + 1e-6:
            raise InputError(f"{self.label}: model {model} {what} is {reported:.6g} but "
                             f"{Path(self.pred_label).name} gives {computed:.6g}; the report and "
                             "predictions.npz do not come from the same build")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    check_regular(path, "predictions")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"{path}: not a readable .npz file ({load_error_reason(e)})") from None


def _load_artifact(source: Any, predictions: Any = None, *, need_predictions: bool = True) -> _Artifact:
    """``source``: an artifact directory, a report.json path, or a report dict (then ``predictions``
    is a mapping of arrays or a path to predictions.npz)."""
    if isinstance(source, Mapping):
        label = "report.json"  # the in-memory report the build is about to write
        pred_path = Path(predictions) if isinstance(predictions, (str, os.PathLike)) else None
        report = dict(source)
    else:
        if not os.path.lexists(source):
            raise InputError(f"{source}: no such report file or artifact directory")
        p = check_regular(source, "report", folder_ok=True)
        report_path = p / "report.json" if p.is_dir() else p
        label = str(report_path)
        report = read_json(report_path, f"{p}: no report.json in this directory (not an edgekd "
                                        "artifact directory)")
        pred_path = report_path.parent / "predictions.npz" if predictions is None else (
            Path(predictions) if isinstance(predictions, (str, os.PathLike)) else None)
    arrays = predictions if isinstance(predictions, Mapping) else None
    if arrays is None and pred_path is not None:
        if pred_path.is_file():
            arrays = _load_npz(pred_path)
        elif need_predictions:
            raise InputError(f"{pred_path} is missing: the gate compares models image by image and "
                             "needs the predictions.npz that edgekd build writes next to report.json")
    if arrays is None and need_predictions:
        raise InputError(f"{label}: no predictions given; the gate needs per-image predictions")
    return _Artifact(report, label, arrays, str(pred_path or "predictions"))


# ============================================================================================
# Checks
# ============================================================================================

@dataclass
class Check:
    """One gate check. ``value`` and ``interval`` are in the check's ``unit``:
    ``pp`` (a drop as a fraction: 0.03 = 3 points; positive = the model is worse than the
    reference), ``rate`` (a fraction), ``bytes`` or ``ms``. ``comparison`` is ``<=`` (value must
    not exceed threshold) or ``>=`` (value must reach it)."""

    id: str
    name: str
    model: str
    metric: str
    value: float
    interval: tuple[float, float] | None
    threshold: float
    comparison: str
    passed: bool
    detail: str
    unit: str = "pp"
    p_value: float | None = None

    def __post_init__(self) -> None:  # plain Python numbers (numpy scalars do not serialise)
        self.value, self.threshold, self.passed = float(self.value), float(self.threshold), bool(self.passed)
        if self.interval is not None:
            self.interval = (float(self.interval[0]), float(self.interval[1]))
        if self.p_value is not None:
            self.p_value = float(self.p_value)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d


@dataclass
class GateResult:
    """The verdict: ``passed`` / ``verdict`` ("pass" | "fail") / ``exit_code`` (0 | 1) and every check."""

    checks: list[Check]
    report: str
    mode: str
    confidence: float
    policy: dict
    baseline: str | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"schema_version": 1, "verdict": self.verdict, "exit_code": self.exit_code,
                "report": self.report, "baseline": self.baseline, "mode": self.mode,
                "confidence": self.confidence, "n_checks": len(self.checks),
                "failed": [c.id for c in self.failed], "checks": [c.to_dict() for c in self.checks],
                "policy": self.policy}


def _decide(value: float, interval: tuple[float, float] | None, threshold: float, comparison: str,
            mode: str) -> bool:
    """strict: the point estimate; confident: fail only if the whole interval is beyond."""
    use_interval = mode == "confident" and interval is not None
    if comparison == "<=":
        return (interval[0] if use_interval else value) <= threshold + _EPS
    return (interval[1] if use_interval else value) >= threshold - _EPS


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _paired_drop_check(art: _Artifact, ref: str, model: str, key: str, policy: Policy, *, cid: str,
                       name: str, metric: str, threshold: float, extra: str = "",
                       ref_art: _Artifact | None = None, ref_label: str | None = None) -> Check:
    ref_correct = (ref_art or art).correct(ref, key, cid)
    ref_label = ref_label or ref
    pd = paired_difference(ref_correct, art.correct(model, key, cid), policy.confidence)
    drop, interval = -pd.delta, (-pd.hi, -pd.lo)
    passed = _decide(drop, interval, threshold, "<=", policy.mode)
    detail = (f"{ref_label} {_pct(ref_correct.mean())} -> {model} {_pct(ref_correct.mean() - drop)} on "
              f"{pd.n} paired images (b={pd.b} only {ref_label} right, c={pd.c} only {model} right; "
              f"McNemar exact p={pd.p_mcnemar:.3g}){extra}")
    return Check(cid, name, model, metric, drop, interval, threshold, "<=", passed, detail,
                 p_value=pd.p_mcnemar)


def _clean_checks(art: _Artifact, model: str, policy: Policy) -> list[Check]:
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
        t = np.asarray(art.preds[f"{TEACHER}/clean"]).ravel()
        s = np.asarray(art.preds[f"{model}/clean"]).ravel()
        k = int(np.sum(t == s))
        art.agree(model, "agreement_with_teacher.clean", reported, k / art.n)
        interval = wilson_interval(k, art.n, policy.confidence)
        value = k / art.n
        out.append(Check(cid, "clean agreement with teacher", model, "agreement_with_teacher.clean",
                         value, interval, policy.min_agreement, ">=",
                         _decide(value, interval, policy.min_agreement, ">=", policy.mode),
                         f"same class as the teacher on {k} of {art.n} clean images (Wilson interval)",
                         unit="rate"))
    return out


def _cells(art: _Artifact, model: str, needed_by: str, hint: str) -> dict[str, list]:
    table = art.metric(model, "accuracy.corruptions", needed_by, hint)
    present = {c: table[c] for c in COMMON_CORRUPTIONS if isinstance(table.get(c), list)}
    if not present:
        raise InputError(f"{art.label}: model {model} has no accuracy.corruptions for any of the 15 "
                         f"common corruptions, which {needed_by} needs; {hint}")
    return present


def _per_image_corruption_drops(art: _Artifact, ref: str, model: str, needed_by: str, hint: str,
                                ref_art: _Artifact | None = None) -> tuple[list[str], np.ndarray, int]:
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


def _check_mca_agrees(art: _Artifact, model: str, needed_by: str, hint: str) -> float:
    reported = art.metric(model, "accuracy.mca", needed_by, hint)
    cells = _cells(art, model, needed_by, hint)
    accs = [float(art.correct(model, f"{c}/{s}", needed_by).mean())
            for c, v in cells.items() for s in SEVERITIES if v[s - 1] is not None]
    art.agree(model, "accuracy.mca", reported, float(np.mean(accs)))
    return float(reported)


def _robustness_checks(art: _Artifact, model: str, policy: Policy) -> list[Check]:
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
                         _decide(drop, iv, policy.max_mca_drop, "<=", policy.mode),
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
                         _decide(drop, iv, thr, "<=", policy.mode),
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
                passed = (drop <= thr + _EPS) if policy.mode == "strict" else adjusted[i] >= alpha
                out.append(Check(f"{model}.corruption_drop.{c}", f"{c} drop vs teacher", model,
                                 f"accuracy.corruptions.{c}", drop, iv, thr, "<=", passed,
                                 f"one-sided p={pvals[i]:.3g} of a drop beyond {thr:g}, Holm-adjusted "
                                 f"over {len(names)} corruptions p={adjusted[i]:.3g} (fails below "
                                 f"{alpha:g} in confident mode)", p_value=float(adjusted[i])))
    return out


def _adversarial_check(art: _Artifact, model: str, policy: Policy) -> list[Check]:
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


_BUDGET_METRICS = {  # budget key -> (report path, unit, name); max_* are ceilings, min_* floors
    "max_size_bytes": ("size_bytes", "bytes", "file size"),
    "max_latency_p90_ms": ("latency_ms.p90", "ms", "latency p90 at batch 1"),
    "max_peak_memory_bytes": ("memory.peak_rss_bytes", "bytes", "peak memory (RSS)"),
    "min_accuracy": ("accuracy.clean", "rate", "clean accuracy (absolute floor)"),
}


def _budget_checks(art: _Artifact, model: str, budget: Budget) -> list[Check]:
    out = []
    for key, (path, unit, name) in _BUDGET_METRICS.items():
        limit = getattr(budget, key)
        if limit is None:
            continue
        hint = ("remove that budget or rebuild with memory measurement" if key == "max_peak_memory_bytes"
                else "remove that budget or rebuild the report")
        value = art.metric(model, path, f"the budget {key}", hint)
        if not _is_number(value):
            raise InputError(f"{art.label}: model {model} {path} is {value!r}, not a number")
        floor = key.startswith("min_")
        out.append(Check(f"{model}.{key.removeprefix('max_')}", name, model, path, float(value), None,
                         float(limit), ">=" if floor else "<=", value >= limit if floor else value <= limit,
                         f"measured {path} = {value:g}, budget {key} = {limit:g}", unit=unit))
    return out


def _baseline_checks(art: _Artifact, old: _Artifact, model: str, policy: Policy) -> list[Check]:
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
                             thr, "<=", _decide(d, (lo, hi), thr, "<=", policy.mode),
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
                         _decide(d, (lo, hi), thr, "<=", policy.mode),
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
    ``DeviceProfile``) where given (edgekd.device_results.device_run_checks).
    Raises :class:`InputError` (exit 2) when an input or a metric the policy needs is missing.

    Example: ``evaluate_gate("edgekd-out", load_policy({})).verdict`` -> "pass".
    """
    policy = policy or Policy()
    art = _load_artifact(report, predictions)
    old = _load_artifact(baseline, need_predictions=False) if baseline is not None else None
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
        if model in policy.budgets:
            checks += _budget_checks(art, model, policy.budgets[model])
        if old is not None and model in policy.models:
            checks += _baseline_checks(art, old, model, policy)
    from .device_results import device_run_checks

    checks += device_run_checks(art.report, art.label, devices)
    return GateResult(checks, art.label, policy.mode, policy.confidence, policy.to_dict(),
                      old.label if old is not None else None)


# ============================================================================================
# Output
# ============================================================================================

def _fmt(unit: str, v: float) -> str:
    if unit == "pp":
        return f"{100 * v:+.2f} pp"
    if unit == "rate":
        return f"{100 * v:.2f}%"
    if unit == "ms":
        return f"{v:.3f} ms"
    return f"{v:,.0f} B"


def _rows(result: GateResult) -> list[list[str]]:
    level = f"{100 * result.confidence:g}% interval"
    rows = [["check", "value", level, "threshold", "result"]]
    for c in result.checks:
        iv = f"[{_fmt(c.unit, c.interval[0])}, {_fmt(c.unit, c.interval[1])}]" if c.interval else "-"
        rows.append([c.id, _fmt(c.unit, c.value), iv, f"{c.comparison} {_fmt(c.unit, c.threshold)}",
                     "PASS" if c.passed else "FAIL"])
    return rows


def verdict_line(result: GateResult) -> str:
    if result.passed:
        return f"gate: PASS ({len(result.checks)} checks, mode {result.mode})"
    return (f"gate: FAIL ({len(result.failed)} of {len(result.checks)} checks failed, mode "
            f"{result.mode}: {', '.join(c.id for c in result.failed)})")


def format_table(result: GateResult) -> str:
    """Every check (value, interval, threshold, PASS/FAIL), the failing checks' details, the verdict."""
    rows = _rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"gate on {result.report} (mode {result.mode}"
             + (f", baseline {result.baseline}" if result.baseline else "") + ")"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for c in result.failed:
        lines.append(f"FAIL {c.id}: {c.name} {_fmt(c.unit, c.value)} vs {c.comparison} "
                     f"{_fmt(c.unit, c.threshold)}; {c.detail}")
    lines.append(verdict_line(result))
    return "\n".join(lines)


def markdown_summary(result: GateResult) -> str:
    """A GitHub-flavoured markdown block (for ``$GITHUB_STEP_SUMMARY``); text only."""
    rows = _rows(result)
    out = [f"### edgekd gate: {'PASS' if result.passed else 'FAIL'}", "",
           f"`{result.report}`, mode `{result.mode}`"
           + (f", baseline `{result.baseline}`" if result.baseline else ""), "",
           "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r in rows[1:]:
        r = r[:-1] + [("✅ PASS" if r[-1] == "PASS" else "❌ **FAIL**")]
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |")
    out += ["", verdict_line(result), ""]
    return "\n".join(out)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write(path: str | Path, text: str) -> None:
    write_atomic(path, text)


def write_gate_json(result: GateResult, path: str | Path) -> None:
    """gate.json: verdict, exit_code, failed ids, every check, the policy used."""
    _write(path, json.dumps(_finite(result.to_dict()), indent=2) + "\n")


def write_junit(result: GateResult, path: str | Path) -> None:
    """JUnit XML: ``<testsuite name="edgekd.gate">`` with one ``<testcase>`` per check; a failing
    check has a ``<failure>`` whose message carries its value, interval and threshold."""
    n_fail = len(result.failed)
    root = ET.Element("testsuites", name="edgekd", tests=str(len(result.checks)), failures=str(n_fail),
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name="edgekd.gate", tests=str(len(result.checks)),
                          failures=str(n_fail), errors="0", skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    for k, v in (("report", result.report), ("mode", result.mode), ("confidence", result.confidence),
                 ("baseline", result.baseline or "")):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.gate.{c.model}", name=c.id, time="0")
        iv = f" ({100 * result.confidence:g}% interval {_fmt(c.unit, c.interval[0])} to " \
             f"{_fmt(c.unit, c.interval[1])})" if c.interval else ""
        summary = f"{c.name}: {_fmt(c.unit, c.value)}{iv}, threshold {c.comparison} {_fmt(c.unit, c.threshold)}"
        if not c.passed:
            fail = ET.SubElement(case, "failure", message=summary, type="GateCheckFailed")
            fail.text = c.detail
        ET.SubElement(case, "system-out").text = f"{summary}; {c.detail}"
    ET.indent(root)
    _write(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
