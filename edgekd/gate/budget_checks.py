"""Budget checks: one rule for a build's models (report.json figures against the policy's
``[budgets.MODEL_ID]``) and for device runs (what a bundle's run.py measured against the budgets of
a device profile).

    build_budget_checks(build, "student_int8", policy.budgets["student_int8"])
    device_run_checks(report, "report.json", [load_profile("rpi4")])

Every set budget of an :class:`edgekd.budgets.Budgets` becomes one :class:`Check`; the table
:data:`edgekd.budgets.BUDGET_METRICS` says what it measures. Budgets are absolute measurements,
compared as point values (no interval).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..budgets import BUDGET_METRICS, Budgets, Metric
from ..errors import ConfigError, InputError
from ..fields import check_table, get_path, is_number, show_value, table_keys
from .inputs import Build
from .result import Check

if TYPE_CHECKING:
    from ..device_profiles import DeviceProfile


def budget_checks(budgets: Budgets, measure: Callable[[str, Metric], float], *, cid: str, model: str,
                  on_device: bool = False, context: str = "measured ") -> list[Check]:
    """One check per budget that is set: ``measure(key, metric)`` gives the measured value (or
    raises :class:`InputError`); ``max_*`` budgets are ceilings, ``min_*`` floors. Check ids are
    ``{cid}.{key without max_}``; ``context`` starts each check's detail."""
    out = []
    for key, limit in budgets.limits():
        metric = BUDGET_METRICS[key]
        value = measure(key, metric)
        floor = key.startswith("min_")
        out.append(Check(f"{cid}.{key.removeprefix('max_')}", metric.device_name if on_device else metric.name,
                         model, metric.path, float(value), None, float(limit), ">=" if floor else "<=",
                         value >= limit if floor else value <= limit,
                         f"{context}{metric.path} = {value:g}, budget {key} = {limit:g}", unit=metric.unit))
    return out


def build_budget_checks(build: Build, model: str, budgets: Budgets) -> list[Check]:
    """The budgets of one model of a build, against its report.json figures."""
    def measure(key: str, metric: Metric) -> float:
        hint = ("remove that budget or rebuild with memory measurement" if key == "max_peak_memory_bytes"
                else "remove that budget or rebuild the report")
        value = build.metric(model, metric.path, f"the budget {key}", hint)
        if not is_number(value):
            raise InputError(f"{build.label}: model {model} {metric.path} is {value!r}, not a number")
        return value

    return budget_checks(budgets, measure, cid=model, model=model)


def _recorded_budgets(run: dict, label: str) -> Budgets:
    """The budgets recorded with a device run (``profile_budgets``; unknown keys are ignored)."""
    raw = run.get("profile_budgets") or {}
    if isinstance(raw, Mapping):
        raw = {k: v for k, v in raw.items() if k in table_keys(Budgets)}
    try:
        return Budgets(**check_table(raw, Budgets, f"{label}: device run {run.get('profile')}",
                                     "profile_budgets"))
    except ConfigError as e:
        raise InputError(str(e)) from None


def device_run_checks(report: dict, label: str, profiles: list[DeviceProfile] | None = None) -> list[Check]:
    """Budget checks of the report's ``device_runs`` (written by edgekd.device_results).

    ``profiles`` None: every run against the budgets recorded with it. Otherwise each profile's
    runs against that profile's budgets; a profile without a run is an input error.
    """
    runs = report.get("device_runs") or []
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise InputError(f"{label}: device_runs must be a list of objects")
    if profiles is None:
        jobs = [(r, _recorded_budgets(r, label), r.get("primary_model")) for r in runs]
    else:
        jobs = []
        for p in profiles:
            mine = [r for r in runs if r.get("profile") == p.name]
            if not mine:
                have = sorted({str(r.get("profile")) for r in runs}) or ["none"]
                raise InputError(f"{label}: no device run of profile {p.name!r} (device runs: "
                                 f"{', '.join(have)}); run `edgekd bundle --device {p.name}` on the device "
                                 "and merge its results with `edgekd report OUT --device-results`")
            jobs += [(r, p.budgets, p.model_id) for r in mine]
    checks = []
    for run, budgets, model in jobs:
        name = run.get("profile")
        m = (run.get("models") or {}).get(model)
        if m is None:
            raise InputError(f"{label}: the device run of {name} has no model {model} (it has "
                             f"{', '.join(run.get('models') or [])}); make the bundle with that profile")

        def measure(key: str, metric: Metric, m: Any = m, name: Any = name, model: str = model) -> float:
            value = get_path(m, metric.path)
            if not is_number(value) or value < 0:
                raise InputError(f"{label}: device run {name} model {model} has no valid {metric.path} (a "
                                 f"finite number >= 0, got {show_value(value)}), which the budget {key} needs")
            return value

        dev = run.get("device") or {}
        checks += budget_checks(budgets, measure, cid=f"device.{name}.{model}", model=f"{model}@{name}",
                                on_device=True,
                                context=f"measured on {dev.get('machine')} {dev.get('cpu_model', '')} "
                                        f"({run.get('created')}, {run.get('threads')} threads): ")
    return checks
