"""coordinator/exporter.py: read samples back from a fresh registry; no HTTP needed.

Besides reading values back, the exactness of the classic histograms is checked against
a brute-force count over the recorded values, and the whole exposition goes through
`promtool check metrics` (Debian's `prometheus` package; required when CI is set).
"""

import os
import random
import shutil
import subprocess
import threading
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from agents.histogram import HIGHEST_US, LOWEST_US, decode, new_histogram
from coordinator.exporter import (
    DURATION_BOUNDS_US,
    DURATION_ROUND_US,
    LAYOUT,
    SEND_LAG_BOUNDS_US,
    SEND_LAG_ROUND_US,
    RunInfo,
    check_exact_bounds,
    fleet_registry,
    hdr_bucket_tops_us,
    le_label,
    serve_metrics,
)
from coordinator.merge import FleetState
from model_server.api.report_pb2 import IntervalReport


def encoded(values_us) -> bytes:
    hist = new_histogram()
    for value in values_us:
        assert hist.record_value(value)
    return hist.encode() if hist.get_total_count() else b""


LATENCIES_US = [400] * 10 + [3_000] * 5 + [200_000] * 2


def _state() -> FleetState:
    state = FleetState()
    state.add(
        IntervalReport(
            agent_index=0,
            status_counts={"OK": 15, "UNAVAILABLE": 2},
            latency_hdr=encoded(LATENCIES_US),
            send_lag_hdr=encoded([15] * 16 + [30_000]),
            sent=17,
            dropped=1,
            checked=10,
            correct=9,
            cpu_s=0.25,
            in_flight=3,
            start_unix_s=1000.0,
            end_unix_s=1002.0,
        )
    )
    return state


def _registry(state, **info):
    run = RunInfo(
        **{
            "run_id": "r1",
            "plan": "demo",
            "target": "127.0.0.1:1",
            "load_model": "open",
            "agents": 2,
            **info,
        }
    )
    return fleet_registry(state, run, threading.Lock())


def test_requests_by_code_and_per_agent():
    reg = _registry(_state())
    assert reg.get_sample_value("raysiege_requests_total", {"code": "OK"}) == 15
    assert reg.get_sample_value("raysiege_requests_total", {"code": "UNAVAILABLE"}) == 2
    assert reg.get_sample_value("raysiege_agent_requests_total", {"agent": "0"}) == 17
    assert reg.get_sample_value("raysiege_agent_cpu_seconds_total", {"agent": "0"}) == 0.25
    assert reg.get_sample_value("raysiege_agent_requests_total", {"agent": "1"}) is None
    assert reg.get_sample_value("raysiege_sent_total") == 17
    assert reg.get_sample_value("raysiege_dropped_total") == 1
    assert reg.get_sample_value("raysiege_in_flight") == 3
    assert reg.get_sample_value("raysiege_predictions_checked_total") == 10
    assert reg.get_sample_value("raysiege_predictions_correct_total") == 9
    assert reg.get_sample_value("raysiege_prediction_accuracy_ratio") == 0.9
    # one agent reported, one has not yet: both count as running
    assert reg.get_sample_value("raysiege_agents", {"state": "running"}) == 2
    assert reg.get_sample_value("raysiege_agents", {"state": "lost"}) == 0
    assert (
        reg.get_sample_value(
            "raysiege_run_info",
            {"run_id": "r1", "plan": "demo", "target": "127.0.0.1:1", "load_model": "open"},
        )
        == 1
    )


def test_run_phase_is_one_hot():
    reg = _registry(_state(), phase="running")
    phases = {
        p: reg.get_sample_value("raysiege_run_phase", {"phase": p})
        for p in ("starting", "running", "finished")
    }
    assert phases == {"starting": 0, "running": 1, "finished": 0}


def test_lost_and_finished_agents():
    state = _state()
    state.add(IntervalReport(agent_index=1, status_counts={"OK": 1}, final=True))
    state.mark_lost(0, "node died")
    reg = _registry(state, agents=3)
    states = {
        s: reg.get_sample_value("raysiege_agents", {"state": s})
        for s in ("running", "finished", "lost")
    }
    assert states == {"running": 1, "finished": 1, "lost": 1}


