"""model_server/metrics.py: the names and types the dashboards rely on, promtool's lint,
and the sum over worker processes in multiprocess mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from model_server.metrics import ServerMetrics, batch_size_buckets, multiprocess_registry

# The names a colleague's Grafana dashboard and Prometheus rules are written against.
EXPECTED = {
    "model_server_requests": ("counter", {"method", "code"}),
    "model_server_request_duration_seconds": ("histogram", {"method"}),
    "model_server_queue_depth": ("gauge", set()),
    "model_server_batch_size": ("histogram", set()),
    "model_server_inference_duration_seconds": ("histogram", set()),
    "model_server_in_flight_requests": ("gauge", set()),
}


def promtool() -> str:
    """promtool's path; a test that needs it fails under CI when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def exercised(registry: CollectorRegistry) -> ServerMetrics:
    metrics = ServerMetrics(registry, max_batch_size=256)
    metrics.record_request("ModelInfer", "OK", 0.002)
    metrics.record_request("ModelInfer", "OK", 0.004)
    metrics.record_request("ModelInfer", "INVALID_ARGUMENT", 0.0001)
    metrics.record_request("ServerLive", "OK", 0.00005)
    metrics.set_queue_depth(3)
    metrics.observe_batch(5, 0.0007)
    metrics.in_flight.inc()
    return metrics


def test_names_types_and_labels() -> None:
    registry = CollectorRegistry()
    exercised(registry)
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    for name, (kind, labels) in EXPECTED.items():
        assert families[name].type == kind, name
        sample_labels = {key for s in families[name].samples for key in s.labels} - {"le"}
        assert sample_labels == labels, name
    # Nothing else, but prometheus_client's *_created timestamps of counters and histograms.
    assert {name.removesuffix("_created") for name in families} == set(EXPECTED)


def test_values_read_back() -> None:
    registry = CollectorRegistry()
    exercised(registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("model_server_requests_total", method="ModelInfer", code="OK") == 2
    assert value("model_server_requests_total", method="ModelInfer", code="INVALID_ARGUMENT") == 1
    assert value("model_server_request_duration_seconds_count", method="ModelInfer") == 3
    assert value("model_server_request_duration_seconds_sum", method="ModelInfer") == (
        pytest.approx(0.0061)
    )
    assert value("model_server_queue_depth") == 3
    assert value("model_server_batch_size_bucket", le="4.0") == 0
    assert value("model_server_batch_size_bucket", le="8.0") == 1
    assert value("model_server_inference_duration_seconds_count") == 1
    assert value("model_server_in_flight_requests") == 1


def test_promtool_check_metrics_passes() -> None:
    registry = CollectorRegistry()
    exercised(registry)
    result = check_metrics(generate_latest(registry))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_would_catch_a_badly_named_metric() -> None:
    # The check above can fail: promtool flags a counter without the _total suffix.
    result = check_metrics(b"# HELP bad_requests x\n# TYPE bad_requests counter\nbad_requests 1\n")
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("max_batch_size", "buckets"),
    [(1, (1.0,)), (4, (1.0, 2.0, 4.0)), (6, (1.0, 2.0, 4.0, 6.0)), (8, (1.0, 2.0, 4.0, 8.0))],
)
def test_batch_size_buckets_end_at_the_max(max_batch_size: int, buckets: tuple) -> None:
    assert batch_size_buckets(max_batch_size) == buckets


WORKER = """
import sys
from prometheus_client import CollectorRegistry
from model_server.metrics import ServerMetrics
metrics = ServerMetrics(CollectorRegistry(), max_batch_size=8)
for _ in range(int(sys.argv[1])):
    metrics.record_request("ModelInfer", "OK", 0.001)
metrics.observe_batch(int(sys.argv[1]), 0.001)
metrics.set_queue_depth(2)
metrics.in_flight.inc()
print(__import__("os").getpid())
"""


def test_workers_metrics_add_up_and_the_gauges_forget_dead_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = [
        int(
            subprocess.run(
                [sys.executable, "-c", WORKER, str(calls)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        for calls in (3, 4)
    ]
    registry = multiprocess_registry(str(tmp_path))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("model_server_requests_total", method="ModelInfer", code="OK") == 7
    assert value("model_server_batch_size_count") == 2
    assert value("model_server_batch_size_sum") == 7
    assert value("model_server_queue_depth") == 4
    assert value("model_server_in_flight_requests") == 2
    if shutil.which("promtool") or os.environ.get("CI"):
        result = check_metrics(generate_latest(registry))
        assert result.returncode == 0, result.stdout + result.stderr

    mark_process_dead(pids[0], str(tmp_path))

    assert value("model_server_requests_total", method="ModelInfer", code="OK") == 7
    assert value("model_server_queue_depth") == 2
    assert value("model_server_in_flight_requests") == 1
