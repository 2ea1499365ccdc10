"""A queue model of a server of known capacity, to test the capacity search against.

`SlotServer(k, service_s)` is the M/D/k queue: Poisson arrivals, k slots, each serving
one request at a time for a fixed `service_s`, first come first served (the fake server's
`--slots K --service-ms S`); its capacity is k / service_s. Its latency percentiles at a
rate come from simulating a fixed, seeded stream of arrivals: arrival i comes at
E_1 + ... + E_i over the rate (E unit exponentials, the same for every rate) and starts
on the earliest free slot. Because the same stream is only compressed as the rate grows,
and a FIFO queue's waits only grow when arrivals come sooner, the simulated percentile
is non-decreasing in the rate, so `knee` can bisect for the rate at which it meets a
bound. Pure: no clock, no sockets; `overhead_s` adds a fixed network/client cost.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SlotServer:
    k: int
    service_s: float
    overhead_s: float = 0.0
    arrivals: int = 100_000  # simulated per rate; the first tenth is left out as warm-up
    seed: int = 7
    _gaps: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.k < 1 or not self.service_s > 0 or self.overhead_s < 0:
            raise ValueError(f"need k >= 1, service_s > 0, overhead_s >= 0: {self}")
        gaps = np.random.default_rng(self.seed).exponential(1.0, self.arrivals)
        object.__setattr__(self, "_gaps", gaps)

    @property
    def capacity_rps(self) -> float:
        return self.k / self.service_s

    def latencies(self, rate: float) -> np.ndarray:
        """Sojourn times (wait + service + overhead) of the simulated arrivals at `rate`,
        after the warm-up tenth. Above capacity the queue grows without end, and so do
        these."""
        if not rate > 0:
            raise ValueError(f"the rate must be positive, got {rate}")
        arrive = np.cumsum(self._gaps) / rate
        free = [0.0] * self.k
        done = np.empty_like(arrive)
        s = self.service_s
        for i, a in enumerate(arrive.tolist()):
            d = max(a, heapq.heappop(free)) + s
            heapq.heappush(free, d)
            done[i] = d
        skip = self.arrivals // 10
        return (done - arrive)[skip:] + self.overhead_s

    def percentile_s(self, rate: float, q: float) -> float:
        """The q-quantile (0 < q < 1) of the latency at `rate`."""
        return float(np.quantile(self.latencies(rate), q, method="higher"))

    def over_fraction(self, rate: float, bound_s: float) -> float:
        """The fraction of requests slower than `bound_s` at `rate`."""
        return float(np.mean(self.latencies(rate) > bound_s))

    def knee(self, q: float, bound_s: float, *, rel_tol: float = 1e-3) -> float:
        """The highest rate whose q-quantile latency stays under `bound_s` (bisection on
        the non-decreasing simulated percentile); 0 when even one request alone misses."""
        if self.service_s + self.overhead_s >= bound_s:
            return 0.0
        lo, hi = 0.0, self.capacity_rps
        while hi - lo > rel_tol * hi:
            mid = (lo + hi) / 2
            if mid > 0 and self.percentile_s(mid, q) < bound_s:
                lo = mid
            else:
                hi = mid
        return lo


def md1_mean_wait_s(rate: float, service_s: float) -> float:
    """M/D/1's mean wait (Pollaczek–Khinchine): rho s / (2 (1 - rho)); inf at capacity."""
    rho = rate * service_s
    return math.inf if rho >= 1 else rho * service_s / (2 * (1 - rho))
