"""The statistics of a capacity trial: is the sample large enough to claim a percentile?

MLPerf LoadGen's early stopping, for the Server scenario. A trial of n requests of which
`over` took longer than the latency bound L tells us about p, the true probability that
a request takes longer than L. The SLO "the q-quantile is under L" is p < 1 - q. If p
were exactly 1 - q, the count over the bound would be Binomial(n, 1 - q), and seeing
`over` or fewer would have probability BinomCDF(over; n, 1 - q). When that is at most
1 - c, the hypothesis "p >= 1 - q" is rejected at confidence c: the true q-quantile is
under the bound. So a trial may pass only if `over <= max_over(n, q, c)`.

With no request over the bound at all, n must still reach `min_sample(q, c)`
(q^n <= 1 - c: 299 requests for p99 at 95%), and a percentile measured on fewer requests
says nothing at that confidence.

Pure functions on the standard library and numpy (no scipy): the binomial pmf is built
in log space from the ratio of successive terms, so n in the millions is fine.
"""

from __future__ import annotations

import math

import numpy as np


def _check(q: float, confidence: float) -> None:
    if not 0 < q < 1:
        raise ValueError(f"the quantile must be between 0 and 1, got {q}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"the confidence must be in [0.5, 1), got {confidence}")


def binomial_log_pmf(n: int, p: float, upto: int) -> np.ndarray:
    """log P(X = i) for X ~ Binomial(n, p), i = 0..upto (upto <= n)."""
    if n < 0 or not 0 < p < 1:
        raise ValueError(f"need n >= 0 and 0 < p < 1, got n={n}, p={p}")
    upto = min(upto, n)
    i = np.arange(upto, dtype=np.float64)
    # pmf(i + 1) / pmf(i) = (n - i) / (i + 1) * p / (1 - p)
    steps = np.log((n - i) / (i + 1)) + math.log(p) - math.log1p(-p)
    head = n * math.log1p(-p)  # log pmf(0)
    return np.concatenate([[head], head + np.cumsum(steps)])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_pmf = binomial_log_pmf(n, p, k)
    top = float(log_pmf.max())
    return min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum()))


def max_over(n: int, q: float, confidence: float) -> int:
    """The most requests over the bound that still show the q-quantile under it at
    `confidence`: the largest t with BinomCDF(t; n, 1 - q) <= 1 - confidence, or -1 when
    even none over would not (n too small)."""
    _check(q, confidence)
    if n <= 0:
        return -1
    p = 1 - q
    # Beyond the mean plus ten standard deviations the CDF is far above 1 - c >= 0.
    upto = min(n, int(n * p + 10 * math.sqrt(n * p * q) + 10))
    log_pmf = binomial_log_pmf(n, p, upto)
    top = float(log_pmf.max())
    cdf = np.cumsum(np.exp(log_pmf - top)) * math.exp(top)
    return int(np.searchsorted(cdf, 1 - confidence, side="right")) - 1


def min_sample(q: float, confidence: float) -> int:
    """The fewest requests for which a trial with none over the bound passes."""
    _check(q, confidence)
    return math.ceil(math.log(1 - confidence) / math.log(q) - 1e-9)


def default_min_requests(q: float, confidence: float) -> int:
    """A trial size that leaves room for the tail: the smallest n at which a trial may
    have half the over-bound requests the percentile allows (n (1 - q) / 2) and still
    pass (1,100 for p99 at 95%, 10,800 for p99.9)."""
    _check(q, confidence)
    n = min_sample(q, confidence)
    while max_over(n, q, confidence) < n * (1 - q) / 2:
        n = math.ceil(n * 1.02) + 1
    # Round up to two significant figures: a figure people can carry around.
    scale = 10 ** max(0, len(str(n)) - 2)
    return math.ceil(n / scale) * scale


def confidence_of(over: int, n: int, q: float) -> float:
    """The confidence with which `over` of `n` requests over the bound show the true
    q-quantile under it: 1 - BinomCDF(over; n, 1 - q) (0 when n is 0)."""
    if not 0 < q < 1:
        raise ValueError(f"the quantile must be between 0 and 1, got {q}")
    if n <= 0:
        return 0.0
    return 1.0 - binomial_cdf(over, n, 1 - q)


def upper_rank(n: int, q: float, confidence: float) -> int | None:
    """The rank j (1..n) of the order statistic that bounds the true q-quantile from above
    at `confidence`: the smallest j with P(Binomial(n, q) <= j - 1) >= confidence. The
    latency at percentile 100 j / n is then an upper confidence bound for the q-quantile
    (None when n is too small for one)."""
    _check(q, confidence)
    if n <= 0:
        return None
    # P(Bin(n, q) <= j - 1) = P(Bin(n, 1 - q) >= n - j + 1) = 1 - CDF(n - j; n, 1 - q)
    t = max_over(n, q, confidence)
    if t < 0:
        return None
    return n - t
