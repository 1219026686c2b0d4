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
import tomllib
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .errors import ConfigError, InputError

# The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019), in the benchmark's order; mCA
# is their mean accuracy over severities 1..5. Kept here so the gate reads reports without
# importing the perturbation code.
COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
TEACHER = "teacher"
_EPS = 1e-12  # float slack when a value sits exactly on its threshold (3/100 vs 0.03)


# ============================================================================================
# Statistics (pure numpy / scipy)
# ============================================================================================

def z_value(confidence: float) -> float:
    """Two-sided normal quantile: z = Φ⁻¹(1 − (1 − confidence)/2); 1.959964 for 0.95."""
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus reference accuracy on the same n images (see :func:`paired_difference`)."""

    n: int
    b: int  # reference right, candidate wrong
    c: int  # reference wrong, candidate right
    delta: float  # (c − b)/n = candidate accuracy − reference accuracy
    se: float
    lo: float
    hi: float
    p_mcnemar: float  # exact two-sided McNemar p-value of H0: delta = 0


def paired_difference_from_counts(n: int, b: int, c: int, confidence: float = 0.95) -> PairedDifference:
    """Paired accuracy difference from the discordant counts b, c of n images.

    Δ = (c − b)/n,   SE = √(b + c − (b − c)²/n) / n,   CI = Δ ± z·SE (normal approximation),
    McNemar's exact p = two-sided binomial test of b successes in b + c trials, p = 1/2.
    Source: ROBUSTNESS.md, "Statistics for a gate that does not flap"; the SE is the standard error
    of the mean of the per-image differences d_i ∈ {−1, 0, 1} (Agresti, Categorical Data
    Analysis, §10.1). Example: n=100, b=10, c=4 -> Δ=−0.06, SE=0.036932, CI=[−0.13239, 0.01239].
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n, got n={n}, b={b}, c={c}")
    delta = (c - b) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    z = z_value(confidence)
    return PairedDifference(n, b, c, delta, se, delta - z * se, delta + z * se, mcnemar_exact_p(b, c))


