"""coordinator/thresholds.py: k6-style rules parsed and judged, pure."""

import pytest

from coordinator.errors import PlanError
from coordinator.thresholds import judge, parse_threshold, parse_thresholds

SUMMARY = {
    "latency_s": {
        "p50": 0.002,
        "p90": 0.004,
        "p95": 0.005,
        "p99": 0.020,
        "p999": 0.05,
        "max": 0.1,
        "mean": 0.003,
    },
    "error_rate": 0.0005,
    "throughput_rps": 480.0,
    "accuracy": {"rate": 0.93},
    "dropped": 0,
}


@pytest.mark.parametrize(
    ("rule", "metric", "op", "limit"),
    [
        ("p99 < 50ms", "p99", "<", 0.05),
        ("p99.9<=1s", "p999", "<=", 1.0),
        ("max < 250000us", "max", "<", 0.25),
        ("mean < 0.01", "mean", "<", 0.01),
        ("error_rate < 0.1%", "error_rate", "<", 0.001),
        ("accuracy >= 0.9", "accuracy", ">=", 0.9),
        ("throughput > 500", "throughput", ">", 500.0),
        ("dropped <= 0", "dropped", "<=", 0.0),
    ],
)
def test_rules_parse(rule, metric, op, limit):
    t = parse_threshold(rule)
    assert (t.metric, t.op) == (metric, op)
    assert t.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    "rule",
    [
        "p99",
        "p99 < ",
        "p99 = 5ms",
        "p99 < 5%",
        "latency < 5ms",
        "throughput > 5ms",
        "error_rate < 5ms",
        "p99 < five",
    ],
)
def test_bad_rules_are_plan_errors(rule):
    with pytest.raises(PlanError, match=r"^thresholds: "):
        parse_threshold(rule)


def test_verdicts():
    rules = [
        "p99 < 50ms",
        "p50 < 1ms",
        "error_rate < 0.1%",
        "throughput > 500",
        "accuracy >= 0.9",
        "dropped <= 0",
    ]
    verdicts = judge(parse_thresholds(rules), SUMMARY)
    assert [v.passed for v in verdicts] == [True, False, True, False, True, True]
    assert verdicts[0].actual == 0.020


def test_a_missing_figure_fails_its_rule():
    summary = {**SUMMARY, "accuracy": {"rate": None}}
    (verdict,) = judge(parse_thresholds(["accuracy > 0.5"]), summary)
    assert verdict.passed is False and verdict.actual is None
