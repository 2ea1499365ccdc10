"""The M/D/k queue model the capacity search is checked against, against queueing theory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coordinator.capacity_model import SlotServer, md1_mean_wait_s


@pytest.mark.parametrize("rate", [30.0, 60.0, 80.0])
def test_one_slot_waits_as_pollaczek_khinchine_says(rate):
    server = SlotServer(1, 0.010, arrivals=200_000)
    mean_wait = float(np.mean(server.latencies(rate))) - 0.010
    assert mean_wait == pytest.approx(md1_mean_wait_s(rate, 0.010), rel=0.05)


def test_an_idle_server_answers_in_the_service_time_plus_overhead():
    server = SlotServer(4, 0.010, overhead_s=0.002, arrivals=20_000)
    assert server.percentile_s(1.0, 0.5) == pytest.approx(0.012)
    assert server.capacity_rps == pytest.approx(400.0)


def test_percentiles_never_fall_as_the_rate_rises():
    server = SlotServer(4, 0.010, arrivals=20_000)
    rates = np.linspace(50, 420, 25)
    p99 = [server.percentile_s(r, 0.99) for r in rates]
    assert all(b >= a for a, b in itertools.pairwise(p99))
    assert p99[-1] > 10 * p99[0]  # past capacity the queue runs away


def test_the_knee_meets_the_bound_and_a_little_more_misses_it():
    server = SlotServer(4, 0.010, arrivals=30_000)
    knee = server.knee(0.99, 0.050)
    assert 0.8 * server.capacity_rps < knee < server.capacity_rps
    assert server.percentile_s(knee, 0.99) < 0.050
    assert server.percentile_s(knee * 1.01, 0.99) >= 0.050
    assert SlotServer(4, 0.060, arrivals=1000).knee(0.99, 0.050) == 0.0  # one request misses


def test_more_slots_bring_the_knee_closer_to_capacity():
    few = SlotServer(2, 0.010, arrivals=30_000).knee(0.99, 0.050)
    many = SlotServer(8, 0.010, arrivals=30_000).knee(0.99, 0.050)
    assert few / 200 < many / 800 < 1


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        SlotServer(0, 0.01)
    with pytest.raises(ValueError):
        SlotServer(1, 0.01).latencies(0.0)
