"""agents/pacing.py: tables and properties, no clocks, no sleeps."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.pacing import (
    GO,
    STOP,
    Closed,
    ConstantProfile,
    Limits,
    OpenLoop,
    Pace,
    PoissonArrivals,
    Stage,
    StagesProfile,
    UniformArrivals,
    constant_rate,
    target_at,
)


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


# -- Poisson arrivals -------------------------------------------------------------------


def _ks_exponential(gaps: np.ndarray, rate: float) -> float:
    """Kolmogorov-Smirnov distance between the gaps and Exp(rate)."""
    x = np.sort(gaps)
    n = x.size
    cdf = 1.0 - np.exp(-rate * x)
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


KS_CRITICAL_1PCT = 1.628  # sqrt(n) * D above this rejects at the 1% level


def _arrivals(pacer: OpenLoop, n: int) -> np.ndarray:
    return np.array([pacer.intended_s(i) for i in range(n)])


def test_poisson_gaps_pass_a_kolmogorov_smirnov_test_against_the_exponential():
    pacer = OpenLoop(ConstantProfile(250.0), PoissonArrivals(seed=11), Limits(duration_s=1e9))
    times = _arrivals(pacer, 20_000)
    gaps = np.diff(times)
    assert np.all(gaps > 0)
    assert np.sqrt(gaps.size) * _ks_exponential(gaps, 250.0) < KS_CRITICAL_1PCT
    assert times[-1] / (times.size - 1) == pytest.approx(1 / 250.0, rel=0.03)  # the mean rate
    # and the test has teeth: evenly spaced arrivals at the same rate are rejected
    uniform = _arrivals(constant_rate(250.0, Limits(duration_s=1e9)), 2_000)
    assert np.sqrt(1999) * _ks_exponential(np.diff(uniform), 250.0) > KS_CRITICAL_1PCT


def test_agents_with_their_own_seeds_add_up_to_a_poisson_process_at_the_fleet_rate():
    fleet_rate, agents = 300.0, 4
    streams = [
        _arrivals(
            OpenLoop(
                ConstantProfile(fleet_rate / agents),
                PoissonArrivals(seed=s),
                Limits(duration_s=1e9),
            ),
            5_000,
        )
        for s in range(agents)
    ]
    horizon = min(stream[-1] for stream in streams)
    merged = np.sort(np.concatenate([s[s <= horizon] for s in streams]))
    gaps = np.diff(merged)
    assert np.sqrt(gaps.size) * _ks_exponential(gaps, fleet_rate) < KS_CRITICAL_1PCT
    assert merged.size / horizon == pytest.approx(fleet_rate, rel=0.03)


def test_poisson_positions_are_a_pure_function_of_seed_and_index():
    a, b = PoissonArrivals(seed=5), PoissonArrivals(seed=5)
    late = a.position(10_000)  # generated in blocks, out of order
    assert [b.position(i) for i in (3, 10_000, 7)] == [a.position(3), late, a.position(7)]
    assert PoissonArrivals(seed=6).position(3) != a.position(3)


# -- ramping stages ---------------------------------------------------------------------


def test_a_linear_ramp_sends_its_integral():
    """0 -> 100 requests/s over 10 s is 500 arrivals, at t = sqrt(2 i / slope)."""
    profile = StagesProfile((Stage(10.0, 100.0),))
    pacer = OpenLoop(profile, UniformArrivals(), Limits(duration_s=10.0))
    times = [pacer.intended_s(i) for i in range(500)]
    assert times == sorted(times)
    assert times[0] == 0.0
    for i in (1, 50, 499):
        assert times[i] == pytest.approx(math.sqrt(2 * i / 10.0))
    assert pacer.pace(0.0, 500) == STOP  # the 501st would be due after the ramp ends


@pytest.mark.parametrize(
    ("stages", "start", "count"),
    [
        (((5.0, 200.0), (10.0, 200.0), (5.0, 0.0)), 0.0, 500 + 2000 + 500),  # up, hold, down
        (((10.0, 50.0),), 150.0, 1000),  # down from the start rate
        (((2.0, 0.0), (2.0, 100.0)), 0.0, 100),  # an idle stage, then a ramp
    ],
)
def test_stage_profiles_send_the_area_under_the_rate_curve(stages, start, count):
    pacer = OpenLoop(
        StagesProfile(tuple(Stage(d, t) for d, t in stages), start=start),
        UniformArrivals(),
        Limits(duration_s=1e9),
    )
    sent = 0
    while not pacer.pace(0.0, sent).stop:
        sent += 1
        assert sent < 10 * count
    assert sent == count


def test_the_rate_within_a_ramp_follows_the_target():
    stages = (Stage(10.0, 100.0), Stage(10.0, 100.0))
    pacer = OpenLoop(StagesProfile(stages), UniformArrivals(), Limits(duration_s=20.0))
    times = np.array([pacer.intended_s(i) for i in range(1400)])
    for t in (4.0, 8.0, 15.0):
        near = times[(times > t - 0.5) & (times < t + 0.5)]
        assert near.size == pytest.approx(target_at(stages, 0.0, t), abs=2)


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 2), (5.0, 6), (10.0, 10), (12.0, 10), (15.0, 6), (20.0, 0), (99.0, 0)],
)
def test_closed_loop_concurrency_ramps(t, expected):
    pacer = Closed(
        concurrency=2,
        limits=Limits(duration_s=30.0),
        stages=(Stage(10.0, 10.0), Stage(2.0, 10.0), Stage(8.0, 0.0)),
    )
    assert pacer.concurrency_at(t) == expected
    assert pacer.max_concurrency == 10


@pytest.mark.parametrize(
    "make",
    [
        lambda: Stage(0.0, 5.0),
        lambda: Stage(1.0, -5.0),
        lambda: StagesProfile(()),
        lambda: StagesProfile((Stage(1.0, 0.0),)),
        lambda: StagesProfile((Stage(1.0, 5.0),), start=-1.0),
    ],
)
def test_invalid_stages_are_refused(make):
    with pytest.raises(ValueError):
        make()
