"""The capacity search as pure functions: judging tables, next-step tables, and whole
searches against a simulated M/D/k server (no sockets, no clock)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.capacity import (
    EXIT_CODES,
    CapacityResult,
    Finished,
    Measurement,
    Probe,
    Settings,
    Trial,
    judge,
    next_step,
    parse_slo,
    search,
    trial_row,
)
from coordinator.capacity_model import SlotServer
from coordinator.errors import PlanError

SLO = parse_slo("p99<50ms")


def settings(**changes) -> Settings:
    base = dict(
        slo=SLO,
        start_rate=50.0,
        trial_duration_s=4.0,
        confirm_duration_s=12.0,
        min_requests=300,
        precision=0.05,
    )
    return Settings(**{**base, **changes}).validate()


def good(rate: float = 100.0, **changes) -> Measurement:
    n = changes.pop("requests", 1000)
    base = dict(
        rate=rate,
        duration_s=n / rate,
        requests=n,
        over_bound=0,
        percentile_s=0.020,
        sent=n,
        throughput_rps=rate,
    )
    return Measurement(**{**base, **changes})


# -- the SLO ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "quantile", "bound", "inclusive"),
    [
        ("p99<50ms", "p99", 0.99, 0.05, False),
        ("p99.9 <= 0.2s", "p999", 0.999, 0.2, True),
        ("p50 < 800us", "p50", 0.5, 0.0008, False),
    ],
)
def test_slos_parse(text, metric, quantile, bound, inclusive):
    slo = parse_slo(text)
    assert (slo.metric, slo.quantile, slo.inclusive) == (metric, quantile, inclusive)
    assert slo.bound_s == pytest.approx(bound)


@pytest.mark.parametrize("text", ["p99>50ms", "error_rate<1%", "mean<5ms", "p99<0ms", "fast", 50])
def test_what_is_not_a_percentile_under_a_bound_is_refused_by_name(text):
    with pytest.raises(PlanError, match=r"^capacity\.slo"):
        parse_slo(text)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"confidence": 1.0}, "capacity.confidence"),
        ({"precision": 0.0}, "capacity.precision"),
        ({"start_rate": 0.0}, "capacity.start_rate"),
        ({"max_rate": 10.0}, "capacity.max_rate"),
        ({"growth": 1.0}, "capacity.growth"),
        ({"max_error_rate": 2.0}, "capacity.max_error_rate"),
        ({"min_requests": 0}, "capacity.min_requests"),
    ],
)
def test_bad_settings_name_their_field(change, field):
    with pytest.raises(PlanError, match=rf"^{field}:"):
        settings(**change)


def test_a_trial_lasts_long_enough_for_its_minimum_request_count():
    s = settings(min_requests=1000, trial_duration_s=4.0, confirm_duration_s=12.0)
    assert s.duration_for(500.0, "grow") == 4.0
    # 1000 requests, and four standard deviations of a Poisson count more, at 50/s
    assert s.duration_for(50.0, "bisect") == pytest.approx((1000 + 4 * 1000**0.5) / 50)
    assert s.duration_for(500.0, "confirm") == 12.0
    # three times the requests, too
    assert s.duration_for(100.0, "confirm") == pytest.approx((3000 + 4 * 3000**0.5) / 100)
    assert settings(min_requests=None).requests_per_trial == 1200  # from the binomial


# -- judging one trial ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measurement", "outcome", "reason"),
    [
        (good(), "pass", None),
        (good(percentile_s=0.051, over_bound=11), "fail", "p99 51 ms misses p99<50ms"),
        (good(percentile_s=0.050), "fail", "misses"),  # '<' is strict
        # p99 under the bound but 9 of 1000 over: at 95% only 4 may be
        (good(over_bound=9), "fail", "9 of 1000 requests over 50 ms; at most 4"),
        (good(over_bound=4), "pass", None),
        (good(requests=200), "fail", "too few requests"),
        (good(errors=2), "fail", "error rate 0.200% over 0.100%"),
        (good(errors=1), "pass", None),
        (good(dropped=3), "fail", "dropped at the in-flight cap"),
        # the generator: late sends, short counts, lost agents
        (good(send_lag_p99_s=0.08), "limited", "send lag p99 80 ms over its limit 50 ms"),
        (good(sent=800), "limited", "sent 800 of the 1000 scheduled"),
        (good(sent=970), "pass", None),  # within the tolerance (and Poisson noise)
        (good(agents_lost=1), "limited", "1 agent(s) lost"),
        # completions short of the schedule beyond noise and the drain, the SLO met
        (good(throughput_rps=80.0), "limited", "achieved 80 requests/s of the 100 scheduled"),
        (good(throughput_rps=90.0), "pass", None),
        (good(throughput_rps=80.0, latency_s={"max": 2.5}), "pass", None),  # a long drain
        # a late generator does not excuse a server that misses the SLO by more than the lag
        (
            good(send_lag_p99_s=0.08, send_lag_max_s=0.2, percentile_s=0.5, over_bound=500),
            "fail",
            "p99 500 ms misses",
        ),
        # ... but not when the largest send lag could explain the miss
        (
            good(send_lag_p99_s=0.08, send_lag_max_s=0.6, percentile_s=0.5, over_bound=500),
            "limited",
            "send lag p99 80 ms",
        ),
        (good(send_lag_p99_s=0.08, percentile_s=0.5, over_bound=500), "limited", "send lag"),
        (good(send_lag_p99_s=0.08, errors=100), "fail", "error rate"),
    ],
)
def test_judging_a_trial(measurement, outcome, reason):
    trial = judge(settings(), 0, "grow", measurement)
    assert trial.outcome == outcome, trial.reasons
    if reason is None:
        assert trial.reasons == ()
    else:
        assert any(reason in r for r in trial.reasons), trial.reasons


def test_accuracy_counts_only_when_a_minimum_is_asked():
    assert judge(settings(), 0, "grow", good(accuracy=0.5)).outcome == "pass"
    strict = settings(min_accuracy=0.9)
    assert judge(strict, 0, "grow", good(accuracy=0.95)).outcome == "pass"
    low = judge(strict, 0, "grow", good(accuracy=0.85))
    assert low.outcome == "fail" and "accuracy 85.00% under 90.00%" in low.reasons[0]
    assert "unknown" in judge(strict, 0, "grow", good(accuracy=None)).reasons[0]


def test_a_trial_carries_the_confidence_its_sample_gives():
    trial = judge(settings(), 0, "grow", good(requests=3000, over_bound=20))
    assert trial.max_over == 20 and trial.outcome == "pass"
    assert 0.95 <= trial.confidence < 0.97
    assert judge(settings(), 0, "grow", good(requests=3000, over_bound=0)).confidence > 0.999


# -- the next step ------------------------------------------------------------------------


def history(*steps: tuple[float, str] | tuple[float, str, str]) -> list[Trial]:
    """Trials from (rate, outcome[, phase]) triples."""
    trials = []
    for i, step in enumerate(steps):
        rate, outcome = step[0], step[1]
        phase = step[2] if len(step) > 2 else "grow"
        m = good(rate, requests=1000)
        if outcome == "fail":
            m = good(rate, percentile_s=0.2, over_bound=100)
        elif outcome == "limited":
            m = good(rate, send_lag_p99_s=0.2)
        trial = judge(settings(), i, phase, m)
        assert trial.outcome == outcome
        trials.append(trial)
    return trials


S = settings()


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ((), Probe(50.0, "grow", 7.39)),  # 300 requests (+4 sd) at 50/s take 7.4 s
        (((50, "pass"),), Probe(100.0, "grow", 4.0)),
        (((50, "pass"), (100, "pass")), Probe(200.0, "grow", 4.0)),
        # the first failure starts the bisection, at the geometric midpoint
        (((50, "pass"), (100, "pass"), (200, "fail")), Probe(141.4, "bisect", 4.0)),
        (((50, "pass"), (100, "fail")), Probe(70.71, "bisect", 5.22)),
        # a failing start rate shrinks
        (((50, "fail"),), Probe(25.0, "shrink", 14.77)),
        (((50, "fail"), (25, "fail", "shrink")), Probe(12.5, "shrink", 29.54)),
        # within the precision: the lowest failing rate, failed once in a short trial, is
        # tried again before the highest passing rate is confirmed with a longer run
        (
            ((100, "pass"), (200, "fail"), (196, "fail"), (195, "pass")),
            Probe(196.0, "recheck", 4.0),
        ),
        (
            ((100, "pass"), (200, "fail"), (196, "fail"), (195, "pass"), (196, "fail", "recheck")),
            Probe(195.0, "confirm", 12.0),
        ),
        # a recheck that passes discounts the failure: the search goes on above it (here:
        # the next failing rate is within the precision too, and is rechecked in turn)
        (
            ((100, "pass"), (200, "fail"), (196, "fail"), (195, "pass"), (196, "pass", "recheck")),
            Probe(200.0, "recheck", 4.0),
        ),
        (
            ((50, "pass"), (100, "fail"), (95, "pass"), (100, "pass", "recheck")),
            Probe(200.0, "grow", 4.0),
        ),
        # a failed confirmation is not rechecked: it was the long run
        (
            ((100, "pass"), (190, "pass"), (195, "fail", "confirm"), (200, "fail")),
            Probe(190.0, "confirm", 12.0),
        ),
        # a failed confirmation becomes the lowest failing rate and the bisection goes on
        (
            ((100, "pass"), (200, "fail"), (190, "pass"), (195, "fail"), (190, "fail", "confirm")),
            Probe(137.8, "bisect", 4.0),
        ),
        # a pass above a failure is noise and is ignored: the lower failure stands
        (
            ((50, "pass"), (100, "pass"), (200, "fail"), (141.4, "fail"), (400, "pass")),
            Probe(118.9, "bisect", 4.0),
        ),
        # a limited trial is retried once, as it was
        (((50, "pass"), (100, "limited")), Probe(100.0, "grow", 10.0)),
        # ... and a retry that passes lets the search go on
        (((50, "pass"), (100, "limited"), (100, "pass")), Probe(200.0, "grow", 4.0)),
        # a limited trial above the lowest failure does not stop the search
        (
            ((50, "pass"), (100, "fail"), (150, "limited"), (150, "limited")),
            Probe(70.71, "bisect", 5.22),
        ),
    ],
)
def test_the_next_step(trials, expected):
    trials = history(*trials)
    step = next_step(S, trials)
    assert isinstance(step, Probe), step
    assert step.rate == pytest.approx(expected.rate, rel=1e-3)
    assert step.phase == expected.phase
    assert step.duration_s == pytest.approx(expected.duration_s, rel=1e-2)


def test_a_passing_confirmation_is_the_answer():
    trials = history(
        (100, "pass"),
        (200, "fail"),
        (195, "pass", "bisect"),
        (200, "fail", "recheck"),
        (195, "pass", "confirm"),
    )
    step = next_step(S, trials)
    assert step == Finished(
        "found",
        195.0,
        "195 requests/s meets p99<50ms at 95% confidence; 200 requests/s does not",
        failing_rate_rps=200.0,
    )


def test_a_generator_that_falls_behind_twice_asks_for_agents_instead_of_blaming_the_server():
    trials = history((50, "pass"), (100, "pass"), (200, "limited"), (200, "limited"))
    step = next_step(S, trials)
    assert isinstance(step, Finished) and step.status == "generator_limited"
    assert step.max_rate_rps == 100.0 and step.limited_at_rps == 200.0
    assert step.failing_rate_rps is None
    assert "add agents" in step.message
    assert EXIT_CODES[step.status] == 3


def test_a_generator_limit_below_the_lowest_failure_also_ends_the_search():
    trials = history((50, "pass"), (100, "fail"), (80, "limited"), (80, "limited"))
    step = next_step(S, trials)
    assert isinstance(step, Finished) and step.status == "generator_limited"
    assert (step.max_rate_rps, step.limited_at_rps, step.failing_rate_rps) == (50, 80, 100)


def test_the_highest_rate_allowed_ends_the_growth_after_a_confirmation():
    s = settings(max_rate=150.0)
    trials = history((50, "pass"), (100, "pass"))
    assert next_step(s, trials) == Probe(150.0, "grow", 4.0)
    trials = history((50, "pass"), (100, "pass"), (150, "pass"))
    assert next_step(s, trials) == Probe(150.0, "confirm", 12.0)
    trials = history((50, "pass"), (100, "pass"), (150, "pass"), (150, "pass", "confirm"))
    finished = next_step(s, trials)
    assert isinstance(finished, Finished) and finished.status == "max_rate"
    assert finished.max_rate_rps == 150.0


def test_a_server_that_fails_everything_is_reported_with_no_answer():
    s = settings(shrink_limit=2)
    trials = history((50, "fail"), (25, "fail", "shrink"), (12.5, "fail", "shrink"))
    finished = next_step(s, trials)
    assert isinstance(finished, Finished) and finished.status == "no_passing_rate"
    assert finished.max_rate_rps is None and EXIT_CODES["no_passing_rate"] == 1


def test_the_trial_budget_bounds_the_search():
    s = settings(max_trials=3)
    trials = history((50, "pass"), (100, "pass"), (200, "fail"))
    finished = next_step(s, trials)
    assert isinstance(finished, Finished) and finished.status == "trial_budget"
    assert finished.max_rate_rps == 100.0 and "not confirmed" in finished.message


# -- whole searches against a simulated server ------------------------------------------------


def simulated(server: SlotServer, *, seed: int, generator_limit: float | None = None):
    """A trial function: a window of the model's latencies at the rate, as many requests
    as a Poisson count over the trial; the generator is late above `generator_limit`."""
    rng = np.random.default_rng(seed)
    cache: dict[float, np.ndarray] = {}

    def measure(probe: Probe) -> Measurement:
        lat = cache.setdefault(probe.rate, server.latencies(probe.rate))
        n = min(int(rng.poisson(probe.rate * probe.duration_s)), lat.size)
        start = int(rng.integers(0, lat.size - n + 1))
        window = lat[start : start + n]
        late = generator_limit is not None and probe.rate > generator_limit
        return Measurement(
            rate=probe.rate,
            duration_s=probe.duration_s,
            requests=n,
            over_bound=int((window >= SLO.bound_s).sum()),
            percentile_s=float(np.quantile(window, SLO.quantile, method="higher")),
            sent=n,
            throughput_rps=n / probe.duration_s,
            send_lag_p99_s=0.2 if late else 0.001,
            latency_s={"p50": float(np.median(window)), "p99": float(np.quantile(window, 0.99))},
        )

    return measure


SERVER = SlotServer(4, 0.010, overhead_s=0.001, arrivals=60_000)
KNEE = SERVER.knee(SLO.quantile, SLO.bound_s, rel_tol=2e-3)


@pytest.mark.parametrize("seed", range(6))
def test_the_search_finds_the_knee_of_a_simulated_server_within_10_percent(seed):
    s = settings(trial_duration_s=3.0, confirm_duration_s=9.0)
    finished, trials = search(s, simulated(SERVER, seed=seed))
    assert finished.status == "found", (finished, [(t.rate, t.outcome) for t in trials])
    assert finished.max_rate_rps == pytest.approx(KNEE, rel=0.10)
    assert finished.failing_rate_rps / finished.max_rate_rps - 1 <= s.precision
    assert trials[-1].phase == "confirm" and trials[-1].outcome == "pass"
    assert len(trials) <= 16
    assert 330 < KNEE < 360  # the model's knee for p99 < 50 ms at 400 requests/s capacity


def test_a_generator_slower_than_the_server_ends_the_search_as_generator_limited():
    s = settings(trial_duration_s=3.0)
    finished, trials = search(s, simulated(SERVER, seed=1, generator_limit=150.0))
    assert finished.status == "generator_limited"
    assert finished.limited_at_rps == 200.0 and finished.max_rate_rps == 100.0
    assert [t.outcome for t in trials] == ["pass", "pass", "limited", "limited"]


def test_the_result_reports_the_answer_with_its_percentile_and_confidence():
    s = settings(trial_duration_s=3.0, confirm_duration_s=9.0)
    finished, trials = search(s, simulated(SERVER, seed=0))
    result = CapacityResult(settings=s, finished=finished, trials=trials, facts={"target": "x"})
    data = result.to_dict()
    assert data["max_rate_rps"] == finished.max_rate_rps and result.exit_code == 0
    answer = data["answer"]
    assert answer["phase"] == "confirm" and answer["confidence"] >= 0.95
    assert answer["percentile_s"] < 0.050 and answer["over_bound"] <= answer["max_over"]
    assert data["slo"]["rule"] == "p99<50ms" and data["settings"]["slo"] == "p99<50ms"
    assert len(data["trials"]) == len(trials) and data["target"] == "x"
    row = trial_row(trials[0])
    assert row["rate"] == 50.0 and row["outcome"] == "pass" and row["reasons"] == ""


def test_a_limited_trial_after_a_passing_retry_is_retried_again():
    # the bisection's retry passed; the confirmation at the same rate fell behind once
    trials = history(
        (100, "pass"),
        (200, "fail"),
        (195, "limited", "bisect"),
        (195, "pass", "bisect"),
        (195, "limited", "confirm"),
    )
    assert next_step(S, trials) == Probe(195.0, "confirm", 1000 / 195)  # as it was
