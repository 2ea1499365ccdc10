"""agents/histogram.py: recording, clamping, and exact merging of encoded deltas."""

import random

from agents.histogram import HIGHEST_US, Recorder, decode, merge_into, new_histogram


def test_out_of_range_values_are_clamped_and_counted_not_lost():
    rec = Recorder()
    rec.record_s(0.0)  # below 1 µs
    rec.record_s(-1.0)
    rec.record_s(10_000.0)  # above an hour
    rec.record_s(0.001)
    assert rec.count == 4
    assert rec.clamped == 3
    hist = decode(rec.take())
    assert hist.get_total_count() == 4
    assert hist.get_max_value() >= HIGHEST_US * 0.999


def test_take_returns_the_delta_and_resets():
    rec = Recorder()
    rec.record_s(0.002)
    first = decode(rec.take())
    rec.record_s(0.004)
    rec.record_s(0.004)
    second = decode(rec.take())
    assert first.get_total_count() == 1
    assert second.get_total_count() == 2
    assert decode(rec.take()).get_total_count() == 0


def test_merging_interval_deltas_equals_one_histogram_of_everything():
    rng = random.Random(7)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(20_000)]
    whole = Recorder()
    merged = new_histogram()
    agents = [Recorder() for _ in range(3)]
    for i, v in enumerate(values):
        whole.record_s(v)
        agents[i % 3].record_s(v)
        if i % 1000 == 999:  # an interval boundary
            for agent in agents:
                merge_into(merged, agent.take())
    for agent in agents:
        merge_into(merged, agent.take())
    reference = decode(whole.take())
    assert merged.get_total_count() == reference.get_total_count() == len(values)
    for p in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(p) == reference.get_value_at_percentile(p)
    assert merged.get_min_value() == reference.get_min_value()


def test_an_empty_interval_leaves_the_merged_minimum_alone():
    rec, merged = Recorder(), new_histogram()
    rec.record_s(0.005)
    merge_into(merged, rec.take())
    merge_into(merged, rec.take())  # nothing recorded in this interval
    empty = new_histogram()
    merge_into(merged, empty.encode())  # an empty histogram from another tool
    assert merged.get_total_count() == 1
    assert merged.values_are_equivalent(merged.get_min_value(), 5000)
