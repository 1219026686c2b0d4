"""edgekd.gate.budget_checks: one budget rule for a build's models and for device runs."""

from __future__ import annotations

import pytest

from edgekd import gate as g
from edgekd.budgets import BUDGET_METRICS, Budgets
from edgekd.device_profiles import load_profile
from edgekd.errors import InputError

MEASURED = {"size_bytes": 60_000, "latency_ms": {"p90": 3.0}, "memory": {"peak_rss_bytes": 90_000_000},
            "accuracy": {"clean": 0.9}}


def report(**extra) -> dict:
    return {"dataset": {"n_test": 100}, "models": {"teacher": {}, "student_int8": dict(MEASURED)}, **extra}


def device_run(budgets: dict, profile: str = "rpi4", model: str = "student_int8_ort") -> dict:
    return {"profile": profile, "profile_budgets": budgets, "primary_model": model, "created": "2026-01-01",
            "threads": 4, "device": {"machine": "aarch64", "cpu_model": "Pi"}, "models": {model: dict(MEASURED)}}


def test_build_and_device_budgets_are_one_rule():
    limits = {"max_latency_p90_ms": 2.0, "max_size_bytes": 100_000, "max_peak_memory_bytes": 1e8}
    build = g.build_budget_checks(g.load_build(report(), need_predictions=False), "student_int8",
                                  g.Budget(**limits))
    device = g.device_run_checks(report(device_runs=[device_run(limits)]), "report.json")
    assert [c.id for c in build] == ["student_int8.latency_p90_ms", "student_int8.size_bytes",
                                     "student_int8.peak_memory_bytes"]
    assert [c.id for c in device] == [f"device.rpi4.student_int8_ort.{c.id.split('.', 1)[1]}" for c in build]
    for b, d in zip(build, device):
        assert (b.value, b.threshold, b.passed, b.unit, b.metric) == (d.value, d.threshold, d.passed, d.unit,
                                                                       d.metric)
    assert [c.passed for c in build] == [False, True, True]  # 3.0 ms > 2.0 ms
    assert [c.name for c in build] == [m.name for m in BUDGET_METRICS.values()][:3]
    assert device[0].name == "on-device latency p90" and device[0].model == "student_int8_ort@rpi4"
    assert device[0].detail.startswith("measured on aarch64 Pi (2026-01-01, 4 threads): latency_ms.p90 = 3")


def test_min_budgets_are_floors():
    (floor,) = g.budget_checks(g.Budget(min_accuracy=0.95), lambda key, metric: 0.9, cid="m", model="m")
    assert (floor.id, floor.comparison, floor.passed, floor.unit) == ("m.min_accuracy", ">=", False, "rate")


def test_device_runs_against_a_profile_and_bad_recorded_budgets():
    rpi = load_profile("rpi4")
    runs = report(device_runs=[device_run({})])
    assert g.device_run_checks(runs, "report.json") == []  # no budgets recorded: nothing to check
    checks = g.device_run_checks(runs, "report.json", [rpi])
    assert [c.threshold for c in checks] == [v for _, v in rpi.budgets.limits()]
    bad = report(device_runs=[device_run({"max_size_bytes": "big", "future_budget": 1})])
    with pytest.raises(InputError, match=r"report.json: device run rpi4: profile_budgets.max_size_bytes must "
                                         r"be a positive number"):
        g.device_run_checks(bad, "report.json")
    with pytest.raises(InputError, match="no device run of profile 'x86-edge'"):
        g.device_run_checks(runs, "report.json", [load_profile("x86-edge")])


def test_budgets_type_and_table_agree():
    assert set(BUDGET_METRICS) == {k for k, _ in g.Budget(1, 2, 3, 0.5).limits()}
    assert [k for k, _ in Budgets(1, 2, 3).limits()] == list(BUDGET_METRICS)[:3]
    from edgekd import device_results

    assert device_results.device_run_checks is g.device_run_checks  # found there too, for its callers
