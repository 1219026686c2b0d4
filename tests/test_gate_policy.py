"""edgekd.gate.policy: defaults, validation (edgekd.fields), the file forms, and the example and
docs that mirror the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd import gate as g
from edgekd.errors import ConfigError


def test_policy_defaults_and_validation():
    p = g.load_policy({})
    assert (p.max_clean_drop, p.max_mca_drop, p.max_corruption_drop) == (0.03, 0.10, 0.50)
    assert (p.adversarial_attack, p.adversarial_epsilon, p.max_adversarial_drop) == ("pgd", 2, 0.30)
    assert (p.min_agreement, p.mode, p.models) == (0.90, "confident", ("student_int8",))
    assert g.load_policy({"max_mca_drop": False}).max_mca_drop is None  # false disables a check
    with pytest.raises(ConfigError, match="unknown key 'max_clean_dorp'; valid keys: .*max_clean_drop"):
        g.load_policy({"max_clean_dorp": 0.1})
    with pytest.raises(ConfigError, match="max_clean_drop must be a fraction"):
        g.load_policy({"max_clean_drop": "3"})
    with pytest.raises(ConfigError, match="max_clean_drop must be a fraction"):
        g.load_policy({"max_clean_drop": 3})
    with pytest.raises(ConfigError, match="mode = 'lenient' is not one of strict, confident"):
        g.load_policy({"mode": "lenient"})
    with pytest.raises(ConfigError, match="unknown key budgets.student_int8.max_size"):
        g.load_policy({"budgets": {"student_int8": {"max_size": 1}}})
    with pytest.raises(ConfigError, match="per_corruption = true needs max_corruption_drop"):
        g.load_policy({"per_corruption": True, "max_corruption_drop": False})
    with pytest.raises(ConfigError, match="bootstrap_samples = 5 must lie in"):
        g.load_policy({"bootstrap_samples": 5})


@pytest.mark.parametrize("raw, needle", [
    ({"models": []}, 'models must be a non-empty list of model ids, e.g. ["student_int8"], got []'),
    ({"models": ["a", ""]}, "models must be a non-empty list of model ids"),
    ({"models": 5}, "models must be a non-empty list of model ids"),
    ({"adversarial_epsilon": 2.0}, "adversarial_epsilon must be an integer, got 2.0"),
    ({"adversarial_epsilon": 99}, "adversarial_epsilon = 99 must lie in [1, 64]"),
    ({"confidence": "high"}, "confidence must be a number, got 'high'"),
    ({"per_corruption": 1}, "per_corruption must be true or false, got 1"),
    ({"max_mca_drop": True}, "max_mca_drop must be a fraction in [0, 1] (0.03 = 3 points) or false to "
                             "turn it off, got True"),
    ({"budgets": 5}, "budgets must be a table of [budgets.NAME] tables"),
    ({"budgets": {"student_int8": 5}}, "budgets.student_int8 must be a table with keys max_latency_p90_ms"),
    ({"budgets": {"student_int8": {"max_size": 1}}},
     "unknown key budgets.student_int8.max_size; valid keys of [budgets.student_int8]: max_latency_p90_ms, "
     "max_size_bytes, max_peak_memory_bytes, min_accuracy"),
    ({"budgets": {"student_int8": {"max_size_bytes": 0}}},
     "budgets.student_int8.max_size_bytes must be a positive number or false to turn it off, got 0"),
])
def test_policy_errors_name_the_key(raw, needle):
    with pytest.raises(ConfigError) as e:
        g.load_policy(raw, where="gate.toml")
    assert str(e.value) == f"gate.toml: {needle}" or str(e.value).startswith(f"gate.toml: {needle}")


def test_policy_values_are_normalised():
    p = g.load_policy({"models": ["student_fp32", "student_fp32", "student_int8"], "confidence": 1 - 0.1,
                       "budgets": {"student_int8": {"max_size_bytes": 50_000, "max_latency_p90_ms": False}}})
    assert p.models == ("student_fp32", "student_int8")  # a tuple, duplicates dropped, order kept
    assert p.confidence == 0.9 and isinstance(p.confidence, float)
    b = p.budgets["student_int8"]
    assert isinstance(b, g.Budget) and b.max_size_bytes == 50_000.0 and b.max_latency_p90_ms is None
    assert b.limits() == [("max_size_bytes", 50_000.0)]
    # the gate's budgets are the device profiles' budgets plus an accuracy floor
    from edgekd.budgets import Budgets

    assert isinstance(b, Budgets) and g.BUDGET_KEYS[-1] == "min_accuracy"


def test_policy_file_forms(tmp_path):
    top = tmp_path / "top.toml"
    top.write_text('mode = "strict"\nmax_clean_drop = 0.02\n[budgets.student_int8]\nmax_size_bytes = 50000\n')
    section = tmp_path / "edgekd.toml"
    section.write_text('[distill]\nepochs = 3\n[gate]\nmode = "strict"\nmax_clean_drop = 0.02\n'
                       '[gate.budgets.student_int8]\nmax_size_bytes = 50000\n')
    a, b = g.load_policy_file(top), g.load_policy_file(section)
    assert a == b and a.budgets["student_int8"].max_size_bytes == 50000
    # dotted keys, as `edgekd build --set gate.budgets.student_int8.max_latency_p90_ms=2` gives them
    c = g.load_policy({"budgets.student_int8.max_latency_p90_ms": 2, "models": "student_fp32"})
    assert c.budgets["student_int8"].max_latency_p90_ms == 2 and c.models == ("student_fp32",)
    stray = tmp_path / "stray.toml"
    stray.write_text('max_clean_drop = 0.02\n[gate]\nmode = "strict"\n')
    with pytest.raises(ConfigError, match="max_clean_drop outside \\[gate\\]"):
        g.load_policy_file(stray)


def test_example_policy_and_docs_match_the_defaults():
    root = Path(__file__).resolve().parents[1]
    example = g.load_policy_file(root / "gate.example.toml").to_dict()
    defaults = g.Policy().to_dict()
    assert {k: v for k, v in example.items() if k != "budgets"} == {
        k: v for k, v in defaults.items() if k != "budgets"}
    docs = (root / "docs" / "gate.md").read_text()
    for key in g.POLICY_KEYS + g.BUDGET_KEYS:
        assert f"`{key}" in docs or f".{key}`" in docs, key
