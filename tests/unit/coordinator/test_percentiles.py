"""coordinator/percentiles.py: the vectorised walk gives exactly hdrh's percentiles."""

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.histogram import HIGHEST_US, new_histogram
from coordinator.percentiles import values_at

PERCENTILES = [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, HIGHEST_US), st.integers(1, 1000)), min_size=1, max_size=40),
    st.lists(st.floats(0.0, 100.0), max_size=5),
)
def test_values_at_equals_get_value_at_percentile(values, extra):
    hist = new_histogram()
    for value, count in values:
        hist.record_value(value, count)
    wanted = PERCENTILES + extra
    assert values_at(hist, wanted) == [hist.get_value_at_percentile(p) for p in wanted]
    assert values_at(hist, [100.0]) == [hist.get_max_value()]


def test_an_empty_histogram_gives_zeros():
    assert values_at(new_histogram(), [50.0, 100.0]) == [0, 0]
