"""agents/pacing.py: tables and properties, no clocks, no sleeps."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.pacing import GO, STOP, Closed, Limits, Pace, constant_rate


@pytest.mark.parametrize(
    ("rate", "elapsed", "sent", "expected"),
    [
        (100.0, 0.0, 0, GO),  # the first request leaves at once
        (100.0, 0.0, 1, Pace(wait_s=0.01, stop=False)),
        (100.0, 0.005, 1, Pace(wait_s=0.005, stop=False)),
        (100.0, 0.5, 10, GO),  # behind schedule: send now, no catch-up wait
        (100.0, 0.99, 99, GO),
        (100.0, 0.99, 100, STOP),  # request 100 would be intended at 1.0 s = the duration
        (3.0, 0.0, 2, Pace(wait_s=2 / 3, stop=False)),
    ],
)
def test_constant_rate_table(rate, elapsed, sent, expected):
    pacer = constant_rate(rate=rate, limits=Limits(duration_s=1.0))
    got = pacer.pace(elapsed, sent)
    assert got.stop == expected.stop
    assert got.wait_s == pytest.approx(expected.wait_s)


def test_constant_rate_stops_at_request_count_before_duration():
    pacer = constant_rate(rate=1000.0, limits=Limits(duration_s=10.0, max_requests=5))
    assert pacer.pace(0.0, 4) == Pace(wait_s=0.004, stop=False) or pacer.pace(0.0, 4).wait_s > 0
    assert pacer.pace(1.0, 5) == STOP


@settings(deadline=None)  # simulates up to 50,000 sends per example
@given(
    rate=st.floats(min_value=0.1, max_value=1e6),
    duration=st.floats(min_value=0.01, max_value=3600),
)
def test_sends_exactly_the_arrivals_intended_within_the_duration(rate, duration):
    """Simulate a generator that is always on time: it sends ceil(rate*duration) requests."""
    pacer = constant_rate(rate=rate, limits=Limits(duration_s=duration))
    expected = math.ceil(rate * duration - 1e-9)
    if expected > 50_000:
        return
    # Jump straight to each intended time, as a perfect clock would.
    sent, elapsed = 0, 0.0
    while True:
        pace = pacer.pace(elapsed, sent)
        if pace.stop:
            break
        assert pace.wait_s >= 0
        elapsed += pace.wait_s
        if pace.wait_s == 0:
            assert pacer.intended_s(sent) <= elapsed + 1e-12  # never sends early
            sent += 1
    assert abs(sent - expected) <= 1  # float rounding at the boundary


@given(
    rate=st.floats(min_value=0.001, max_value=1e7),
    elapsed=st.floats(min_value=0, max_value=1e5),
    sent=st.integers(min_value=0, max_value=10**9),
)
def test_wait_is_never_negative_and_lands_on_the_intended_time(rate, elapsed, sent):
    pacer = constant_rate(rate=rate, limits=Limits(duration_s=1e9))
    pace = pacer.pace(elapsed, sent)
    assert pace.wait_s >= 0
    if not pace.stop and pace.wait_s > 0:
        assert elapsed + pace.wait_s == pytest.approx(pacer.intended_s(sent), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("limits", "elapsed", "sent", "stop"),
    [
        (Limits(duration_s=1.0), 0.999, 10**6, False),
        (Limits(duration_s=1.0), 1.0, 0, True),
        (Limits(max_requests=3), 1e9, 2, False),
        (Limits(max_requests=3), 0.0, 3, True),
        (Limits(duration_s=5.0, max_requests=3), 0.0, 3, True),
        (Limits(duration_s=5.0, max_requests=3), 5.0, 0, True),
    ],
)
def test_closed_loop_stops_on_either_limit(limits, elapsed, sent, stop):
    assert Closed(concurrency=4, limits=limits).pace(elapsed, sent).stop is stop


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limits(),
        lambda: Limits(duration_s=0),
        lambda: Limits(duration_s=-1),
        lambda: Limits(max_requests=0),
        lambda: constant_rate(rate=0, limits=Limits(duration_s=1)),
        lambda: constant_rate(rate=float("inf"), limits=Limits(duration_s=1)),
        lambda: constant_rate(rate=float("nan"), limits=Limits(duration_s=1)),
        lambda: Closed(concurrency=0, limits=Limits(duration_s=1)),
    ],
)
def test_invalid_pacers_are_refused(make):
    with pytest.raises(ValueError):
        make()