def paired_difference(reference_correct: np.ndarray, candidate_correct: np.ndarray,
                      confidence: float = 0.95) -> PairedDifference:
    """:func:`paired_difference_from_counts` from two boolean per-image correctness vectors."""
    r = np.asarray(reference_correct, bool)
    s = np.asarray(candidate_correct, bool)
    b, c = int(np.sum(r & ~s)), int(np.sum(~r & s))
    return paired_difference_from_counts(len(r), b, c, confidence)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact McNemar test: two-sided binomial p-value of b in b + c trials with p = 1/2.

    p = min(1, 2·Σ_{k ≤ min(b,c)} C(b+c, k)/2^(b+c)); 1 when b + c = 0. (McNemar 1947; ROBUSTNESS.md.)
    """
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (Wilson 1927), sound near 0 and 1.

    centre = (p̂ + z²/2n)/(1 + z²/n),  half = z/(1 + z²/n)·√(p̂(1−p̂)/n + z²/4n²).
    """
    p = k / n
    z = z_value(confidence)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_sample_interval(p1: float, n1: int, p2: float, n2: int,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """Unpaired difference of two proportions p1 − p2 (independent samples): (Δ, lo, hi).

    SE = √(p1(1−p1)/n1 + p2(1−p2)/n2), CI = Δ ± z·SE (Wald). For a mean accuracy over several
    cells of the same images (mCA) p(1−p)/n bounds the variance of the per-image mean from above,
    so the interval is conservative (wider).
    """
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = z_value(confidence)
    d = p1 - p2
    return d, d - z * se, d + z * se


@dataclass(frozen=True)
class Bootstrap:
    """Paired bootstrap of per-image values: ``point``, ``lo``, ``hi`` per column, and ``draws``."""

    point: np.ndarray  # (k,) column means
    lo: np.ndarray
    hi: np.ndarray
    draws: np.ndarray  # (samples, k) resampled means


def paired_bootstrap(per_image: np.ndarray, samples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> Bootstrap:
    """Percentile bootstrap over image indices of the column means of ``per_image`` (n,) or (n, k).

    Each resample draws n image indices with replacement (``np.random.default_rng(seed)``) and
    recomputes every column's mean on the same indices, so the columns (mCA drop, each
    corruption's drop) keep their correlation. CI = the (α/2, 1−α/2) quantiles of the resampled
    means, α = 1 − confidence (Efron & Tibshirani 1993, ch. 13; ROBUSTNESS.md: resample image
    indices ≈1,000 times and recompute the 75-cell mean).
    """
    x = np.asarray(per_image, float)
    x = x[:, None] if x.ndim == 1 else x
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, x.shape[1]))
    chunk = max(1, min(samples, 4_000_000 // max(n, 1)))
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        idx = rng.integers(0, n, size=(k, n))
        # how often each image was drawn in each resample; counts @ x / n = resampled means
        counts = np.bincount((idx + n * np.arange(k)[:, None]).ravel(), minlength=k * n)
        draws[start:start + k] = counts.reshape(k, n) @ x / n
    alpha = 1 - confidence
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return Bootstrap(x.mean(axis=0), lo, hi, draws)


def one_sided_pvalue(per_image_drop: np.ndarray, margin: float) -> float:
    """p-value of H0: mean drop ≤ margin against H1: mean drop > margin (drop beyond the margin).

    z = (d̄ − margin)/SE with SE = sd(d)/√n (population sd, the same SE the McNemar formula gives
    for 0/1 correctness), p = 1 − Φ(z). Used per corruption, then :func:`holm_adjust`.
    """
    d = np.asarray(per_image_drop, float)
    mean = float(d.mean())
    se = float(d.std()) / math.sqrt(len(d))
    if se == 0:
        return 0.0 if mean > margin + _EPS else 1.0
    return float(stats.norm.sf((mean - margin) / se))


def holm_adjust(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    Sort p ascending: p_(1) ≤ … ≤ p_(m); adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
    Rejecting where adjusted p < α keeps the family-wise error rate ≤ α.
    Example: [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02].
    """
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


# ============================================================================================
# Policy
# ============================================================================================

def _key(default: Any, help: str, kind: str, **limits: Any) -> Any:
    meta = {"help": help, "kind": kind, **limits}
    if isinstance(default, (list, tuple, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Budget:
    """Absolute budgets of one artifact; None = not checked."""

    max_size_bytes: float | None = _key(None, "file size (report size_bytes)", "positive")
    max_latency_p90_ms: float | None = _key(None, "90th-percentile latency at batch 1 (latency_ms.p90)",
                                            "positive")
    max_peak_memory_bytes: float | None = _key(None, "peak resident memory (memory.peak_rss_bytes)",
                                               "positive")


@dataclass(frozen=True)
class Policy:
    """What the gate checks. Thresholds are fractions relative to the teacher (0.03 = 3 points).

    Any threshold set to ``false`` (None here) disables its check.
    """

    # ---- defaults: placeholders until tuned on real builds (reasoning in docs/gate.md) ----
    models: tuple[str, ...] = _key(("student_int8",), "model ids gated against the teacher", "models")
    mode: str = _key("confident", "strict: point estimate vs threshold; confident: fail only when "
                     "the whole interval lies beyond the threshold", "choice",
                     choices=("strict", "confident"))
    max_clean_drop: float | None = _key(0.03, "teacher - student clean accuracy", "fraction")
    max_mca_drop: float | None = _key(0.10, "teacher - student mCA (15 common corruptions x 5 "
                                      "severities)", "fraction")
    max_corruption_drop: float | None = _key(0.50, "teacher - student accuracy on the worst common "
                                             "corruption (mean over its severities)", "fraction")
    adversarial_attack: str = _key("pgd", "attack of the adversarial check", "choice",
                                   choices=("fgsm", "pgd"))
    adversarial_epsilon: int = _key(2, "epsilon (/255) of the adversarial check", "int", min=1, max=64)
    max_adversarial_drop: float | None = _key(0.30, "teacher - student accuracy under that attack",
                                              "fraction")
    min_agreement: float | None = _key(0.90, "fraction of clean test images where student and "
                                       "teacher predict the same class", "fraction")
    per_corruption: bool = _key(False, "also gate each of the 15 common corruptions against "
                                "max_corruption_drop (Holm-corrected in confident mode)", "bool")
    baseline_max_clean_drop: float | None = _key(0.01, "with --baseline: old - new clean accuracy "
                                                 "of the same model id", "fraction")
    baseline_max_mca_drop: float | None = _key(0.02, "with --baseline: old - new mCA", "fraction")
    confidence: float = _key(0.95, "two-sided confidence of every interval", "float", min=0.5,
                             max=0.999)
    bootstrap_samples: int = _key(1000, "bootstrap resamples of the test images", "int", min=100,
                                  max=100_000)
    seed: int = _key(0, "seed of the bootstrap resampling", "int", min=0, max=2**63 - 1)
    budgets: dict[str, Budget] = _key({}, "[budgets.MODEL_ID] tables of absolute budgets", "budgets")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


POLICY_KEYS = tuple(f.name for f in fields(Policy))
BUDGET_KEYS = tuple(f.name for f in fields(Budget))
_POLICY_FIELDS = {f.name: f for f in fields(Policy)}
_BUDGET_FIELDS = {f.name: f for f in fields(Budget)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(where: str, key: str, value: Any, meta: Mapping) -> Any:
    kind = meta["kind"]
    if kind == "fraction":
        if value is False or value is None:
            return None
        if not _is_number(value) or not 0 <= value <= 1:
            raise ConfigError(f"{where}: {key} must be a fraction in [0, 1] (0.03 = 3 points) or "
                              f"false to disable the check, got {value!r}")
        return float(value)
    if kind == "positive":
        if value is False or value is None:
            return None
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a positive number or false, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        if value not in meta["choices"]:
            raise ConfigError(f"{where}: {key} = {value!r} is not one of {', '.join(meta['choices'])}")
        return value
    if kind == "models":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: {key} must be a non-empty list of model ids, e.g. "
                              f"[\"student_int8\"], got {value!r}")
        return tuple(dict.fromkeys(value))
    if kind in ("int", "float"):
        ok = isinstance(value, int) if kind == "int" else _is_number(value)
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{where}: {key} must be {'an integer' if kind == 'int' else 'a number'}, "
                              f"got {value!r}")
        if value < meta["min"] or value > meta["max"]:
            raise ConfigError(f"{where}: {key} = {value!r} must lie in [{meta['min']}, {meta['max']}]")
        return float(value) if kind == "float" else value
    raise AssertionError(kind)


def _expand_dotted(raw: Mapping, where: str) -> dict:
    """``{"budgets.student_int8.max_size_bytes": 1}`` -> nested tables (for --set overrides)."""
    out: dict = {}
    for key, value in raw.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {key} conflicts with a value set for {p}")
        if isinstance(value, Mapping):
            value = _expand_dotted(value, where)
            if isinstance(node.get(parts[-1]), dict):
                node[parts[-1]].update(value)
                continue
        node[parts[-1]] = value
    return out


def load_policy(raw: Mapping | None = None, where: str = "gate policy") -> Policy:
    """Validate a policy table (a build config's ``[gate]`` section, or a policy file's keys).

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key.
    Example: ``load_policy({"max_clean_drop": 0.02, "mode": "strict"}).max_clean_drop`` -> 0.02.
    """
    raw = _expand_dotted(raw or {}, where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _POLICY_FIELDS:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(POLICY_KEYS)}")
        if key == "budgets":
            values[key] = _load_budgets(value, where)
        else:
            values[key] = _check_value(where, key, value, _POLICY_FIELDS[key].metadata)
    policy = Policy(**values)
    if policy.per_corruption and policy.max_corruption_drop is None:
        raise ConfigError(f"{where}: per_corruption = true needs max_corruption_drop (the threshold "
                          "of each corruption), which is disabled")
    return policy


def _load_budgets(value: Any, where: str) -> dict[str, Budget]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: budgets must be a table of [budgets.MODEL_ID] tables")
    out = {}
    for model, body in value.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: budgets.{model} must be a table with keys "
                              f"{', '.join(BUDGET_KEYS)}")
        checked = {}
        for key, v in body.items():
            if key not in _BUDGET_FIELDS:
                raise ConfigError(f"{where}: unknown key budgets.{model}.{key}; valid budget keys: "
                                  f"{', '.join(BUDGET_KEYS)}")
            checked[key] = _check_value(where, f"budgets.{model}.{key}", v, _BUDGET_FIELDS[key].metadata)
        out[str(model)] = Budget(**checked)
    return out


# sections of a build config that may sit beside [gate] when a whole edgekd.toml is the policy file
_BUILD_SECTIONS = ("data", "teacher", "student", "distill", "export", "quantize", "measure",
                   "robustness")


def read_policy_table(path: str | Path) -> dict:
    """The raw policy table of a TOML file: its ``[gate]`` section if it has one, else its top level."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"policy file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{p} is not a readable TOML file: {e}") from None
    if "gate" in raw:
        if not isinstance(raw["gate"], dict):
            raise ConfigError(f"{p}: [gate] must be a table of keys")
        extra = [k for k in raw if k != "gate" and k not in _BUILD_SECTIONS]
        if extra:
            raise ConfigError(f"{p}: {', '.join(extra)} outside [gate]; put policy keys inside the "
                              "[gate] table or drop the [gate] header")
        return raw["gate"]
    return raw


def load_policy_file(path: str | Path, overrides: Mapping | None = None) -> Policy:
    """:func:`load_policy` on a TOML file (``[gate]`` section or top-level keys) plus overrides."""
    raw = _expand_dotted(read_policy_table(path), str(path))
    where = str(path)
    if overrides:
        raw = merge_overrides(raw, overrides)
        where += " with overrides"
    return load_policy(raw, where)


def merge_overrides(raw: Mapping, overrides: Mapping) -> dict:
    """Deep-merge ``overrides`` (dotted keys allowed) into a policy table."""
    out = _expand_dotted(raw, "policy")
    for key, value in _expand_dotted(overrides, "overrides").items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


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
        if predictions is not None:
            if "labels" not in predictions:
                raise InputError(f"{pred_label}: no 'labels' array")
            self.labels = np.asarray(predictions["labels"]).astype(np.int64).ravel()
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
            if pred.shape != self.labels.shape:
                raise InputError(f"{self.pred_label}: {name!r} has {pred.size} predictions for "
                                 f"{self.labels.size} labels")
            self._correct[name] = pred.astype(np.int64) == self.labels
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
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None


def _load_artifact(source: Any, predictions: Any = None, *, need_predictions: bool = True) -> _Artifact:
    """``source``: an artifact directory, a report.json path, or a report dict (then ``predictions``
    is a mapping of arrays or a path to predictions.npz)."""
    if isinstance(source, Mapping):
        label = "report.json"  # the in-memory report the build is about to write
        pred_path = Path(predictions) if isinstance(predictions, (str, os.PathLike)) else None
        report = dict(source)
    else:
        p = Path(source)
        if p.is_dir():
            report_path = p / "report.json"
            if not report_path.is_file():
                raise InputError(f"{p}: no report.json in this directory (not an edgekd artifact directory)")
        elif p.is_file():
            report_path = p
        else:
            raise InputError(f"{source}: no such report file or artifact directory")
        label = str(report_path)
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{report_path}: not valid JSON ({e})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{report_path}: cannot read it ({e})") from None
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
    names, cols, total, n_cells = [], [], np.zeros(art.n), 0
    for c in COMMON_CORRUPTIONS:
        if c not in cells or c not in ref_cells:
            continue
        col, k = np.zeros(art.n), 0
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
    boot_note = f"paired bootstrap, {policy.bootstrap_samples} resamples of {art.n} images"
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


_BUDGET_METRICS = {  # budget key -> (report path, unit, name)
    "max_size_bytes": ("size_bytes", "bytes", "file size"),
    "max_latency_p90_ms": ("latency_ms.p90", "ms", "latency p90 at batch 1"),
    "max_peak_memory_bytes": ("memory.peak_rss_bytes", "bytes", "peak memory (RSS)"),
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
        out.append(Check(f"{model}.{key.removeprefix('max_')}", name, model, path, float(value), None,
                         float(limit), "<=", value <= limit, f"measured {path} = {value:g}, "
                         f"budget {key} = {limit:g}", unit=unit))
    return out


def _baseline_checks(art: _Artifact, old: _Artifact, model: str, policy: Policy) -> list[Check]:
    if model not in old.models:
        raise InputError(f"baseline {old.label} has no model {model}; models in it: "
                         f"{', '.join(old.models)}")
    sha_new = (art.report.get("dataset") or {}).get("test_sha256")
    sha_old = (old.report.get("dataset") or {}).get("test_sha256")
    paired = (old.labels is not None and np.array_equal(old.labels, art.labels)
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
            detail = f"over {n_cells} cells, paired bootstrap of {art.n} images"
        else:
            d, lo, hi = two_sample_interval(old_mca, old.n, new_mca, art.n, policy.confidence)
            detail = how
        out.append(Check(cid, "mCA drop vs baseline", model, "accuracy.mca", d, (lo, hi), thr, "<=",
                         _decide(d, (lo, hi), thr, "<=", policy.mode),
                         f"baseline {_pct(old_mca)} -> {_pct(new_mca)} ({detail}); baseline {old.label}"))
    return out


def evaluate_gate(report: str | Path | Mapping, policy: Policy | None = None,
                  baseline: str | Path | Mapping | None = None, *,
                  predictions: str | Path | Mapping | None = None) -> GateResult:
    """Run every check of ``policy`` on a build; no printing, no files written.

    ``report``: an artifact directory, a report.json path, or the report dict itself (then give
    ``predictions``: the arrays of predictions.npz as a mapping, or its path). ``baseline``: an old
    artifact directory or report.json whose same model ids must not have regressed.
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
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


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
