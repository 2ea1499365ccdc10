"""Prometheus exposition of the merged fleet state: a custom collector in its own registry.

The collector reads `FleetState` at scrape time (under the run's lock, since scrapes come
from the HTTP server's thread), so /metrics always shows the exact merged figures and no
per-request work is done for metrics. Tests read samples back from the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

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

from coordinator.merge import PERCENTILES, FleetState

# Classic bucket upper bounds for the duration histogram, seconds.
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)


@dataclass
class RunInfo:
    run_id: str
    plan: str
    target: str
    load_model: str
    agents: int
    phase: str = "starting"  # starting, running, finished


def cumulative_buckets(
    state_hist: HdrHistogram, bounds_s: tuple[float, ...]
) -> list[tuple[str, int]]:
    """(le, cumulative count) pairs for Prometheus from an HdrHistogram in microseconds.

    A recorded value counts under a bound when its HDR bucket's highest equivalent value
    is within it, so no request is ever shown faster than it was.
    """
    bounds_us = [b * 1e6 for b in bounds_s]
    counts = [0] * len(bounds_us)
    for item in state_hist.get_recorded_iterator():
        for i, bound in enumerate(bounds_us):
            if item.value_iterated_to <= bound:
                counts[i] += item.count_added_in_this_iter_step
                break
    out, running = [], 0
    for bound, count in zip(bounds_s, counts, strict=True):
        running += count
        out.append((repr(bound), running))
    out.append(("+Inf", state_hist.get_total_count()))
    return out


class FleetCollector(Collector):
    def __init__(self, state: FleetState, info: RunInfo, lock: threading.Lock) -> None:
        self._state = state
        self._info = info
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        state, info = self._state, self._info
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
            "raysiege_run_phase", "1 for the phase the run is in.", labels=["phase"]
        )
        for name in ("starting", "running", "finished"):
            phase.add_metric([name], 1.0 if info.phase == name else 0.0)
        yield phase

        requests = CounterMetricFamily(
            "raysiege_requests", "Requests completed, by gRPC status code.", labels=["code"]
        )
        for code, count in sorted(state.status_counts.items()):
            requests.add_metric([code], count)
        yield requests

        per_agent = CounterMetricFamily(
            "raysiege_agent_requests", "Requests completed, by agent index.", labels=["agent"]
        )
        for index, agent in sorted(state.agents.items()):
            per_agent.add_metric([str(index)], agent.requests)
        yield per_agent

        hist = state.latency
        total_s = (
            hist.get_mean_value() * hist.get_total_count() / 1e6 if hist.get_total_count() else 0.0
        )
        yield HistogramMetricFamily(
            "raysiege_request_duration_seconds",
            "Request latency, merged over the fleet (open loop: from the intended send time).",
            buckets=cumulative_buckets(hist, DURATION_BUCKETS_S),
            sum_value=total_s,
        )
        quantiles = GaugeMetricFamily(
            "raysiege_request_duration_quantile_seconds",
            "Exact latency percentiles of the merged HdrHistogram, whole run so far.",
            labels=["quantile"],
        )
        latency = state.latency_s()
        for name, p in PERCENTILES.items():
            quantiles.add_metric([str(p / 100)], latency[name])
        yield quantiles

        yield CounterMetricFamily("raysiege_sent", "Requests sent.", value=state.sent)
        yield CounterMetricFamily(
            "raysiege_dropped",
            "Arrivals not sent because the in-flight cap was reached.",
            value=state.dropped,
        )
        yield GaugeMetricFamily("raysiege_in_flight", "Requests in flight.", value=state.in_flight)
        yield CounterMetricFamily(
            "raysiege_predictions_checked",
            "Digits whose prediction was checked.",
            value=state.checked,
        )
        yield CounterMetricFamily(
            "raysiege_predictions_correct", "Checked digits predicted right.", value=state.correct
        )
        agents = GaugeMetricFamily("raysiege_agents", "Agents by state.", labels=["state"])
        counts = {"running": 0, "finished": 0, "lost": 0}
        for agent in state.agents.values():
            key = "lost" if agent.lost else "finished" if agent.finished else "running"
            counts[key] += 1
        counts["running"] += max(0, info.agents - len(state.agents))  # not reported yet
        for key, value in counts.items():
            agents.add_metric([key], value)
        yield agents


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
