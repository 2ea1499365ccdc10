"""coordinator/timeline.py: the fleet's intervals in time bins, merged exactly."""

import pytest

from agents.histogram import decode, new_histogram
from coordinator.timeline import agent_latency, build_timeline, percentile_distribution
from tests.support.interval_reports import make_report


def fleet_reports():
    """Two agents 30 ms apart: a 2 s warm-up, three measured intervals, a short final one."""
    out = []
    for agent, offset in ((0, 0.0), (1, 0.03)):
        out += [make_report(agent, s, [0.5] * 4, warmup=True, offset_s=offset) for s in (0, 1)]
        out += [
            make_report(agent, s, [0.001 * s] * 10, offset_s=offset, target=10.0 + s)
            for s in (2, 3, 4)
        ]
        final = make_report(
            agent, 5, [0.009] * 2, {"OK": 1, "UNAVAILABLE": 1}, final=True, target=14.0
        )
        final.start_unix_s, final.end_unix_s = final.start_unix_s + offset, final.start_unix_s + 0.1
        out.append(final)
    return out


def test_bins_cover_the_measured_window_and_hold_every_measured_request():
    reports = fleet_reports()
    tl = build_timeline(reversed(reports), interval_s=1.0)  # order does not matter
    assert tl.warmup == pytest.approx((0.0, 2.03))
    assert tl.window == pytest.approx((2.0, 5.1))
    # 3.1 s of window in 1 s bins: three, the last stretched over the short finals
    edges = [edge for b in tl.bins for edge in (b.start_s, b.end_s)]
    assert edges == pytest.approx([2.0, 3.0, 3.0, 4.0, 4.0, 5.1])
    assert [b.requests for b in tl.bins] == [20, 20, 24]
    assert sum(b.requests for b in tl.bins) == sum(
        sum(r.status_counts.values()) for r in reports if not r.warmup
    )
    assert tl.bins[-1].errors == {"UNAVAILABLE": 2} and tl.error_codes() == ["UNAVAILABLE"]
    assert tl.bins[0].throughput_rps == 20.0
    # the fleet's target: each agent's latest in the bin, summed
    assert [b.target for b in tl.bins] == [24.0, 26.0, 28.0]


def test_a_bins_percentiles_are_those_of_its_requests_merged():
    reports = fleet_reports()
    tl = build_timeline(reports, interval_s=1.0)
    merged = new_histogram()
    for r in reports:
        if not r.warmup and r.seq in (4, 5):
            merged.add(decode(r.latency_hdr))
    last = tl.bins[-1]
    assert last.latency_us == {
        name: merged.get_value_at_percentile(p)
        for name, p in {"p50": 50, "p90": 90, "p99": 99, "max": 100}.items()
    }
    assert last.latency_us["max"] < 500_000  # the warm-up's 0.5 s is nowhere


def test_empty_bins_have_no_percentiles_and_warmup_only_has_no_bins():
    gap = [make_report(0, 0, [0.001]), make_report(0, 1, []), make_report(0, 2, [0.002])]
    tl = build_timeline(gap, interval_s=1.0)
    assert [bool(b.latency_us) for b in tl.bins] == [True, False, True]
    warm = build_timeline([make_report(0, 0, [0.1], warmup=True)], interval_s=1.0)
    assert warm.bins == [] and warm.window is None and warm.warmup == (0.0, 1.0)
    assert build_timeline([], interval_s=1.0).bins == []


def test_agent_latency_leaves_out_the_warmup():
    per_agent = agent_latency(fleet_reports())
    assert sorted(per_agent) == [0, 1]
    assert per_agent[0].get_total_count() == 32 and per_agent[0].get_max_value() < 500_000


def test_the_percentile_distribution_rises_through_the_summarys_percentiles():
    hist = new_histogram()
    for value in range(1, 801):
        hist.record_value(value * 97)
    steps = percentile_distribution(hist, extra=[50.0, 99.0, 99.9])
    levels = [p for p, _ in steps]
    values = [v for _, v in steps]
    assert levels == sorted(levels) and values == sorted(values) and levels[-1] < 100
    assert {50.0, 99.0, 99.9} <= set(levels)
    assert dict(steps)[99.9] == hist.get_value_at_percentile(99.9)
    assert percentile_distribution(new_histogram()) == []
