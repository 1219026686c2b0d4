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

Modules: :mod:`.policy` (the policy and its validation), :mod:`.inputs` (report.json +
predictions.npz), :mod:`.stats` (paired statistics), :mod:`.result` (Check, GateResult, the
decision rule), :mod:`.checks` (checks against the teacher and a baseline; :func:`evaluate_gate`),
:mod:`.budget_checks` (budgets of a build's models and of device runs), :mod:`.output` (table,
markdown, gate.json, JUnit). Their public names are re-exported here: ``edgekd.gate`` is the one
import for users of the gate.
"""

from __future__ import annotations

from .budget_checks import budget_checks, build_budget_checks, device_run_checks
from .checks import COMMON_CORRUPTIONS, SEVERITIES, TEACHER, evaluate_gate
from .inputs import Build, load_build, load_npz
from .output import format_check, format_table, markdown_summary, verdict_line, write_gate_json, write_junit
from .policy import (
    BUDGET_KEYS,
    POLICY_KEYS,
    Budget,
    Policy,
    load_policy,
    load_policy_file,
    merge_overrides,
    read_policy_table,
)
from .result import Check, GateResult, decide
from .stats import (
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

__all__ = [
    "BUDGET_KEYS", "COMMON_CORRUPTIONS", "POLICY_KEYS", "SEVERITIES", "TEACHER", "Bootstrap", "Budget",
    "Build", "Check", "GateResult", "PairedDifference", "Policy", "budget_checks", "build_budget_checks",
    "decide", "device_run_checks", "evaluate_gate", "format_check", "format_table", "holm_adjust",
    "load_build", "load_npz", "load_policy", "load_policy_file", "markdown_summary", "mcnemar_exact_p",
    "merge_overrides", "one_sided_pvalue", "paired_bootstrap", "paired_difference",
    "paired_difference_from_counts", "read_policy_table", "two_sample_interval", "verdict_line",
    "wilson_interval", "write_gate_json", "write_junit", "z_value",
]
