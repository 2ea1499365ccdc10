"""coordinator/merge.py: the fleet's state is the exact sum of its agents' intervals."""

import random

from agents.histogram import Recorder
from coordinator.merge import FleetState
from model_server.api.report_pb2 import IntervalReport


def _report(
    agent: int, seq: int, latencies: list[float], codes: dict[str, int], **kw
) -> IntervalReport:
    rec = Recorder()
    for value in latencies:
        rec.record_s(value)
    return IntervalReport(
        agent_index=agent,
        seq=seq,
        status_counts=codes,
        latency_hdr=rec.take(),
        start_unix_s=1000.0 + seq,
        end_unix_s=1001.0 + seq,
        sent=sum(codes.values()),
        **kw,
    )


def test_counts_add_up_over_agents_and_codes():
    state = FleetState()
    state.add(_report(0, 0, [0.001] * 5, {"OK": 4, "UNAVAILABLE": 1}, checked=4, correct=3))
    state.add(_report(1, 0, [0.002] * 3, {"OK": 3}, dropped=2))
    state.add(_report(0, 1, [0.003] * 2, {"OK": 1, "DEADLINE_EXCEEDED": 1}, final=True))
    assert state.requests == 10
    assert state.ok == 8 and state.errors == 2
    assert dict(state.status_counts) == {"OK": 8, "UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 1}
    assert sum(a.requests for a in state.agents.values()) == state.requests
    assert state.agents[0].finished and not state.agents[1].finished
    assert (state.dropped, state.checked, state.correct) == (2, 4, 3)
    assert state.window_s == 2.0
    assert state.latency.get_total_count() == 10


def test_merged_percentiles_equal_those_of_all_requests_together():
    rng = random.Random(3)
    everything = Recorder()
    state = FleetState()
    for seq in range(5):
        for agent in range(4):
            values = [rng.expovariate(200) for _ in range(rng.randint(0, 300))]
            for v in values:
                everything.record_s(v)
            state.add(_report(agent, seq, values, {"OK": len(values)}))
    from agents.histogram import decode

    reference = decode(everything.take())
    for p in (50, 90, 99, 99.9):
        assert state.latency.get_value_at_percentile(p) == reference.get_value_at_percentile(p)
    assert state.latency_s()["max"] == reference.get_max_value() / 1e6


def test_empty_state_has_zero_figures():
    state = FleetState()
    assert state.requests == 0 and state.window_s == 0.0
    assert set(state.latency_s().values()) == {0.0}


def test_a_lost_agent_keeps_what_it_sent():
    state = FleetState()
    state.add(_report(0, 0, [0.001] * 3, {"OK": 3}))
    state.mark_lost(0, "actor died")
    assert state.agents[0].lost and state.agents[0].requests == 3
    assert state.requests == 3


def _lagging(agent: int, seq: int, lag_s: float, behind: bool, dropped: int = 0) -> IntervalReport:
    lag = Recorder()
    for _ in range(100):
        lag.record_s(lag_s)
    report = _report(agent, seq, [0.001] * 100, {"OK": 100}, dropped=dropped)
    report.send_lag_hdr = lag.take()
    report.behind = behind
    return report


def test_the_generator_kept_up_through_a_passing_hiccup_but_not_a_chronic_lag():
    from coordinator.summary import generator_verdict

    hiccup, chronic, dropping = FleetState(), FleetState(), FleetState()
    for seq in range(10):
        hiccup.add(_lagging(0, seq, 0.2 if seq == 3 else 0.001, behind=seq == 3))
        chronic.add(_lagging(0, seq, 0.2 if seq % 3 == 0 else 0.001, behind=seq % 3 == 0))
        dropping.add(_lagging(0, seq, 0.001, behind=seq == 5, dropped=1 if seq == 5 else 0))
    assert hiccup.send_lag_s()["p99"] > 0.05  # the p99 alone would call it invalid
    assert generator_verdict(hiccup, 0.05)["kept_up"] is True
    assert generator_verdict(chronic, 0.05)["kept_up"] is False
    assert generator_verdict(dropping, 0.05)["kept_up"] is False  # a dropped arrival always counts
