"""k6-style thresholds judged over the merged fleet data, as pure functions.

A rule is `METRIC OP VALUE`: `p99 < 50ms`, `error_rate < 0.1%`, `throughput > 500`,
`accuracy >= 0.9`. Latency metrics (p50, p90, p95, p99, p999, max, mean) take a duration
(`us`, `ms`, `s`; a bare number is seconds); error_rate and accuracy a fraction or a
percentage; throughput requests/s; dropped a count.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from coordinator.errors import PlanError

LATENCY = {
    "p50": 50.0,
    "p90": 90.0,
    "p95": 95.0,
    "p99": 99.0,
    "p999": 99.9,
    "max": None,
    "mean": None,
}
OTHER = ("error_rate", "throughput", "accuracy", "dropped")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_RULE = re.compile(r"^\s*([a-z_0-9.]+)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*(us|µs|ms|s|%)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


@dataclass(frozen=True)
class Threshold:
    rule: str
    metric: str
    op: str
    limit: float

    def passes(self, actual: float | None) -> bool:
        return actual is not None and OPS[self.op](actual, self.limit)


@dataclass(frozen=True)
class Verdict:
    rule: str
    actual: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "actual": self.actual, "passed": self.passed}


def parse_threshold(rule: str, field_name: str = "thresholds") -> Threshold:
    match = _RULE.match(rule)
    known = ", ".join([*LATENCY, *OTHER])
    if not match:
        raise PlanError(
            field_name, f"{rule!r} is not METRIC OP VALUE (e.g. 'p99 < 50ms'); metrics: {known}"
        )
    metric, op, number, unit = match.groups()
    metric = "p999" if metric == "p99.9" else metric
    try:
        value = float(number)
    except ValueError:
        raise PlanError(field_name, f"{rule!r}: {number!r} is not a number") from None
    if metric in LATENCY:
        if unit == "%":
            raise PlanError(field_name, f"{rule!r}: a latency takes a duration (us, ms, s), not %")
        value *= _UNITS[unit]
    elif metric in ("error_rate", "accuracy"):
        if unit not in (None, "%"):
            raise PlanError(field_name, f"{rule!r}: {metric} is a fraction or a percentage")
        value = value / 100 if unit == "%" else value
    elif metric in ("throughput", "dropped"):
        if unit is not None:
            raise PlanError(field_name, f"{rule!r}: {metric} takes a plain number")
    else:
        raise PlanError(field_name, f"{rule!r}: unknown metric {metric!r}; metrics: {known}")
    return Threshold(rule=rule.strip(), metric=metric, op=op, limit=value)


def parse_thresholds(rules: Iterable[str]) -> list[Threshold]:
    return [parse_threshold(rule, f"thresholds[{i}]") for i, rule in enumerate(rules)]


def actual_value(metric: str, summary: dict[str, Any]) -> float | None:
    """The figure a metric names, from a summary (see coordinator/summary.py)."""
    if metric in LATENCY:
        return summary["latency_s"][metric]
    if metric == "error_rate":
        return summary["error_rate"]
    if metric == "throughput":
        return summary["throughput_rps"]
    if metric == "accuracy":
        return summary["accuracy"]["rate"]
    return float(summary["dropped"])


def judge(thresholds: Iterable[Threshold], summary: dict[str, Any]) -> list[Verdict]:
    verdicts = []
    for threshold in thresholds:
        actual = actual_value(threshold.metric, summary)
        verdicts.append(
            Verdict(rule=threshold.rule, actual=actual, passed=threshold.passes(actual))
        )
    return verdicts
