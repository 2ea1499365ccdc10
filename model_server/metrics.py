"""The model server's own Prometheus metrics, and the HTTP endpoint that serves them.

Every metric lives in a registry passed in (tests build a fresh one and read samples
back). With `--workers N` each worker process writes its values to files in a shared
directory (prometheus_client's multiprocess mode, chosen by the parent through the
PROMETHEUS_MULTIPROC_DIR environment variable before the worker starts), and the parent
serves one endpoint that adds them up: counters and histograms sum over workers, the two
gauges sum over the workers that are alive.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

# 50 µs .. 10 s: a loopback ModelInfer takes a few hundred µs, a queued one much longer.
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """1, 2, 4, ... up to and including max_batch_size."""
    buckets, size = [], 1
    while size < max_batch_size:
        buckets.append(float(size))
        size *= 2
    buckets.append(float(max_batch_size))
    return tuple(buckets)


class ServerMetrics:
    """model_server_* metrics; also the batcher's `BatchObserver`."""

    def __init__(self, registry: CollectorRegistry, *, max_batch_size: int) -> None:
        self.requests = Counter(
            "model_server_requests",
            "gRPC requests handled, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "model_server_request_duration_seconds",
            "Time from a request's arrival in the handler to its answer, by method",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "model_server_queue_depth",
            "Inference requests waiting for a batch",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "model_server_batch_size",
            "Rows per executed batch",
            buckets=batch_size_buckets(max_batch_size),
            registry=registry,
        )
        self.inference_duration = Histogram(
            "model_server_inference_duration_seconds",
            "Time of the model call for one batch",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "model_server_in_flight_requests",
            "gRPC requests being handled",
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Labelled children, looked up once: this runs on every call.
        self._counters: dict[tuple[str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}

    def record_request(self, method: str, code: str, seconds: float) -> None:
        self.count_request(method, code)
        duration = self._durations.get(method)
        if duration is None:
            duration = self._durations[method] = self.request_duration.labels(method)
        duration.observe(seconds)

    def count_request(self, method: str, code: str) -> None:
        """Count a call without timing it (one refused before any handler ran)."""
        counter = self._counters.get((method, code))
        if counter is None:
            counter = self._counters[method, code] = self.requests.labels(method, code)
        counter.inc()

    def set_queue_depth(self, requests: int) -> None:
        self.queue_depth.set(requests)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference_duration.observe(seconds)


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that reads what every worker wrote into `directory`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


@dataclass
class MetricsEndpoint:
    """`/metrics` over HTTP, served from a daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class MetricsPortError(RuntimeError):
    """The metrics port could not be bound."""


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve `registry` on http://host:port/metrics (port 0 picks a free one)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise MetricsPortError(f"cannot serve metrics on {host}:{port}: {error}") from error
    return MetricsEndpoint(server, thread)
