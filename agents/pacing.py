"""Pacing: when to send the next request, as pure functions of (elapsed, sent).

A pacer never reads a clock. The load loop asks `pace(elapsed_s, sent)` and gets back how
long to wait before the next send and whether to stop, so every pacing rule is tested
with tables and property checks, without sleeping.

Open loop separates two choices. The *arrival process* places arrival i at a position in
"expected-count" space: uniform arrivals at 0, 1, 2, ...; Poisson arrivals at cumulative
sums of exponential gaps of mean 1. The *rate profile* maps expected count to time: a
constant rate r puts count n at n / r; ramping stages (k6's `{duration, target}` list,
the rate moving linearly within each stage) invert the piecewise-quadratic cumulative
count. Poisson arrivals through a ramp are thus a non-homogeneous Poisson process, and
agents with independent seeds each at rate r/k add up to a Poisson process at rate r.

Open-loop pacers also say when each request was *intended* to leave (`intended_s(i)`):
latency is measured from there, so a stalled server or a stalled generator shows up in
the percentiles instead of hiding (coordinated omission).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
class Stage:
    """Move the target (a rate in requests/s, or a concurrency) linearly to `target` over
    `duration_s` seconds, from where the previous stage ended."""

    duration_s: float
    target: float

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"a stage's duration must be > 0, got {self.duration_s}")
        if not (self.target >= 0 and math.isfinite(self.target)):
            raise ValueError(f"a stage's target must be >= 0, got {self.target}")


def stages_duration(stages: tuple[Stage, ...]) -> float:
    return sum(s.duration_s for s in stages)


def target_at(stages: tuple[Stage, ...], start: float, t: float) -> float:
    """The stages' target at time t (linear within a stage; the last target after the end)."""
    begin, level = 0.0, start
    for stage in stages:
        if t < begin + stage.duration_s:
            return level + (stage.target - level) * (t - begin) / stage.duration_s
        begin, level = begin + stage.duration_s, stage.target
    return level


# -- rate profiles: expected count <-> time ----------------------------------------------


class RateProfile(Protocol):
    def time_of(self, n: float) -> float:
        """When the expected count of arrivals reaches n (inf if it never does)."""
        ...


@dataclass(frozen=True)
class ConstantProfile:
    rate: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")

    def time_of(self, n: float) -> float:
        return n / self.rate


@dataclass(frozen=True)
class StagesProfile:
    """A rate that ramps linearly within each stage, from `start` (k6's startRate)."""

    stages: tuple[Stage, ...]
    start: float = 0.0
    # per stage: (begin time, rate at begin, expected count at begin)
    _knots: tuple[tuple[float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("ramping needs at least one stage")
        if not (self.start >= 0 and math.isfinite(self.start)):
            raise ValueError(f"the start rate must be >= 0, got {self.start}")
        knots, t, rate, count = [], 0.0, self.start, 0.0
        for stage in self.stages:
            knots.append((t, rate, count))
            count += (rate + stage.target) / 2 * stage.duration_s
            t, rate = t + stage.duration_s, stage.target
        if count <= 0:
            raise ValueError("the stages never ask for a request (every target is 0)")
        object.__setattr__(self, "_knots", tuple(knots))

    def time_of(self, n: float) -> float:
        for stage, (begin, rate, count) in zip(self.stages, self._knots, strict=True):
            in_stage = (rate + stage.target) / 2 * stage.duration_s
            if n < count + in_stage:
                slope = (stage.target - rate) / stage.duration_s
                left = n - count
                # Solve rate*tau + slope/2*tau^2 = left in its cancellation-free form.
                root = math.sqrt(max(0.0, rate * rate + 2 * slope * left))
                tau = 2 * left / (rate + root) if rate + root > 0 else 0.0
                return begin + min(tau, stage.duration_s)
        return math.inf


# -- arrival processes: arrival i -> expected-count position --------------------------------


class Arrivals(Protocol):
    def position(self, i: int) -> float: ...


@dataclass(frozen=True)
class UniformArrivals:
    """Evenly spaced: arrival i at expected count i (the first at time 0)."""

    def position(self, i: int) -> float:
        return float(i)


class PoissonArrivals:
    """Exponential gaps of mean 1 in expected-count space, from a seeded generator.

    Deterministic in (seed, i): the cumulative positions are generated in blocks as far
    as they are asked for and kept, so `position(i)` is a pure function of i.
    """

    BLOCK = 4096

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._positions = np.empty(0)

    def position(self, i: int) -> float:
        while i >= self._positions.size:
            last = self._positions[-1] if self._positions.size else 0.0
            gaps = self._rng.exponential(1.0, self.BLOCK)
            self._positions = np.concatenate([self._positions, last + np.cumsum(gaps)])
        return float(self._positions[i])


# -- pacers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenLoop:
    """Open loop: arrival i is intended at profile.time_of(arrivals.position(i))."""

    profile: RateProfile
    arrivals: Arrivals
    limits: Limits

    def intended_s(self, i: int) -> float:
        return self.profile.time_of(self.arrivals.position(i))

    def pace(self, elapsed_s: float, sent: int) -> Pace:
        due = self.intended_s(sent)
        if math.isinf(due) or self.limits.reached(due, sent):
            return STOP
        if due > elapsed_s:
            return Pace(wait_s=due - elapsed_s, stop=False)
        return GO


def constant_rate(rate: float, limits: Limits) -> OpenLoop:
    """Open loop at a constant rate: request i is intended at i / rate."""
    return OpenLoop(profile=ConstantProfile(rate), arrivals=UniformArrivals(), limits=limits)


@dataclass(frozen=True)
class Closed:
    """Closed loop: `concurrency` requests in flight, each sent when one completes.

    With `stages`, the concurrency ramps linearly (rounded down) from `concurrency`
    through each stage's target. Latency is measured from the actual send: a closed loop
    cannot see the requests a stalled server kept it from sending, and reports say so
    (load_model "closed").
    """

    concurrency: int
    limits: Limits
    stages: tuple[Stage, ...] = ()

    def __post_init__(self) -> None:
        if self.concurrency < (0 if self.stages else 1):
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    @property
    def max_concurrency(self) -> int:
        return int(max([self.concurrency, *(s.target for s in self.stages)]))

    def concurrency_at(self, elapsed_s: float) -> int:
        if not self.stages:
            return self.concurrency
        return int(target_at(self.stages, self.concurrency, elapsed_s))

    def pace(self, elapsed_s: float, sent: int) -> Pace:
        return STOP if self.limits.reached(elapsed_s, sent) else GO