def test_target_and_achieved_rates():
    reg = _registry(_state(), target_rate=200.0)
    assert reg.get_sample_value("raysiege_target_requests_per_second") == 200.0
    # 17 requests completed over the 2 s window
    assert reg.get_sample_value("raysiege_achieved_requests_per_second") == 8.5
    closed = _registry(_state(), load_model="closed")
    assert closed.get_sample_value("raysiege_target_requests_per_second") is None


def test_an_empty_state_exports_zeros_and_no_accuracy():
    reg = _registry(FleetState())
    assert reg.get_sample_value("raysiege_achieved_requests_per_second") == 0
    assert reg.get_sample_value("raysiege_request_duration_seconds_count") == 0
    assert reg.get_sample_value("raysiege_request_duration_seconds_bucket", {"le": "+Inf"}) == 0
    assert reg.get_sample_value("raysiege_prediction_accuracy_ratio") is None
    assert reg.get_sample_value("raysiege_agents", {"state": "running"}) == 2


def test_duration_histogram_buckets_are_cumulative_and_complete():
    reg = _registry(_state())

    def bucket(le):
        return reg.get_sample_value("raysiege_request_duration_seconds_bucket", {"le": le})

    assert bucket("0.0005") == 10
    assert bucket("0.002") == 10
    assert bucket("0.005003") == 15  # the HDR bucket holding 5 ms ends at 5.003 ms
    assert bucket("0.200063") == 17  # 200 ms lies in the HDR bucket 199.936..200.063 ms
    assert bucket("0.100031") == 15
    assert bucket("+Inf") == 17
    assert reg.get_sample_value("raysiege_request_duration_seconds_count") == 17
    total = reg.get_sample_value("raysiege_request_duration_seconds_sum")
    assert total == pytest.approx(sum(LATENCIES_US) / 1e6, rel=5e-4)
    counts = [bucket(le_label(b)) for b in DURATION_BOUNDS_US]
    assert counts == sorted(counts)


def test_send_lag_histogram():
    reg = _registry(_state())
    assert reg.get_sample_value("raysiege_send_lag_seconds_bucket", {"le": "1e-05"}) == 0
    assert reg.get_sample_value("raysiege_send_lag_seconds_bucket", {"le": "2e-05"}) == 16
    assert reg.get_sample_value("raysiege_send_lag_seconds_bucket", {"le": "0.020015"}) == 16
    assert reg.get_sample_value("raysiege_send_lag_seconds_bucket", {"le": "0.050015"}) == 17
    assert reg.get_sample_value("raysiege_send_lag_seconds_count") == 17


def _bucket_counts(reg, name: str, bounds_us) -> list[float]:
    """The `le` counts of one histogram, from one collection (each read collects anew)."""
    buckets = {
        s.labels["le"]: s.value
        for family in reg.collect()
        for s in family.samples
        if s.name == f"{name}_bucket"
    }
    return [buckets[le_label(b)] for b in bounds_us]


def _brute_force(values_us, bounds_us) -> list[int]:
    return [sum(1 for v in values_us if v <= bound) for bound in bounds_us]


def _state_of(latency_us, lag_us) -> FleetState:
    state = FleetState()
    state.add(
        IntervalReport(
            agent_index=0,
            status_counts={"OK": len(latency_us)},
            latency_hdr=encoded(latency_us),
            send_lag_hdr=encoded(lag_us),
        )
    )
    return state


def _around_every_bound(bounds_us) -> list[int]:
    """The values a bound could miscount: each bound, its neighbours, the round value it
    was made from, and the bottom of its HDR bucket."""
    hist = new_histogram()
    out = []
    for bound in bounds_us:
        low = hist.get_lowest_equivalent_value(bound)
        out += [bound - 1, bound, bound + 1, low - 1, low, low + 1]
    return [v for v in out if LOWEST_US <= v <= HIGHEST_US]


def test_histogram_buckets_equal_a_brute_force_count_over_recorded_values():
    """The export is exact: each `le` count equals the number of recorded integer-µs
    values <= the bound, because every bound is the highest value of its HDR bucket."""
    rng = random.Random(6)
    log_uniform = [round(10 ** rng.uniform(0, 9.5)) for _ in range(20_000)]
    latency = log_uniform + _around_every_bound(DURATION_BOUNDS_US)
    lag = log_uniform[:5000] + _around_every_bound(SEND_LAG_BOUNDS_US)
    reg = _registry(_state_of(latency, lag))
    assert _bucket_counts(reg, "raysiege_request_duration_seconds", DURATION_BOUNDS_US) == (
        _brute_force(latency, DURATION_BOUNDS_US)
    )
    assert _bucket_counts(reg, "raysiege_send_lag_seconds", SEND_LAG_BOUNDS_US) == (
        _brute_force(lag, SEND_LAG_BOUNDS_US)
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(LOWEST_US, HIGHEST_US), min_size=1, max_size=50))
def test_bucket_counts_are_exact_for_any_recorded_values(values):
    reg = _registry(_state_of(values, values))
    for name, bounds in (
        ("raysiege_request_duration_seconds", DURATION_BOUNDS_US),
        ("raysiege_send_lag_seconds", SEND_LAG_BOUNDS_US),
    ):
        assert _bucket_counts(reg, name, bounds) == _brute_force(values, bounds)


