"""coordinator/plan.py: validation names the field; the fleet's load splits exactly."""

import pytest

from coordinator.errors import PlanError
from coordinator.plan import Plan, parse_duration, parse_target


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5", 1.5),
        (" 10 s ", 10.0),
        (3, 3.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text, "duration") == seconds


@pytest.mark.parametrize("text", ["", "fast", "10 parsecs", "-1s", "0s", "1e400", "nan"])
def test_bad_durations_name_the_field(text):
    with pytest.raises(PlanError, match=r"^duration: "):
        parse_duration(text, "duration")


@pytest.mark.parametrize("text", ["127.0.0.1:8001", "localhost:1", "[::1]:65535"])
def test_targets(text):
    assert parse_target(text) == text


@pytest.mark.parametrize("text", ["127.0.0.1", ":8001", "host:0", "host:70000", "host:http"])
def test_bad_targets(text):
    with pytest.raises(PlanError, match=r"^target: .*HOST:PORT"):
        parse_target(text)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"agents": 0}, "agents"),
        ({"rate": 10, "concurrency": 2}, "rate/concurrency"),
        ({"rate": None}, "rate/concurrency"),
        ({"rate": -5}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": None, "concurrency": 0}, "concurrency"),
        ({"duration_s": None}, "duration"),
        ({"duration_s": 0}, "duration"),
        ({"agents": 4, "max_requests": 3}, "requests"),
        ({"target": "nowhere"}, "target"),
        ({"batch_size": 0}, "batch_size"),
        ({"timeout_s": 0}, "timeout"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"check_fraction": 1.5}, "check_fraction"),
    ],
)
def test_invalid_plans_name_the_field(fields, field):
    plan = Plan(**{"rate": 100.0, **fields})
    with pytest.raises(PlanError) as caught:
        plan.validate()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_open_loop_rate_and_request_count_split_exactly():
    plan = Plan(agents=3, rate=200.0, duration_s=10, max_requests=1000).validate()
    specs = plan.agent_specs("run", "127.0.0.1:1")
    assert sum(s.rate for s in specs) == pytest.approx(200.0)
    assert sum(s.max_requests for s in specs) == 1000
    assert [s.agent_index for s in specs] == [0, 1, 2]
    assert len({s.seed for s in specs}) == 3  # each agent its own digit order
    assert all(s.load_model == "open" and s.target == "127.0.0.1:1" for s in specs)


def test_closed_loop_concurrency_is_per_agent():
    specs = Plan(agents=2, concurrency=8, duration_s=5).validate().agent_specs("run", "t:1")
    assert [s.concurrency for s in specs] == [8, 8]
    assert all(s.load_model == "closed" and s.rate is None for s in specs)
