"""The gate policy: thresholds relative to the teacher, mode, budgets; TOML loading and validation.

    policy = load_policy({"max_clean_drop": 0.02}, where="edgekd.toml [gate]")
    policy = load_policy_file("gate.toml")

Every key is a field of :class:`Policy` (or :class:`Budget`), validated by
:func:`edgekd.fields.check_table`. docs/gate.md documents every key and default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import artifacts
from ..budgets import Budgets
from ..errors import ConfigError
from ..fields import check_table, spec, table_keys

FRACTION = "a fraction in [0, 1] (0.03 = 3 points)"


def _fraction(default: float | None, help: str) -> Any:
    """A threshold that is a fraction; ``false`` disables its check."""
    return spec(default, help, min=0, max=1, off=True, expect=FRACTION)


def _model_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    if not ids or not all(ids):
        raise ValueError("empty")
    return tuple(dict.fromkeys(ids))


@dataclass(frozen=True)
class Budget(Budgets):
    """Absolute budgets of one model of a build (:class:`edgekd.budgets.Budgets`) and a floor on
    its clean accuracy; None = not checked."""

    min_accuracy: float | None = _fraction(None, "absolute floor on clean test accuracy (accuracy.clean); "
                                           "a student is not passed because its teacher is as poor")


@dataclass(frozen=True)
class Policy:
    """What the gate checks. Thresholds are fractions relative to the teacher (0.03 = 3 points).

    Any threshold set to ``false`` (None here) disables its check.
    """

    # ---- defaults: placeholders until tuned on real builds (reasoning in docs/gate.md) ----
    models: tuple[str, ...] = spec((artifacts.STUDENT_INT8,), "model ids gated against the teacher",
                                   expect='a non-empty list of model ids, e.g. ["student_int8"]',
                                   normalize=_model_ids)
    mode: str = spec("confident", "strict: point estimate vs threshold; confident: fail only when "
                     "the whole interval lies beyond the threshold", choices=("strict", "confident"))
    max_clean_drop: float | None = _fraction(0.03, "teacher - student clean accuracy")
    max_mca_drop: float | None = _fraction(0.10, "teacher - student mCA (15 common corruptions x 5 "
                                           "severities)")
    max_corruption_drop: float | None = _fraction(0.50, "teacher - student accuracy on the worst common "
                                                  "corruption (mean over its severities)")
    adversarial_attack: str = spec("pgd", "attack of the adversarial check", choices=("fgsm", "pgd"))
    adversarial_epsilon: int = spec(2, "epsilon (/255) of the adversarial check", min=1, max=64)
    max_adversarial_drop: float | None = _fraction(0.30, "teacher - student accuracy under that attack")
    min_agreement: float | None = _fraction(0.90, "fraction of clean test images where student and "
                                            "teacher predict the same class")
    max_shift_drop: float | None = _fraction(0.05, "teacher - student accuracy on each of the build's "
                                             "robustness.shift_sets (Holm-corrected over the sets in "
                                             "confident mode); a build without shift sets has none to check")
    per_corruption: bool = spec(False, "also gate each of the 15 common corruptions against "
                                "max_corruption_drop (Holm-corrected in confident mode)")
    baseline_max_clean_drop: float | None = _fraction(0.01, "with --baseline: old - new clean accuracy "
                                                      "of the same model id")
    baseline_max_mca_drop: float | None = _fraction(0.02, "with --baseline: old - new mCA")
    confidence: float = spec(0.95, "two-sided confidence of every interval", min=0.5, max=0.999)
    bootstrap_samples: int = spec(1000, "bootstrap resamples of the test images", min=100, max=100_000)
    seed: int = spec(0, "seed of the bootstrap resampling", min=0, max=2**63 - 1)
    budgets: dict[str, Budget] = spec({}, "[budgets.MODEL_ID] tables of absolute budgets")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


POLICY_KEYS = table_keys(Policy)
BUDGET_KEYS = table_keys(Budget)


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
    policy = Policy(**check_table(_expand_dotted(raw or {}, where), Policy, where))
    if policy.per_corruption and policy.max_corruption_drop is None:
        raise ConfigError(f"{where}: per_corruption = true needs max_corruption_drop (the threshold "
                          "of each corruption), which is disabled")
    return policy


def read_policy_table(path: str | Path) -> dict:
    """The raw policy table of a TOML file: its ``[gate]`` section if it has one, else its top level."""
    from ..files import read_toml

    p = Path(path)
    raw = read_toml(p, f"policy file {p} does not exist")
    if "gate" in raw:
        if not isinstance(raw["gate"], dict):
            raise ConfigError(f"{p}: [gate] must be a table of keys")
        from ..config import SECTIONS  # a whole edgekd.toml can be the policy file: its other sections

        extra = [k for k in raw if k != "gate" and k not in SECTIONS]
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
