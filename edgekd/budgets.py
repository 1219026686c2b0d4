"""Absolute budgets of a model: one type for a device profile's ``[budgets]`` table and the gate's
``[budgets.MODEL_ID]`` tables, and the one table of what each budget measures.

    b = Budgets(max_latency_p90_ms=20.0)
    b.limits()                          # -> [("max_latency_p90_ms", 20.0)]  (the budgets that are set)
    BUDGET_METRICS["max_size_bytes"].path   # -> "size_bytes" (in report.json's models and device runs)

The gate turns each set budget into one check (``edgekd.gate.budget_checks``): of a build's model
against its report.json figures, or of a device run against what the device measured.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .fields import spec

POSITIVE = "a positive number"


@dataclass(frozen=True)
class Budgets:
    """Ceilings on what a model costs; None (``false`` in TOML) = not checked."""

    max_latency_p90_ms: float | None = spec(
        None, "90th-percentile latency of one call in ms (latency_ms.p90: at batch 1 in a build, at "
        "the profile's batch on a device)", gt=0, off=True, expect=POSITIVE)
    max_size_bytes: float | None = spec(None, "model file size in bytes (size_bytes)", gt=0, off=True,
                                        expect=POSITIVE)
    max_peak_memory_bytes: float | None = spec(
        None, "peak resident memory of the process running the model (python + numpy + runtime + "
        "model) in bytes (memory.peak_rss_bytes)", gt=0, off=True, expect=POSITIVE)

    def limits(self) -> list[tuple[str, float]]:
        """(key, limit) of every budget that is set, in field order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


@dataclass(frozen=True)
class Metric:
    path: str          # where the measured value sits in a report.json model or a device run's model
    unit: str          # "ms", "bytes" or "rate" (edgekd.gate.Check units)
    name: str          # the check's name for a build's model
    device_name: str   # the check's name for a device run


# budget key -> what it measures; max_* are ceilings, min_* floors (min_accuracy: the gate's
# absolute accuracy floor, a key of its [budgets.MODEL_ID] tables only)
BUDGET_METRICS: dict[str, Metric] = {
    "max_latency_p90_ms": Metric("latency_ms.p90", "ms", "latency p90 at batch 1", "on-device latency p90"),
    "max_size_bytes": Metric("size_bytes", "bytes", "file size", "model file size"),
    "max_peak_memory_bytes": Metric("memory.peak_rss_bytes", "bytes", "peak memory (RSS)",
                                    "on-device peak memory (RSS)"),
    "min_accuracy": Metric("accuracy.clean", "rate", "clean accuracy (absolute floor)",
                           "on-device clean accuracy (absolute floor)"),
}
