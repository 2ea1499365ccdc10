"""Prometheus exposition of the merged fleet state: a custom collector in its own registry.

The collector reads `FleetState` at scrape time (under the run's lock, since scrapes come
from the HTTP server's thread), so /metrics always shows the exact merged figures and no
per-request work is done for metrics. Tests read samples back from the registry.

The classic histograms are exact: every bucket bound is the highest value of an
HdrHistogram bucket (see `hdr_bucket_tops_us`), so a bound never splits an HDR bucket and
each `le` count equals the number of recorded (integer-microsecond) values <= the bound.
Per-agent series are counters only (two per agent, bounded by the plan's agent count);
histograms are fleet-wide.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from wsgiref.simple_server import WSGIServer

import numpy as np
from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agents.histogram import new_histogram
from coordinator.merge import PERCENTILES, FleetState

PHASES = ("starting", "running", "finished")
AGENT_STATES = ("running", "finished", "lost")


def hdr_bucket_tops_us(values_us: Iterable[int]) -> tuple[int, ...]:
    """The highest value of the HDR bucket holding each value (values in microseconds).

    With 3 significant digits, values up to 2047 µs have buckets of 1 µs (so they are
    their own tops); above that a bucket spans 2^k µs, less than 1/1024 of the values in
    it: 5,000 µs lies in 5,000..5,003.
    """
    hist = new_histogram()
    return tuple(hist.get_highest_equivalent_value(v) for v in values_us)


def check_exact_bounds(bounds_us: tuple[int, ...]) -> tuple[int, ...]:
    """`bounds_us` unchanged when each is an HDR bucket top and they increase; ValueError else."""
    if not bounds_us:
        raise ValueError("a histogram needs at least one bucket bound")
    tops = hdr_bucket_tops_us(bounds_us)
    for bound, top in zip(bounds_us, tops, strict=True):
        if bound != top:
            raise ValueError(
                f"bucket bound {bound} µs splits the HDR bucket that ends at {top} µs; "
                "use hdr_bucket_tops_us() to pick bounds"
            )
    if any(b >= c for b, c in pairwise(bounds_us)):
        raise ValueError(f"bucket bounds must increase strictly, got {bounds_us}")
    return bounds_us


# Round 1-2-5 steps; the bounds are the tops of their HDR buckets (less than 0.1% higher).
DURATION_ROUND_US = (
    *(m * 10**e for e in range(2, 7) for m in (1, 2, 5)),  # 100 µs .. 5 s
    10_000_000,
    30_000_000,
    60_000_000,
)
SEND_LAG_ROUND_US = (*(m * 10**e for e in range(1, 7) for m in (1, 2, 5)), 10_000_000)
DURATION_BOUNDS_US = hdr_bucket_tops_us(DURATION_ROUND_US)
SEND_LAG_BOUNDS_US = hdr_bucket_tops_us(SEND_LAG_ROUND_US)


def le_label(bound_us: int) -> str:
    """The `le` label value of a bound in microseconds, as Prometheus writes floats."""
    return floatToGoString(bound_us / 1e6)


@dataclass
class RunInfo:
    run_id: str
    plan: str
    target: str
    load_model: str
    agents: int
    phase: str = "starting"  # starting, running, finished
    target_rate: float | None = None  # the fleet's planned requests/s (open loop only)


class HdrLayout:
    """The bucket layout of every histogram `new_histogram()` makes, as vectors.

    For each counts index: the lowest and highest value of its HDR bucket and the middle
    value HdrHistogram's own mean uses. With them, a scrape reads a histogram with a few
    vector operations over its counts instead of a Python loop over 23,552 indices.
    """

    def __init__(self) -> None:
        hist = new_histogram()
        lows = [hist.get_value_from_index(i) for i in range(hist.counts_len)]
        self.lows = np.array(lows, dtype=np.int64)
        self.tops = np.array([hist.get_highest_equivalent_value(v) for v in lows], dtype=np.int64)
        self.middles = self.lows + ((self.tops - self.lows + 1) >> 1)
        self._middles_f = self.middles.astype(np.float64)
        self.counts_len = hist.counts_len

    def counts(self, hist: HdrHistogram) -> np.ndarray:
        if hist.counts_len != self.counts_len:
            raise ValueError("the histogram was not made by agents.histogram.new_histogram()")
        return np.ctypeslib.as_array(hist.counts)

    def percentile_us(self, hist: HdrHistogram, percentile: float) -> int:
        """Exactly `hist.get_value_at_percentile(percentile)` (0 when empty)."""
        total = hist.get_total_count()
        if total == 0:
            return 0
        target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
        index = int(np.searchsorted(np.cumsum(self.counts(hist)), target, side="left"))
        return int(self.tops[index] if percentile else self.lows[index])

    def sum_s(self, hist: HdrHistogram) -> float:
        """The recorded values' sum in seconds, each counted at its HDR bucket's middle
        (HdrHistogram's mean times count; within 0.05% of the true sum)."""
        # Elementwise, never np.dot: a BLAS call in this (the scrape) thread can deadlock
        # with OpenBLAS's fork handlers when the main thread forks (ray.init does).
        return float(np.sum(self.counts(hist) * self._middles_f)) / 1e6


class ExactBuckets:
    """Classic Prometheus buckets over histograms of one `HdrLayout`: each HDR bucket is
    counted under the first bound at or above its highest value, which with bounds on
    bucket tops is exact, and never shows a request faster than it was."""

    def __init__(self, layout: HdrLayout, bounds_us: tuple[int, ...]) -> None:
        self.layout = layout
        self.bounds_us = check_exact_bounds(bounds_us)
        self.labels = [le_label(b) for b in bounds_us]
        self._slots = np.searchsorted(np.array(bounds_us, dtype=np.int64), layout.tops)

    def cumulative(self, hist: HdrHistogram) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, ending with +Inf."""
        per_slot = np.zeros(len(self.bounds_us) + 1, dtype=np.uint64)  # last: above all
        np.add.at(per_slot, self._slots, self.layout.counts(hist))  # integer sums: exact
        running = np.cumsum(per_slot[:-1])
        out = [(le, int(n)) for le, n in zip(self.labels, running, strict=True)]
        out.append(("+Inf", hist.get_total_count()))
        return out

    def family(self, name: str, documentation: str, hist: HdrHistogram) -> HistogramMetricFamily:
        """A classic histogram in seconds: buckets and count exact, `_sum` within 0.05%."""
        return HistogramMetricFamily(
            name, documentation, buckets=self.cumulative(hist), sum_value=self.layout.sum_s(hist)
        )


LAYOUT = HdrLayout()
DURATION_BUCKETS = ExactBuckets(LAYOUT, DURATION_BOUNDS_US)
SEND_LAG_BUCKETS = ExactBuckets(LAYOUT, SEND_LAG_BOUNDS_US)


class FleetCollector(Collector):
    def __init__(self, state: FleetState, info: RunInfo, lock: threading.Lock) -> None:
        self._state = state
        self._info = info
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            # Built whole under the lock, so one scrape never mixes two merges.
            metrics = [*self._run(), *self._requests(), *self._generator(), *self._agents()]
        yield from metrics

    def _run(self) -> Iterator[Metric]:
        info = self._info
        yield InfoMetricFamily(
            "raysiege_run",
            "The run being measured.",
            value={
                "run_id": info.run_id,
                "plan": info.plan,
                "target": info.target,
                "load_model": info.load_model,
            },
        )
        phase = GaugeMetricFamily(
            "raysiege_run_phase",
            "1 for the phase the run is in, 0 for the others.",
            labels=["phase"],
        )
        for name in PHASES:
            phase.add_metric([name], 1.0 if info.phase == name else 0.0)
        yield phase

    def _requests(self) -> Iterator[Metric]:
        state = self._state
        requests = CounterMetricFamily(
            "raysiege_requests", "Requests completed, by gRPC status code.", labels=["code"]
        )
        for code, count in sorted(state.status_counts.items()):
            requests.add_metric([code], count)
        yield requests
        yield DURATION_BUCKETS.family(
            "raysiege_request_duration_seconds",
            "Request latency merged over the fleet (open loop: from the intended send time); "
            "bucket bounds are HdrHistogram bucket tops, so counts are exact.",
            state.latency,
        )
        percentiles = GaugeMetricFamily(
            "raysiege_request_duration_percentile_seconds",
            "Exact latency percentiles of the merged HdrHistogram over the whole run so far.",
            labels=["percentile"],
        )
        for p in PERCENTILES.values():
            # vectorised: hdrh's own walk takes milliseconds per percentile at every scrape
            percentiles.add_metric([f"{p:g}"], LAYOUT.percentile_us(state.latency, p) / 1e6)
        yield percentiles
        yield CounterMetricFamily(
            "raysiege_predictions_checked",
            "Responses whose predicted digit was checked against its label.",
            value=state.checked,
        )
        yield CounterMetricFamily(
            "raysiege_predictions_correct",
            "Checked responses that predicted the right digit.",
            value=state.correct,
        )
        if state.checked:
            yield GaugeMetricFamily(
                "raysiege_prediction_accuracy_ratio",
                "Correct over checked predictions, whole run so far.",
                value=state.correct / state.checked,
            )

    def _generator(self) -> Iterator[Metric]:
        """How the load generator itself is doing: rates, lag, drops, in-flight."""
        state, info = self._state, self._info
        if info.target_rate is not None:
            yield GaugeMetricFamily(
                "raysiege_target_requests_per_second",
                "The fleet's planned arrival rate (open loop).",
                value=info.target_rate,
            )
        window = state.window_s
        yield GaugeMetricFamily(
            "raysiege_achieved_requests_per_second",
            "Requests completed per second over the measurement window so far.",
            value=state.requests / window if window else 0.0,
        )
        yield CounterMetricFamily("raysiege_sent", "Requests sent.", value=state.sent)
        yield CounterMetricFamily(
            "raysiege_dropped",
            "Arrivals not sent because an agent's in-flight cap was reached.",
            value=state.dropped,
        )
        yield GaugeMetricFamily(
            "raysiege_in_flight",
            "Requests in flight at the agents' last reports.",
            value=state.in_flight,
        )
        yield SEND_LAG_BUCKETS.family(
            "raysiege_send_lag_seconds",
            "How late requests were sent: actual minus intended send time.",
            state.send_lag,
        )

    def _agents(self) -> Iterator[Metric]:
        state, info = self._state, self._info
        agents = GaugeMetricFamily("raysiege_agents", "Agents by state.", labels=["state"])
        counts = dict.fromkeys(AGENT_STATES, 0)
        for agent in state.agents.values():
            if agent.lost and not agent.replaced_by:
                key = "lost"
            else:  # a replaced agent runs again under its index
                key = "finished" if agent.finished else "running"
            counts[key] += 1
        counts["running"] += max(0, info.agents - len(state.agents))  # not reported yet
        for key in AGENT_STATES:
            agents.add_metric([key], counts[key])
        yield agents
        yield CounterMetricFamily(
            "raysiege_agents_lost",
            "Agents lost during the run (replaced or not).",
            value=len(state.degraded),
        )
        yield GaugeMetricFamily(
            "raysiege_degraded",
            "1 while the fleet runs short of an agent it lost (until a replacement reports).",
            value=1.0 if state.is_degraded else 0.0,
        )
        per_agent = CounterMetricFamily(
            "raysiege_agent_requests", "Requests completed, by agent index.", labels=["agent"]
        )
        cpu = CounterMetricFamily(
            "raysiege_agent_cpu_seconds",
            "CPU time used by each agent's process while it ran the load.",
            labels=["agent"],
        )
        for index, agent in sorted(state.agents.items()):
            per_agent.add_metric([str(index)], agent.requests)
            cpu.add_metric([str(index)], agent.cpu_s)
        yield per_agent
        yield cpu


def fleet_registry(state: FleetState, info: RunInfo, lock: threading.Lock) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(state, info, lock))
    return registry


def serve_metrics(
    registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1"
) -> tuple[WSGIServer, int]:
    """Start /metrics on host:port (0: any free port). Returns (server, port)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port
