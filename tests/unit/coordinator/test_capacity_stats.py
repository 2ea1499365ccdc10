"""The early-stopping statistics against exact binomial sums, with tables and properties."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.capacity_stats import (
    binomial_cdf,
    confidence_of,
    default_min_requests,
    max_over,
    min_sample,
    upper_rank,
)


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, "1/2"), (3, 10, "3/10"), (5, 40, "1/100"), (12, 300, "1/20"), (0, 299, "1/100")],
)
def test_the_binomial_cdf_matches_the_exact_sum(k, n, p):
    exact = float(exact_cdf(k, n, Fraction(p)))
    assert binomial_cdf(k, n, float(Fraction(p))) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_the_cdf_ends_are_exact():
    assert binomial_cdf(-1, 10, 0.3) == 0.0
    assert binomial_cdf(10, 10, 0.3) == 1.0


@pytest.mark.parametrize(
    ("q", "confidence", "n"),
    [(0.99, 0.95, 299), (0.99, 0.99, 459), (0.999, 0.95, 2995), (0.9, 0.95, 29), (0.5, 0.95, 5)],
)
def test_the_smallest_sample_is_where_q_to_the_n_drops_under_one_minus_c(q, confidence, n):
    assert min_sample(q, confidence) == n
    assert q**n <= 1 - confidence < q ** (n - 1)
    assert max_over(n - 1, q, confidence) == -1  # too few even with none over the bound
    assert max_over(n, q, confidence) == 0


@pytest.mark.parametrize(
    ("n", "q", "confidence", "allowed"),
    [(1000, 0.99, 0.95, 4), (3000, 0.99, 0.95, 20), (100_000, 0.99, 0.95, 948)],
)
def test_max_over_from_the_exact_binomial(n, q, confidence, allowed):
    p = Fraction(1, 100)
    assert max_over(n, q, confidence) == allowed
    if n <= 3000:  # exact rational sums on either side of the answer
        assert exact_cdf(allowed, n, p) <= 1 - Fraction(95, 100) < exact_cdf(allowed + 1, n, p)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 20_000),
    q=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]),
    confidence=st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_max_over_is_where_the_confidence_is_reached(n, q, confidence):
    t = max_over(n, q, confidence)
    assert t >= -1
    if t >= 0:
        assert confidence_of(t, n, q) >= confidence - 1e-9
    assert confidence_of(t + 1, n, q) < confidence + 1e-9
    assert max_over(n + 1, q, confidence) >= t  # more requests never allow fewer over
    rank = upper_rank(n, q, confidence)
    assert rank == (None if t < 0 else n - t)


def test_the_default_trial_size_leaves_room_for_half_the_allowed_tail():
    n = default_min_requests(0.99, 0.95)
    assert n == 1200
    assert max_over(n, 0.99, 0.95) >= n * 0.01 / 2
    n = default_min_requests(0.999, 0.95)
    assert n == 12000 and max_over(n, 0.999, 0.95) >= n * 0.001 / 2
    assert max_over(n // 2, 0.999, 0.95) < n // 2 * 0.001 / 2  # and not much less would do


@pytest.mark.parametrize(("q", "confidence"), [(1.0, 0.95), (0.0, 0.95), (0.99, 0.4), (0.99, 1.0)])
def test_nonsense_quantiles_and_confidences_are_refused(q, confidence):
    with pytest.raises(ValueError):
        max_over(100, q, confidence)