@settings(max_examples=25, deadline=None)  # hdrh's own percentile walk is slow in Python
@given(st.lists(st.integers(LOWEST_US, HIGHEST_US), min_size=1, max_size=50))
def test_vectorised_percentiles_and_sum_equal_hdrhistograms_own(values):
    hist = decode(encoded(values))
    for p in (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert LAYOUT.percentile_us(hist, p) == hist.get_value_at_percentile(p)
    assert LAYOUT.sum_s(hist) == pytest.approx(hist.get_mean_value() * len(values) / 1e6)
    assert LAYOUT.sum_s(hist) == pytest.approx(sum(values) / 1e6, rel=5e-4)


def test_a_bound_inside_an_hdr_bucket_is_refused():
    # 5,000 µs and 5,001 µs share the HDR bucket 5,000..5,003: a bound at 5,000 could
    # not tell them apart, so the export would not be exact.
    assert hdr_bucket_tops_us([5_000]) == (5_003,)
    with pytest.raises(ValueError, match="5000 µs splits the HDR bucket that ends at 5003"):
        check_exact_bounds((1_000, 5_000))
    with pytest.raises(ValueError, match="increase"):
        check_exact_bounds((2_000, 1_000))
    assert check_exact_bounds((1_000, 5_003)) == (1_000, 5_003)


def test_bounds_stay_close_to_the_round_values_they_stand_for():
    for rounds, bounds in (
        (DURATION_ROUND_US, DURATION_BOUNDS_US),
        (SEND_LAG_ROUND_US, SEND_LAG_BOUNDS_US),
    ):
        assert len(rounds) == len(bounds)
        for round_us, bound in zip(rounds, bounds, strict=True):
            assert round_us <= bound < round_us * (1 + 1 / 1024)
    assert [le_label(b) for b in DURATION_BOUNDS_US[:5]] == [
        "0.0001",
        "0.0002",
        "0.0005",
        "0.001",
        "0.002",
    ]
    assert DURATION_BOUNDS_US[-1] >= 60_000_000 and SEND_LAG_BOUNDS_US[0] == 10


def test_percentiles_come_from_the_merged_histogram():
    state = _state()
    reg = _registry(state)
    for label, p in (("50", 50.0), ("90", 90.0), ("99", 99.0), ("99.9", 99.9)):
        value = reg.get_sample_value(
            "raysiege_request_duration_percentile_seconds", {"percentile": label}
        )
        assert value == state.latency.get_value_at_percentile(p) / 1e6
    p50 = reg.get_sample_value("raysiege_request_duration_percentile_seconds", {"percentile": "50"})
    assert p50 == 0.0004


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package `prometheus`; .ci/run installs it)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def test_promtool_check_metrics_is_clean():
    state = _state()
    state.add(IntervalReport(agent_index=1, status_counts={"OK": 1}, final=True))
    body = generate_latest(_registry(state, target_rate=100.0))
    check = subprocess.run(
        [_promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    problems = (check.stdout + check.stderr).decode()
    assert check.returncode == 0 and not problems.strip(), problems
    # the check can fail: a gauge with a `quantile` label is a lint error
    bad = b'# HELP x_seconds x\n# TYPE x_seconds gauge\nx_seconds{quantile="0.5"} 1.0\n'
    check = subprocess.run(
        [_promtool(), "check", "metrics"], input=bad, capture_output=True, timeout=60
    )
    assert check.returncode != 0


def test_served_over_http_on_loopback():
    reg = _registry(_state())
    server, port = serve_metrics(reg, port=0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.shutdown()
        server.server_close()
    assert b'raysiege_requests_total{code="OK"} 15.0' in body
    assert body == generate_latest(reg)
