"""The gate's result types: one :class:`Check` per rule, a :class:`GateResult` for the verdict, and
the decision rule of the two modes (:func:`decide`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .stats import EPS


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


def decide(value: float, interval: tuple[float, float] | None, threshold: float, comparison: str,
           mode: str) -> bool:
    """strict: the point estimate; confident: fail only if the whole interval is beyond."""
    use_interval = mode == "confident" and interval is not None
    if comparison == "<=":
        return (interval[0] if use_interval else value) <= threshold + EPS
    return (interval[1] if use_interval else value) >= threshold - EPS
