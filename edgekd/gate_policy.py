"""The gate policy: thresholds relative to the teacher, mode, budgets; TOML loading and validation.

    policy = load_policy({"max_clean_drop": 0.02}, where="edgekd.toml [gate]")
    policy = load_policy_file("gate.toml")

docs/gate.md documents every key and default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import ConfigError


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
    min_accuracy: float | None = _key(None, "absolute floor on clean test accuracy (accuracy.clean); "
                                      "a student is not passed because its teacher is as poor",
                                      "fraction")


@dataclass(frozen=True)
class Policy:
    """What the gate checks. Thresholds are fractions relative to the teacher (0.03 = 3 points).

    Any threshold set to ``false`` (None here) disables its check.
    """

    # ---- defaults: placeholders until tuned on real builds (reasoning in docs/gate.md) ----
    models: tuple[str, ...] = _key((artifacts.STUDENT_INT8,), "model ids gated against the teacher", "models")
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
    from .files import read_toml

    p = Path(path)
    raw = read_toml(p, f"policy file {p} does not exist")
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
