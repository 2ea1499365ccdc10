"""Pacing: when to send the next request, as pure functions of (elapsed, sent).

A pacer never reads a clock. The load loop asks `pace(elapsed_s, sent)` and gets back how
long to wait before the next send and whether to stop, so every pacing rule is tested
with tables and property checks, without sleeping. Open-loop pacers also say when each
request was *intended* to leave (`intended_s(i)`): latency is measured from there, so a
stalled server or a stalled generator shows up in the percentiles instead of hiding
(coordinated omission).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """What the load loop does next: wait `wait_s` seconds (0: send now), or stop."""

    wait_s: float
    stop: bool


STOP = Pace(wait_s=0.0, stop=True)
GO = Pace(wait_s=0.0, stop=False)


@dataclass(frozen=True)
class Limits:
    """When a run ends: after `duration_s` seconds and/or `max_requests` sends (None: no limit)."""

    duration_s: float | None = None
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s is None and self.max_requests is None:
            raise ValueError("a run needs a duration, a request count, or both")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {self.max_requests}")

    def reached(self, elapsed_s: float, sent: int) -> bool:
        if self.max_requests is not None and sent >= self.max_requests:
            return True
        return self.duration_s is not None and elapsed_s >= self.duration_s


@dataclass(frozen=True)
class ConstantRate:
    """Open loop: request i is intended to leave at i / rate seconds after the start."""

    rate: float
    limits: Limits

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")

    def intended_s(self, i: int) -> float:
        return i / self.rate

    def pace(self, elapsed_s: float, sent: int) -> Pace:
        due = self.intended_s(sent)
        if self.limits.reached(due, sent):
            return STOP
        if due > elapsed_s:
            return Pace(wait_s=due - elapsed_s, stop=False)
        return GO


@dataclass(frozen=True)
class Closed:
    """Closed loop: `concurrency` requests in flight, each sent when one completes.

    Latency is measured from the actual send: a closed loop cannot see the requests a
    stalled server kept it from sending, and reports say so (load_model "closed").
    """

    concurrency: int
    limits: Limits

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    def pace(self, elapsed_s: float, sent: int) -> Pace:
        return STOP if self.limits.reached(elapsed_s, sent) else GO
